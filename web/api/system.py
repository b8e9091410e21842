"""API: workers, queues, health, backfills, the current user and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify, request
from hareflow.common.workers import list_workers
from hareflow.web import actions, queries
from hareflow.web.api import bool_arg, bp, int_arg, json_body
from hareflow.web.openapi import openapi_document
from hareflow.web.runtime import open_session, runtime
from hareflow.web.security import require_role
from sqlalchemy import text


@bp.get("/me")
@require_role("viewer")
def me() -> Any:
    return jsonify({"username": g.user.username, "role": g.user.role, "auth": g.auth})


@bp.get("/workers")
@require_role("viewer")
def workers() -> Any:
    with open_session() as s:
        listed = list_workers(s, include_gone=bool(bool_arg("all")))
    return jsonify({"workers": listed.workers, "hidden": listed.hidden})


def queue_report() -> dict[str, Any]:
    """Depth and consumers per queue from the executor, with the metastore's view beside them."""
    rt = runtime()
    from hareflow.common.broker.topology import Topology
    from hareflow.common.dead_letters import depth_by_queue

    with open_session() as s:
        names = queries.known_queues(s, rt.settings.default_queue)
        counts = queries.queue_task_counts(s)
        dead = depth_by_queue(s)
    executor = rt.executor()
    error = None
    stats = []
    if executor is not None:
        try:
            stats = executor.queue_stats(names)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the page still renders
            error = f"cannot read queue statistics from the broker: {exc}"
    elif rt.has_broker:
        error = f"cannot reach the broker: {rt.last_broker_error or 'not connected'}"
    by_name = {q.name: q for q in stats}
    # Dead letters name the queue as the broker does (<prefix>.q.<name>; the local executor: the
    # name itself). Those of other queues (results, a BrokerTrigger's) get rows of their own.
    topology = Topology(prefix=rt.settings.broker_prefix)
    amqp = {name: topology.task_queue(name) for name in names}
    others = sorted(set(dead) - set(names) - set(amqp.values()))
    items = []
    for name in names + [q.name for q in stats if q.name not in names] + others:
        q = by_name.get(name)
        items.append(
            {
                "name": name,
                "messages": None if q is None else q.messages,
                "consumers": None if q is None else q.consumers,
                "queued_tasks": counts.get(name, {}).get("queued", 0),
                "running_tasks": counts.get(name, {}).get("running", 0),
                "dead_letters": None
                if q is not None and name not in names
                else dead.get(name, 0) + dead.get(amqp.get(name, ""), 0),
                # The page of this queue's dead letters filters on this name.
                "dead_letters_queue": name if dead.get(name) else amqp.get(name, name),
            }
        )
    executor_name = executor.name if executor is not None else rt.settings.effective_executor
    return {"executor": executor_name, "queues": items, "error": error}


@bp.get("/queues")
@require_role("viewer")
def queues() -> Any:
    return jsonify(queue_report())


@bp.get("/health")
@require_role("viewer")
def health() -> Any:
    report = health_report()
    return jsonify(report), 200 if report["ok"] else 503


def public_health() -> Any:
    """``/health`` for load balancers and container healthchecks: no login, and no error texts
    (they can name hosts and users); the API's ``/api/v1/health`` has the details."""
    report = health_report()
    for part in report.values():
        if isinstance(part, dict):
            part.pop("error", None)
    return jsonify(report), 200 if report["ok"] else 503


def health_report() -> dict[str, Any]:
    """Database, broker and scheduler heartbeat age; ``ok`` when all three are."""
    rt = runtime()
    report: dict[str, Any] = {}
    try:
        with open_session() as s:
            s.execute(text("SELECT 1"))
            report["database"] = {"ok": True}
            report["scheduler"] = queries.scheduler_status(s)
    except Exception as exc:  # noqa: BLE001 - the point of a health check
        report["database"] = {"ok": False, "error": str(exc).splitlines()[0]}
        report["scheduler"] = {"ok": False, "last_heartbeat": None, "heartbeat_age": None}
    executor = rt.executor()
    if executor is not None:
        report["broker"] = {"ok": True, "executor": executor.name}
    elif rt.has_broker:
        report["broker"] = {"ok": False, "executor": "rabbitmq", "error": rt.last_broker_error}
    else:
        report["broker"] = {"ok": True, "executor": "local", "note": "no broker configured"}
    relay = rt.relay
    report["live_updates"] = bool(relay and relay.live)
    report["ok"] = all(report[k]["ok"] for k in ("database", "broker", "scheduler"))
    return report


@bp.get("/backfills")
@require_role("viewer")
def backfills() -> Any:
    limit = int_arg("limit", 50, lo=1, hi=500)
    with open_session() as s:
        items = queries.list_backfills(
            s, dag_id=request.args.get("dag_id"), state=request.args.get("state"), limit=limit
        )
    return jsonify({"backfills": items})


@bp.post("/backfills")
@require_role("op")
def create_backfill() -> Any:
    body = json_body()
    result = actions.backfill(
        body.get("dag_id"),
        start=body.get("start"),
        end=body.get("end"),
        max_active_runs=body.get("max_active_runs", 1),
        rerun_failed=body.get("rerun_failed", False),
        dry_run=body.get("dry_run", False),
        username=g.user.username,
    )
    return jsonify(result), 200 if result["dry_run"] else 201


@bp.post("/backfills/<int:backfill_id>/cancel")
@require_role("op")
def cancel_backfill(backfill_id: int) -> Any:
    return jsonify(actions.cancel(backfill_id, username=g.user.username))


@bp.get("/deadletters")
@require_role("viewer")
def dead_letters_list() -> Any:
    from hareflow.common import dead_letters

    state = request.args.get("state", dead_letters.DEFAULT_STATE)
    limit = int_arg("limit", 100, lo=1, hi=1000)
    offset = int_arg("offset", 0, lo=0, hi=10**9)
    try:
        with open_session() as s:
            rows = dead_letters.list_dead_letters(
                s,
                queue=request.args.get("queue") or None,
                state=None if state == "all" else state,
                limit=limit,
                offset=offset,
            )
            items = [dead_letters.dead_letter_dict(r) for r in rows]
    except dead_letters.DeadLetterError as exc:
        raise actions.ActionError(400, f"{exc.message} (or all)", "state") from None
    return jsonify({"deadletters": items})


@bp.get("/deadletters/<int:dead_letter_id>")
@require_role("viewer")
def dead_letter_show(dead_letter_id: int) -> Any:
    from hareflow.common import dead_letters

    with open_session() as s:
        try:
            row = dead_letters.get_dead_letter(s, dead_letter_id)
        except dead_letters.DeadLetterError as exc:
            raise actions.ActionError(exc.status, exc.message) from None
        return jsonify(dead_letters.dead_letter_dict(row, full=True))


@bp.post("/deadletters/<int:dead_letter_id>/requeue")
@require_role("op")
def dead_letter_requeue(dead_letter_id: int) -> Any:
    return jsonify(actions.dead_letter_action(dead_letter_id, "requeue", username=g.user.username))


@bp.post("/deadletters/<int:dead_letter_id>/discard")
@require_role("op")
def dead_letter_discard(dead_letter_id: int) -> Any:
    return jsonify(actions.dead_letter_action(dead_letter_id, "discard", username=g.user.username))


@bp.get("/openapi.json")
@require_role("viewer")
def openapi() -> Any:
    return jsonify(openapi_document())
