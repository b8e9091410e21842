"""API: DAGs, runs, task instances and logs."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Response, abort, g, jsonify, request
from hareflow.common import dag_versions
from hareflow.common.records import run_dict, run_dicts, ti_dict
from hareflow.web import actions, charts, queries
from hareflow.web.api import body_bool, bool_arg, bp, int_arg, json_body
from hareflow.web.runtime import open_session, request_session
from hareflow.web.security import require_role


def _dag_or_404(s: Any, dag_id: str) -> Any:
    dag = queries.get_dag(s, dag_id)
    if dag is None:
        abort(404, f"no DAG named {dag_id!r}")
    return dag


def _require_dag(s: Any, dag_id: str) -> None:
    """404 unless the DAG exists (for routes that need only that, not the DAG itself)."""
    if not queries.dag_exists(s, dag_id):
        abort(404, f"no DAG named {dag_id!r}")


def _run_or_404(s: Any, dag_id: str, run_id: str) -> Any:
    run = queries.get_run(s, dag_id, run_id)
    if run is None:
        abort(404, f"DAG {dag_id!r} has no run {run_id!r}")
    return run


def _map_index_arg() -> int | None:
    """``?map_index=N``: one instance of a mapped task (absent: the task's first instance)."""
    if request.args.get("map_index") in (None, ""):
        return None
    return int_arg("map_index", -1, lo=-1, hi=10**9)


def _ti_or_404(s: Any, run: Any, task_id: str) -> Any:
    map_index = _map_index_arg()
    ti = queries.get_ti(s, run, task_id, map_index)
    if ti is None:
        where = "" if map_index is None else f" with map index {map_index}"
        abort(404, f"run {run.run_id!r} has no task {task_id!r}{where}")
    return ti


# -- DAGs -------------------------------------------------------------------------------------------


@bp.get("/dags")
@require_role("viewer")
def list_dags() -> Any:
    limit = int_arg("limit", 100, lo=1, hi=1000)
    offset = int_arg("offset", 0, hi=10**9)
    dag_ids = request.args.getlist("dag_id") or None
    page = queries.list_dags(
        request_session(),
        search=request.args.get("q"),
        tag=request.args.get("tag"),
        paused=bool_arg("paused"),
        dag_ids=dag_ids,
        limit=limit,
        offset=offset,
    )
    return jsonify(
        {"dags": page.dags, "total": page.total, "limit": limit, "offset": offset, "tags": page.tags}
    )


@bp.get("/dags/<dag_id>")
@require_role("viewer")
def get_dag(dag_id: str) -> Any:
    with open_session() as s:
        return jsonify(queries.dag_detail(_dag_or_404(s, dag_id)))


@bp.patch("/dags/<dag_id>")
@require_role("op")
def patch_dag(dag_id: str) -> Any:
    body = json_body()
    if set(body) - {"is_paused"} or "is_paused" not in body:
        abort(400, 'only {"is_paused": true|false} can be changed')
    changed = actions.pause(dag_id, body_bool(body, "is_paused"), username=g.user.username)
    with open_session() as s:
        detail = queries.dag_detail(_dag_or_404(s, dag_id))
    detail["changed"] = changed
    return jsonify(detail)


@bp.get("/dags/<dag_id>/versions")
@require_role("viewer")
def list_versions(dag_id: str) -> Any:
    limit = int_arg("limit", 100, lo=1, hi=1000)
    with open_session() as s:
        dag = _dag_or_404(s, dag_id)
        items = [v.to_dict() for v in dag_versions.list_versions(s, dag, limit)]
    return jsonify({"versions": items})


@bp.get("/dags/<dag_id>/versions/<int:number>")
@require_role("viewer")
def get_version(dag_id: str, number: int) -> Any:
    """One version in full: its serialized form and its file's source as the DAG processor stored them."""
    with open_session() as s:
        dag = _dag_or_404(s, dag_id)
        version = dag_versions.get_version(s, dag_id, number)
        if version is None:
            abort(404, f"DAG {dag_id!r} has no version {number}")
        return jsonify(dag_versions.version_dict(version, dag.dag_version_id))


@bp.get("/dags/<dag_id>/grid")
@require_role("viewer")
def dag_grid(dag_id: str) -> Any:
    limit = int_arg("limit", 25, lo=1, hi=365)
    filters = {}
    for name, allowed in (("run_type", queries.RUN_TYPES), ("state", queries.RUN_STATES)):
        value = request.args.get(name) or None
        if value is not None and value not in allowed:
            abort(400, f"{name} must be one of {', '.join(allowed)}")
        filters[name] = value
    s = request_session()
    compact = bool_arg("compact") or False
    return jsonify(queries.grid(s, _dag_or_404(s, dag_id), limit, **filters, compact=compact))


@bp.get("/dags/<dag_id>/durations")
@require_role("viewer")
def dag_durations(dag_id: str) -> Any:
    limit = int_arg("limit", 25, lo=1, hi=max(charts.DURATION_RUNS))
    s = request_session()
    return jsonify(charts.durations(s, _dag_or_404(s, dag_id), limit))


@bp.post("/dags/<dag_id>/clear")
@require_role("op")
def clear_dag(dag_id: str) -> Any:
    return jsonify(_clear(dag_id, None, json_body()))


def _clear(
    dag_id: str,
    run_id: str | None,
    body: dict[str, Any],
    task_ids: list[str] | None = None,
    *,
    map_index: int | None = None,
) -> dict[str, Any]:
    if task_ids is None:
        task_ids = body.get("task_ids")
        if task_ids is not None and not isinstance(task_ids, list):
            abort(400, "task_ids must be a list of task ids")
    return actions.clear(
        dag_id,
        run_id=run_id,
        task_ids=task_ids,
        upstream=body_bool(body, "upstream"),
        downstream=body_bool(body, "downstream"),
        only_failed=body_bool(body, "only_failed"),
        dry_run=body_bool(body, "dry_run"),
        username=g.user.username,
        map_index=map_index,
    )


@bp.get("/import-errors")
@require_role("viewer")
def import_errors() -> Any:
    with open_session() as s:
        return jsonify({"import_errors": queries.import_errors(s)})


# -- runs -------------------------------------------------------------------------------------------


@bp.get("/dags/<dag_id>/runs")
@require_role("viewer")
def list_runs(dag_id: str) -> Any:
    limit = int_arg("limit", 50, lo=1, hi=1000)
    offset = int_arg("offset", 0, hi=10**9)
    page = queries.list_runs(
        request_session(),
        dag_id,
        state=request.args.get("state"),
        run_type=request.args.get("run_type"),
        limit=limit,
        offset=offset,
    )
    if page is None:
        abort(404, f"no DAG named {dag_id!r}")
    runs, total = page
    return jsonify({"runs": run_dicts(runs), "total": total, "limit": limit, "offset": offset})


@bp.post("/dags/<dag_id>/runs")
@require_role("op")
def trigger(dag_id: str) -> Any:
    body = json_body()
    unknown = set(body) - {"conf", "run_id", "logical_date"}
    if unknown:
        abort(400, f"unknown field {sorted(unknown)[0]!r} (expected conf, run_id, logical_date)")
    run = actions.trigger(
        dag_id,
        conf=body.get("conf"),
        run_id=body.get("run_id"),
        logical_date=body.get("logical_date"),
        username=g.user.username,
    )
    return jsonify(run), 201


@bp.post("/dags/<dag_id>/events")
@require_role("op")
def receive_event(dag_id: str) -> Any:
    """A webhook event: the JSON body is the run's conf; 201 with the new run, or 200 with the run
    the event's key already has (a retried or repeated delivery: the same run, never a second)."""
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 255:
        abort(400, "Idempotency-Key is over 255 characters")
    run, created = actions.receive_event(dag_id, json_body(), idempotency_key=key, username=g.user.username)
    return jsonify({**run, "duplicate": not created}), 201 if created else 200


@bp.get("/dags/<dag_id>/runs/<run_id>")
@require_role("viewer")
def get_run(dag_id: str, run_id: str) -> Any:
    with open_session() as s:
        dag = _dag_or_404(s, dag_id)
        run = _run_or_404(s, dag_id, run_id)
        out = run_dict(run)
        out["task_states"] = {
            ti.task_id: ti.state for ti in queries.run_task_instances(s, run, dag.serialized)
        }
    return jsonify(out)


@bp.get("/dags/<dag_id>/runs/<run_id>/gantt")
@require_role("viewer")
def run_gantt(dag_id: str, run_id: str) -> Any:
    s = request_session()
    dag = _dag_or_404(s, dag_id)
    return jsonify(charts.gantt(s, dag, _run_or_404(s, dag_id, run_id)))


@bp.post("/dags/<dag_id>/runs/<run_id>/clear")
@require_role("op")
def clear_run(dag_id: str, run_id: str) -> Any:
    return jsonify(_clear(dag_id, run_id, json_body()))


# -- task instances ---------------------------------------------------------------------------------


@bp.get("/dags/<dag_id>/runs/<run_id>/tasks")
@require_role("viewer")
def list_task_instances(dag_id: str, run_id: str) -> Any:
    with open_session() as s:
        dag = _dag_or_404(s, dag_id)
        run = _run_or_404(s, dag_id, run_id)
        tis = queries.run_task_instances(s, run, dag.serialized)
        task_id, map_index = request.args.get("task_id"), _map_index_arg()
        items = [
            ti_dict(ti)
            for ti in tis
            if (task_id is None or ti.task_id == task_id) and (map_index is None or ti.map_index == map_index)
        ]
    return jsonify({"task_instances": items, "run_state": run.state})


@bp.get("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>")
@require_role("viewer")
def get_task_instance(dag_id: str, run_id: str, task_id: str) -> Any:
    with open_session() as s:
        _require_dag(s, dag_id)
        ti = _ti_or_404(s, _run_or_404(s, dag_id, run_id), task_id)
        out = ti_dict(ti)
        out["tries"] = queries.tries_of(s, ti)
        value = queries.result_of(s, ti, ti.try_number)
        out["rendered"] = queries.rendered_of(s, ti, ti.try_number)
    out["result"] = None if value is None else json.loads(value)
    return jsonify(out)


@bp.patch("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>")
@require_role("op")
def patch_task_instance(dag_id: str, run_id: str, task_id: str) -> Any:
    body = json_body()
    if set(body) != {"state"}:
        abort(400, 'send {"state": "success"} or {"state": "failed"}')
    return jsonify(
        actions.mark(
            dag_id, run_id, task_id, str(body["state"]), username=g.user.username, map_index=_map_index_arg()
        )
    )


@bp.post("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/clear")
@require_role("op")
def clear_task_instance(dag_id: str, run_id: str, task_id: str) -> Any:
    return jsonify(_clear(dag_id, run_id, json_body(), [task_id], map_index=_map_index_arg()))


@bp.get("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/logs/<int:try_number>")
@require_role("viewer")
def task_log(dag_id: str, run_id: str, task_id: str, try_number: int) -> Any:
    offset = int_arg("offset", 0, hi=2**62)  # a chunk number: deliveries start 2**32 apart
    with open_session() as s:
        _require_dag(s, dag_id)
        ti = _ti_or_404(s, _run_or_404(s, dag_id, run_id), task_id)
        return jsonify(queries.log_chunks(s, ti, try_number, offset))


@bp.get("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/logs/<int:try_number>/download")
@require_role("viewer")
def task_log_download(dag_id: str, run_id: str, task_id: str, try_number: int) -> Any:
    """The whole log of one try as a text file (every delivery of it, in order)."""
    with open_session() as s:
        _require_dag(s, dag_id)
        ti = _ti_or_404(s, _run_or_404(s, dag_id, run_id), task_id)
        text = queries.log_text(s, ti, try_number)
    index = f".{ti.map_index}" if ti.map_index >= 0 else ""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dag_id}.{run_id}.{task_id}{index}.try{try_number}.log")
    return Response(
        text,
        mimetype="text/plain",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
