"""Pages: one run (its task instances, its Gantt), one task instance (tries, result, live log),
clear and mark."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, render_template, request, url_for
from hareflow.common.assets import RUN_TYPE as ASSET_RUN_TYPE
from hareflow.common.assets import triggering_events
from hareflow.common.dag_versions import get_version_by_id
from hareflow.common.records import run_dict, ti_dict
from hareflow.web import actions, charts, queries
from hareflow.web.pages import back, bp, flash_error, form_bool
from hareflow.web.runtime import open_session, request_session
from hareflow.web.security import require_role


def _map_index(raw: str | None) -> int | None:
    """A ``map_index`` argument: one instance of a mapped task (absent or blank: none given)."""
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        abort(400, f"map_index must be an integer, not {raw!r}")


def _label(ref: dict[str, Any]) -> str:
    index = ref.get("map_index", -1)
    return ref["task_id"] if index < 0 else f"{ref['task_id']}[{index}]"


def _load(s: Any, dag_id: str, run_id: str) -> tuple[Any, Any]:
    dag = queries.get_dag(s, dag_id)
    if dag is None:
        abort(404, f"no DAG named {dag_id!r}")
    run = queries.get_run(s, dag_id, run_id)
    if run is None:
        abort(404, f"DAG {dag_id!r} has no run {run_id!r}")
    return dag, run


@bp.get("/dags/<dag_id>/runs/<run_id>")
@require_role("viewer")
def run(dag_id: str, run_id: str) -> Any:
    with open_session() as s:
        dag, run = _load(s, dag_id, run_id)
        detail = queries.dag_detail(dag)
        tis = [ti_dict(ti) for ti in queries.run_task_instances(s, run, dag.serialized)]
        run_data = run_dict(run)
        triggering = triggering_events(s, [run.id]).get(run.id, {}) if run.run_type == ASSET_RUN_TYPE else {}
    missing = [t for t in queries.task_order(dag.serialized) if t not in {ti["task_id"] for ti in tis}]
    return render_template(
        "run.html", dag=detail, run=run_data, tis=tis, missing=missing, triggering=triggering, tab="runs"
    )


@bp.get("/dags/<dag_id>/runs/<run_id>/gantt")
@require_role("viewer")
def run_gantt(dag_id: str, run_id: str) -> Any:
    s = request_session()
    dag, run = _load(s, dag_id, run_id)
    return render_template(
        "run_gantt.html",
        dag=queries.dag_detail(dag),
        run=run_dict(run),
        gantt=charts.gantt(s, dag, run),
        tab="runs",
    )


@bp.get("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>")
@require_role("viewer")
def task_instance(dag_id: str, run_id: str, task_id: str) -> Any:
    with open_session() as s:
        dag, run = _load(s, dag_id, run_id)
        map_index = _map_index(request.args.get("map_index"))
        ti = queries.get_ti(s, run, task_id, map_index)
        if ti is None:
            where = "" if map_index is None else f" with map index {map_index}"
            abort(404, f"run {run_id!r} has no task {task_id!r}{where} (yet)")
        instances = queries.instance_states(s, run, task_id)
        tries = queries.tries_of(s, ti)
        try:
            selected = int(request.args.get("try", ti.try_number))
        except ValueError:
            selected = ti.try_number
        log = queries.log_chunks(s, ti, selected, 0, limit=100_000)
        result = queries.pretty_json(queries.result_of(s, ti, selected))
        rendered = queries.rendered_of(s, ti, selected)
        current = ti_dict(ti)
        # The side panel describes the try shown: an earlier one as it ended, when it was kept.
        ti_data, try_kept = queries.try_view(s, current, selected)
        detail = queries.dag_detail(dag)
        run_data = run_dict(run)
        # The task as the run saw it: from the DAG version the run recorded, else the current DAG.
        version = get_version_by_id(s, dag_id, run.dag_version_id)
        tasks = (version.serialized.get("tasks") if version is not None else None) or detail["tasks"]
    task = next((t for t in tasks if t["task_id"] == task_id), None)
    return render_template(
        "task_instance.html",
        dag=detail,
        run=run_data,
        ti=ti_data,
        current=current,
        try_kept=try_kept,
        task=task,
        tries=tries,
        selected_try=selected,
        log=log,
        log_text="".join(c["text"] for c in log["chunks"]),
        result=result,
        instances=instances,
        rendered=rendered,
        text_limit=queries.PAGE_TEXT_LIMIT,
        tab="runs",
    )


@bp.post("/dags/<dag_id>/runs/<run_id>/clear")
@require_role("op")
def clear_run(dag_id: str, run_id: str) -> Any:
    task_id = request.form.get("task_id") or None
    map_index = _map_index(request.form.get("map_index"))
    try:
        result = actions.clear(
            dag_id,
            run_id=run_id,
            task_ids=[task_id] if task_id else None,
            upstream=form_bool("upstream"),
            downstream=form_bool("downstream"),
            only_failed=form_bool("only_failed"),
            username=g.user.username,
            map_index=map_index,
        )
    except actions.ActionError as exc:
        flash_error(exc.message)
    else:
        cleared = ", ".join(_label(r) for r in result["cleared"]) or "nothing"
        message = f"cleared {cleared}"
        if result["skipped"]:
            message += f" (left {len(result['skipped'])} queued or running task(s) alone)"
        flash(message)
    return back(url_for("pages.run", dag_id=dag_id, run_id=run_id))


@bp.post("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/mark")
@require_role("op")
def mark(dag_id: str, run_id: str, task_id: str) -> Any:
    state = request.form.get("state", "")
    map_index = _map_index(request.form.get("map_index"))
    try:
        actions.mark(dag_id, run_id, task_id, state, username=g.user.username, map_index=map_index)
    except actions.ActionError as exc:
        flash_error(exc.message)
    else:
        flash(f"marked {task_id} {state}")
    return back(url_for("pages.task_instance", dag_id=dag_id, run_id=run_id, task_id=task_id))
