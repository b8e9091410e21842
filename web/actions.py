"""State-changing actions, shared by the pages (forms) and the API (JSON).

Each opens its own transaction, calls the operation in ``common`` (which writes the audit row),
commits, then wakes the schedulers and the other web servers with a state event. Mistakes raise
:class:`ActionError` carrying the HTTP status and, for a bad field, its name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from hareflow.common import metrics
from hareflow.common.audit import audit
from hareflow.common.backfill import (
    BackfillError,
    BackfillPlan,
    cancel_backfill,
    create_backfill,
    plan_backfill,
)
from hareflow.common.db import Backfill, Dag, DagRun
from hareflow.common.event_runs import EventError, insert_event_runs, make_event
from hareflow.common.operations import (
    OperationError,
    clear_task_instances,
    mark_task_instance,
    set_paused,
)
from hareflow.common.records import run_dict, ti_dict
from hareflow.common.runs import (
    RUN_ID_PATTERN,
    RUN_ID_RULE,
    ConfError,
    DagPausedError,
    LogicalDateTakenError,
    RunError,
    RunExistsError,
    parse_date,
    trigger_run,
)
from hareflow.common.runs import check_conf as runs_check_conf
from hareflow.web import queries
from hareflow.web.runtime import event, open_session, runtime
from sqlalchemy import select


class ActionError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def check_conf(params: dict[str, Any], conf: object) -> dict[str, Any]:
    """``common.runs.check_conf`` (the one check every door uses), its mistakes as a 400 naming
    the field."""
    try:
        return runs_check_conf(params, conf)
    except ConfError as exc:  # it turns every conf mistake (limits too) into one, naming the field
        raise ActionError(400, str(exc), exc.field) from None


def origin() -> str | None:
    """Where a web action came from: ``web <client address>`` inside a request."""
    from flask import has_request_context, request

    return f"web {request.remote_addr}" if has_request_context() else None


def _dag_or_404(s: Any, dag_id: str) -> Dag:
    dag = queries.get_dag(s, dag_id)
    if dag is None:
        raise ActionError(404, f"no DAG named {dag_id!r}")
    return dag


def trigger(
    dag_id: str,
    *,
    conf: object = None,
    run_id: str | None = None,
    logical_date: str | None = None,
    username: str,
) -> dict[str, Any]:
    if run_id is not None and (not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id)):
        raise ActionError(400, f"run_id {run_id!r}: {RUN_ID_RULE}", "run_id")
    try:
        when: datetime | None = parse_date(logical_date) if logical_date else None
    except (TypeError, ValueError):
        raise ActionError(
            400, f"logical_date {logical_date!r} is not an ISO 8601 date", "logical_date"
        ) from None
    with open_session() as s, s.begin():
        dag = _dag_or_404(s, dag_id)
        checked = check_conf((dag.serialized or {}).get("params") or {}, conf)
        try:
            run = trigger_run(
                s,
                dag_id,
                conf=checked,
                run_id=run_id,
                logical_date=when,
                triggered_by=username,
                origin=origin(),
            )
        except LogicalDateTakenError as exc:
            raise ActionError(409, str(exc), "logical_date") from None
        except RunExistsError as exc:
            raise ActionError(409, str(exc), "run_id") from None
        except DagPausedError as exc:
            raise ActionError(409, str(exc)) from None
        except RunError as exc:
            raise ActionError(400, str(exc)) from None
        result = run_dict(run)
    runtime().notify([event("run", dag_id, "queued", result["run_id"])])
    return result


def receive_event(
    dag_id: str, body: object, *, idempotency_key: str | None, username: str
) -> tuple[dict[str, Any], bool]:
    """A webhook event for a DAG with a WebhookTrigger: its run (created, or the one its key already
    has) and whether it was created now. Exactly one run per key: the key is the run id, unique."""
    with open_session() as s, s.begin():
        dag = _dag_or_404(s, dag_id)
        webhook = next(
            (t for t in (dag.serialized or {}).get("triggers") or () if t.get("kind") == "webhook"), None
        )
        if webhook is None:
            raise ActionError(
                404, f"DAG {dag_id!r} takes no webhook events (give it trigger=WebhookTrigger())"
            )
        if not dag.is_active:
            raise ActionError(404, f"no DAG named {dag_id!r}")
        if dag.is_paused:
            # Refused rather than stored: a sender retries a 409, and nothing runs while paused.
            raise ActionError(409, f"DAG {dag_id!r} is paused; unpause it to take events")
        try:
            ev = make_event(
                (dag.serialized or {}).get("params") or {},
                body,  # type: ignore[arg-type]
                webhook.get("dedupe_key") if not idempotency_key else None,
                idempotency_key,
            )
        except (ConfError, EventError) as exc:
            metrics.EVENTS.labels("webhook", "rejected").inc()
            raise ActionError(400, str(exc), exc.field) from None
        created = insert_event_runs(s, dag, [ev], datetime.now(UTC), triggered_by=f"event:webhook:{username}")
        run = s.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == ev.run_id))
        assert run is not None  # inserted now or found: the key's run exists in this transaction
        audit(
            s,
            "event",
            username=username,
            dag_id=dag_id,
            run_id=ev.run_id,
            details={"key": ev.key, "created": bool(created)},
        )
        result = run_dict(run)
    metrics.EVENTS.labels("webhook", "run_created" if created else "duplicate").inc()
    if created:
        runtime().notify([event("run", dag_id, "queued", result["run_id"])])
    return result, bool(created)


def pause(dag_id: str, paused: bool, *, username: str) -> bool:
    """Pause or unpause; False if it already was so."""
    with open_session() as s, s.begin():
        _dag_or_404(s, dag_id)
        changed = set_paused(s, dag_id, paused, username=username)
    if changed:
        runtime().notify([event("dag", dag_id, "paused" if paused else "unpaused")])
    return changed


def clear(
    dag_id: str,
    *,
    run_id: str | None = None,
    task_ids: list[str] | None = None,
    upstream: bool = False,
    downstream: bool = False,
    only_failed: bool = False,
    dry_run: bool = False,
    username: str,
    map_index: int | None = None,
) -> dict[str, Any]:
    regex = None
    if task_ids:
        if not all(isinstance(t, str) for t in task_ids):
            raise ActionError(400, "task_ids must be a list of task ids", "task_ids")
        regex = "^(" + "|".join(re.escape(t) for t in task_ids) + ")$"
    with open_session() as s, s.begin():
        dag = _dag_or_404(s, dag_id)
        known = {t["task_id"] for t in (dag.serialized or {}).get("tasks") or []}
        unknown = sorted(set(task_ids or ()) - known)
        if unknown:
            raise ActionError(404, f"DAG {dag_id!r} has no task {unknown[0]!r}", "task_ids")
        if run_id is not None and queries.get_run(s, dag_id, run_id) is None:
            raise ActionError(404, f"DAG {dag_id!r} has no run {run_id!r}")
        try:
            result = clear_task_instances(
                s,
                dag_id,
                run_id=run_id,
                task_regex=regex,
                upstream=upstream,
                downstream=downstream,
                only_failed=only_failed,
                map_index=map_index,
                dry_run=dry_run,
                username=username,
            )
        except OperationError as exc:
            raise ActionError(400, str(exc)) from None
    if result.runs_touched and not dry_run:
        requeued = set(result.runs_requeued)
        runtime().notify(
            [event("run", dag_id, "queued" if r in requeued else "running", r) for r in result.runs_touched]
        )
    return {
        "cleared": [r.to_dict() for r in result.cleared],
        "skipped": [r.to_dict() for r in result.skipped],
        "runs_requeued": result.runs_requeued,
        "dry_run": dry_run,
    }


def mark(
    dag_id: str, run_id: str, task_id: str, state: str, *, username: str, map_index: int | None = None
) -> dict[str, Any]:
    if state not in ("success", "failed"):
        raise ActionError(400, f"state must be 'success' or 'failed', not {state!r}", "state")
    with open_session() as s, s.begin():
        _dag_or_404(s, dag_id)
        run = queries.get_run(s, dag_id, run_id)
        if run is None:
            raise ActionError(404, f"DAG {dag_id!r} has no run {run_id!r}")
        if queries.get_ti(s, run, task_id, map_index) is None:
            raise ActionError(404, f"run {run_id!r} has no task {task_id!r}")
        try:
            ti = mark_task_instance(s, dag_id, run_id, task_id, state, username=username, map_index=map_index)
        except OperationError as exc:
            raise ActionError(400, str(exc)) from None
        result = ti_dict(ti)
        run_state = run.state
    runtime().notify(
        [
            event(
                "task",
                dag_id,
                state,
                run_id,
                task_id=task_id,
                ti_id=result["id"],
                try_number=result["try_number"],
            ),
            event("run", dag_id, run_state, run_id),
        ]
    )
    return result


def cancel(backfill_id: int, *, username: str) -> dict[str, Any]:
    with open_session() as s, s.begin():
        backfill = s.get(Backfill, backfill_id)
        if backfill is None:
            raise ActionError(404, f"no backfill with id {backfill_id}")
        try:
            dropped = cancel_backfill(s, backfill_id, username=username, origin=origin())
        except BackfillError as exc:
            raise ActionError(409, str(exc)) from None
        dag_id = backfill.dag_id
    runtime().notify([event("dag", dag_id, "backfill_cancelled")])
    return {"backfill_id": backfill_id, "state": "cancelled", "runs_dropped": dropped}


def _backfill_date(value: object, field: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise ActionError(400, f"{field}: give a logical date (ISO 8601, e.g. 2026-01-01)", field)
    try:
        parsed = parse_date(value.strip())
    except ValueError:
        raise ActionError(400, f"{field} {value!r} is not an ISO 8601 date", field) from None
    assert parsed is not None
    return parsed


def plan_dict(plan: BackfillPlan) -> dict[str, Any]:
    """What a backfill would do, interval by interval (the dry-run preview)."""
    return {
        "dag_id": plan.dag_id,
        "to_create": [
            {
                "logical_date": info.logical_date.isoformat(),
                "data_interval_start": info.data_interval_start.isoformat(),
                "data_interval_end": info.data_interval_end.isoformat(),
            }
            for info in plan.to_create
        ],
        "to_rerun": list(plan.to_rerun),
        "existing": list(plan.existing),
        "total": plan.total,
    }


def backfill(
    dag_id: object,
    *,
    start: object,
    end: object,
    max_active_runs: object = 1,
    rerun_failed: object = False,
    dry_run: object = False,
    username: str,
) -> dict[str, Any]:
    """``hareflow dags backfill`` from the web: the same plan and the same ``create_backfill``.
    With ``dry_run`` nothing changes and the answer is the plan alone."""
    if not isinstance(dag_id, str) or not dag_id:
        raise ActionError(400, "dag_id: name the DAG to backfill", "dag_id")
    start_at = _backfill_date(start, "start")
    end_at = _backfill_date(end, "end")
    if start_at > end_at:
        raise ActionError(400, f"end {end_at.isoformat()} is before start {start_at.isoformat()}", "end")
    if isinstance(max_active_runs, str) and max_active_runs.strip().isdigit():
        max_active_runs = int(max_active_runs)
    if isinstance(max_active_runs, bool) or not isinstance(max_active_runs, int) or max_active_runs < 1:
        raise ActionError(
            400, f"max_active_runs {max_active_runs!r}: give a whole number of at least 1", "max_active_runs"
        )
    for name, flag in (("rerun_failed", rerun_failed), ("dry_run", dry_run)):
        if not isinstance(flag, bool):
            raise ActionError(400, f"{name} {flag!r}: give true or false", name)
    with open_session() as s, s.begin():
        _dag_or_404(s, dag_id)
        try:
            if dry_run:
                return {
                    "dry_run": True,
                    "plan": plan_dict(
                        plan_backfill(s, dag_id, start_at, end_at, rerun_failed=bool(rerun_failed))
                    ),
                }
            created, plan = create_backfill(
                s,
                dag_id,
                start_at,
                end_at,
                max_active_runs=max_active_runs,
                rerun_failed=bool(rerun_failed),
                created_by=username,
                origin=origin(),
            )
        except BackfillError as exc:
            raise ActionError(400, str(exc)) from None
        s.flush()
        result = {"dry_run": False, "backfill": queries.backfill_dict(created), "plan": plan_dict(plan)}
    runtime().notify([event("dag", dag_id, "backfill")])
    return result


# -- dead letters -----------------------------------------------------------------------------------


def _broker_prefix() -> str | None:
    executor = runtime().executor()
    return None if executor is None or executor.name == "local" else runtime().settings.broker_prefix


def dead_letter_action(dead_letter_id: int, what: str, *, username: str) -> dict[str, Any]:
    """Requeue (``what`` = ``requeue``) or discard one dead letter; notify the other pages."""
    from hareflow.common import dead_letters
    from hareflow.common.broker import BrokerError

    executor = runtime().executor()
    if what == "requeue" and executor is None:
        if not runtime().has_broker:  # a web process of its own on the local executor
            raise ActionError(
                503,
                "the local executor keeps its queues inside the `hareflow standalone` process: requeue there",
            )
        raise ActionError(
            503, f"cannot reach the broker to requeue: {runtime().last_broker_error or 'not connected'}"
        )
    try:
        with open_session() as s, s.begin():
            if what == "requeue":
                assert executor is not None
                row = dead_letters.requeue(
                    s, executor, dead_letter_id, username=username, origin=origin(), prefix=_broker_prefix()
                )
            else:
                row = dead_letters.discard(s, dead_letter_id, username=username, origin=origin())
            result = dead_letters.dead_letter_dict(row)
            notice = dead_letters.dead_letter_event(row)
    except dead_letters.DeadLetterError as exc:
        raise ActionError(exc.status, exc.message) from None
    except BrokerError as exc:
        raise ActionError(503, f"dead letter {dead_letter_id} was not requeued: {exc}") from None
    runtime().notify([notice])
    return result
