"""Pages: the DAG list and one DAG (grid, graph, runs, durations, source, details), pause, trigger and
backfill."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for
from hareflow.common.dag_versions import list_versions
from hareflow.common.records import run_dicts
from hareflow.common.runs import RunError, load_conf
from hareflow.common.states import TaskState
from hareflow.web import actions, charts, queries, versions
from hareflow.web.pages import arg_int, back, bp, flash_error
from hareflow.web.runtime import open_session, request_session
from hareflow.web.security import require_role

DAG_PAGE_SIZE = 100
GRID_RUNS = 25


@bp.get("/")
def index() -> Any:
    return redirect(url_for("pages.dag_list"))


@bp.get("/dags")
@require_role("viewer")
def dag_list() -> Any:
    offset = arg_int("offset", 0)
    paused_arg = request.args.get("paused", "")
    paused = {"true": True, "false": False}.get(paused_arg)
    search, tag = request.args.get("q", ""), request.args.get("tag", "")
    s = request_session()
    page = queries.list_dags(
        s, search=search, tag=tag or None, paused=paused, limit=DAG_PAGE_SIZE, offset=offset
    )
    errors = queries.import_errors(s)
    return render_template(
        "dags.html",
        page=page,
        errors=errors,
        search=search,
        tag=tag,
        paused=paused_arg,
        offset=offset,
        limit=DAG_PAGE_SIZE,
        active_nav="pages.dag_list",
    )


def _load_dag(s: Any, dag_id: str) -> Any:
    dag = queries.get_dag(s, dag_id)
    if dag is None:
        abort(
            404, f"no DAG named {dag_id!r}: it may have left its file, or failed to load (see the DAG list)"
        )
    return dag


@bp.get("/dags/<dag_id>")
@require_role("viewer")
def dag(dag_id: str) -> Any:
    return redirect(url_for("pages.dag_grid", dag_id=dag_id))


@bp.get("/dags/<dag_id>/grid")
@require_role("viewer")
def dag_grid(dag_id: str) -> Any:
    """The grid, filtered by ``?runs=N&run_type=...&state=...`` (kept in the URL, so a link shows
    the same view; a value that is not a run type or a run state shows them all)."""
    limit = arg_int("runs", GRID_RUNS, lo=1, hi=365)
    run_type = request.args.get("run_type") if request.args.get("run_type") in queries.RUN_TYPES else None
    state = request.args.get("state") if request.args.get("state") in queries.RUN_STATES else None
    s = request_session()
    dag = _load_dag(s, dag_id)
    data = queries.grid(s, dag, limit, run_type=run_type, state=state, compact=True)
    detail = queries.dag_detail(dag)
    choices = sorted({*queries.GRID_RUN_CHOICES, limit})
    return render_template(
        "dag_grid.html",
        dag=detail,
        grid=data,
        runs_shown=limit,
        run_choices=choices,
        run_types=queries.RUN_TYPES,
        run_states=queries.RUN_STATES,
        legend_states=[state.value for state in TaskState],
        tab="grid",
    )


def _shown(s: Any, dag: Any) -> versions.Shown:
    """The version a graph or source page shows (``?version=``, else ``?run_id=``'s)."""
    try:
        return versions.shown_version(
            s, dag, run_id=request.args.get("run_id"), version=request.args.get("version")
        )
    except versions.NoSuchVersion as exc:
        abort(404, str(exc))


@bp.get("/dags/<dag_id>/graph")
@require_role("viewer")
def dag_graph(dag_id: str) -> Any:
    with open_session() as s:
        dag = _load_dag(s, dag_id)
        detail = queries.dag_detail(dag)
        data = queries.grid(s, dag, GRID_RUNS)
        shown = _shown(s, dag)
        graph = queries.graph(dag, shown.serialized(dag))
        graph["version"] = shown.number
        graph["latest_version"] = shown.latest_number
        run_versions = versions.run_versions(s, dag_id, [r["run_id"] for r in data["runs"]])
    selected = request.args.get("run_id") or (data["runs"][-1]["run_id"] if data["runs"] else None)
    return render_template(
        "dag_graph.html",
        dag=detail,
        graph=graph,
        grid=data,
        selected=selected,
        shown=shown.context(),
        run_versions=run_versions,
        tab="graph",
    )


#: Every run type, for the runs page's filter: a run started by a broker or webhook event is "event".
RUN_TYPES = queries.RUN_TYPES


@bp.get("/dags/<dag_id>/runs")
@require_role("viewer")
def dag_runs(dag_id: str) -> Any:
    offset = arg_int("offset", 0)
    state = request.args.get("state") or None
    run_type = request.args.get("run_type") or None
    with open_session() as s:
        dag = _load_dag(s, dag_id)
        detail = queries.dag_detail(dag)
        runs, total = queries.list_runs(
            s, dag_id, state=state, run_type=run_type, limit=50, offset=offset
        ) or ([], 0)
        items = run_dicts(runs)
    return render_template(
        "dag_runs.html",
        dag=detail,
        runs=items,
        total=total,
        offset=offset,
        limit=50,
        state_filter=state or "",  # not "state": that name is the state badge macro in the template
        run_type=run_type or "",
        run_types=RUN_TYPES,
        tab="runs",
    )


@bp.get("/dags/<dag_id>/durations")
@require_role("viewer")
def dag_durations(dag_id: str) -> Any:
    limit = arg_int("runs", charts.DURATION_RUNS[0], lo=1, hi=max(charts.DURATION_RUNS))
    s = request_session()
    dag = _load_dag(s, dag_id)
    data = charts.durations(s, dag, limit)
    return render_template(
        "dag_durations.html",
        dag=queries.dag_detail(dag),
        durations=data,
        runs_shown=limit,
        run_choices=charts.DURATION_RUNS,
        tab="durations",
    )


@bp.get("/dags/<dag_id>/source")
@require_role("viewer")
def dag_source(dag_id: str) -> Any:
    with open_session() as s:
        dag = _load_dag(s, dag_id)
        detail = queries.dag_detail(dag)
        shown = _shown(s, dag)
        if shown.version is not None:
            text, fileloc = shown.version.source, shown.version.fileloc
            problem = None if text is not None else f"the source of version {shown.number} was not stored"
        else:
            text, problem = queries.stored_source(s, detail["fileloc"])
            fileloc = detail["fileloc"]
    lines = text.splitlines() if text is not None else []
    return render_template(
        "dag_source.html",
        dag=detail,
        lines=lines,
        problem=problem,
        fileloc=fileloc,
        shown=shown.context(),
        run_id=request.args.get("run_id") or "",
        tab="source",
    )


@bp.get("/dags/<dag_id>/details")
@require_role("viewer")
def dag_details(dag_id: str) -> Any:
    with open_session() as s:
        dag = _load_dag(s, dag_id)
        detail = queries.dag_detail(dag)
        listed = [v.to_dict() for v in list_versions(s, dag, versions.PICKER_VERSIONS)]
    return render_template("dag_details.html", dag=detail, versions=listed, tab="details")


@bp.post("/dags/<dag_id>/pause")
@require_role("op")
def pause(dag_id: str) -> Any:
    paused = request.form.get("paused", "").lower() == "true"
    try:
        actions.pause(dag_id, paused, username=g.user.username)
    except actions.ActionError as exc:
        flash_error(exc.message)
    else:
        flash(f"{dag_id} {'paused' if paused else 'unpaused'}")
    return back(url_for("pages.dag_grid", dag_id=dag_id))


@bp.route("/dags/<dag_id>/trigger", methods=["GET", "POST"])
@require_role("op")
def trigger(dag_id: str) -> Any:
    with open_session() as s:
        detail = queries.dag_detail(_load_dag(s, dag_id))
    params = detail["params"]
    form = {
        "conf": json.dumps(params, indent=2, ensure_ascii=False) if params else "{}",
        "run_id": "",
        "logical_date": "",
    }
    error: dict[str, Any] | None = None
    if request.method == "POST":
        form = {key: request.form.get(key, "") for key in form}
        try:
            conf = load_conf(form["conf"])
        except RunError as exc:
            error = {"field": "conf", "message": str(exc), "status": 400}
        else:
            try:
                run = actions.trigger(
                    dag_id,
                    conf=conf,
                    run_id=form["run_id"].strip() or None,
                    logical_date=form["logical_date"].strip() or None,
                    username=g.user.username,
                )
            except actions.ActionError as exc:
                error = {"field": exc.field, "message": exc.message, "status": exc.status}
            else:
                flash(f"triggered run {run['run_id']}")
                return redirect(url_for("pages.dag_grid", dag_id=dag_id))
    status = error["status"] if error else 200
    return render_template("trigger.html", dag=detail, form=form, error=error, tab="trigger"), status


@bp.route("/dags/<dag_id>/backfill", methods=["GET", "POST"])
@require_role("op")
def backfill(dag_id: str) -> Any:
    """The CLI's backfill as a form: Preview shows the intervals (a dry run), Create starts it."""
    with open_session() as s:
        detail = queries.dag_detail(_load_dag(s, dag_id))
    form = {"start": "", "end": "", "max_active_runs": "1", "rerun_failed": False}
    error: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    if request.method == "POST":
        form = {
            "start": request.form.get("start", "").strip(),
            "end": request.form.get("end", "").strip(),
            "max_active_runs": request.form.get("max_active_runs", "1").strip(),
            "rerun_failed": request.form.get("rerun_failed") == "on",
        }
        preview = request.form.get("action") == "preview"
        try:
            result = actions.backfill(
                dag_id,
                start=form["start"],
                end=form["end"],
                max_active_runs=form["max_active_runs"],
                rerun_failed=form["rerun_failed"],
                dry_run=preview,
                username=g.user.username,
            )
        except actions.ActionError as exc:
            error = {"field": exc.field, "message": exc.message, "status": exc.status}
        else:
            if preview:
                plan = result["plan"]
            else:
                created, total = result["backfill"], result["plan"]["total"]
                flash(
                    f"backfill {created['id']} of {dag_id} created: {total} run(s) to go"
                    if total
                    else f"backfill {created['id']}: nothing to run, every interval in the range has a run"
                )
                return redirect(url_for("pages.backfills", dag_id=dag_id))
    status = error["status"] if error else 200
    return (
        render_template("backfill_form.html", dag=detail, form=form, error=error, plan=plan, tab="backfill"),
        status,
    )
