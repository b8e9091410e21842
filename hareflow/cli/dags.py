"""``hareflow dags``: list, show, pause, unpause, errors, next-runs and trigger (backfills: backfill.py)."""

from __future__ import annotations

import sys
from typing import Any

import click

from hareflow.cli.common import (
    CONTEXT_SETTINGS,
    INTERRUPTED,
    cli_user,
    complete_dag_id,
    get_settings,
    iso,
    metastore,
    notify_scheduler,
    output_option,
    parse_conf,
    parse_date,
    print_json,
    print_table,
    user_mistakes,
    when,
)

dag_id_argument = click.argument("dag_id", shell_complete=complete_dag_id)


@click.group(context_settings=CONTEXT_SETTINGS)
def dags() -> None:
    """List, inspect, pause, trigger and backfill DAGs.

    \b
    Example:
      hareflow dags trigger daily_sales --wait
    """


@dags.command("list")
@output_option
def dags_list(output: str) -> None:
    """List the active DAGs (those defined by a file in the DAG folder).

    \b
    Example:
      hareflow dags list -o json
    """
    settings = get_settings()
    from sqlalchemy import select

    from hareflow.common.db import Dag

    with metastore(settings) as sessions, sessions() as session:
        rows = list(session.scalars(select(Dag).where(Dag.is_active.is_(True)).order_by(Dag.dag_id)))
    data = [
        {
            "dag_id": d.dag_id,
            "schedule": d.schedule,
            "paused": d.is_paused,
            "owner": d.owner,
            "tags": d.tags,
            "next_run": iso(d.next_logical_date),
            "file": d.fileloc,
        }
        for d in rows
    ]
    if output == "json":
        print_json(data)
        return
    print_table(
        ["dag_id", "schedule", "state", "next run", "tags", "file"],
        [
            [
                d["dag_id"],
                d["schedule"] or "(manual)",
                "paused" if d["paused"] else "active",
                when(r.next_logical_date),
                ",".join(d["tags"] or []) or "-",
                d["file"],
            ]
            for d, r in zip(data, rows, strict=True)
        ],
        empty="no DAGs yet: is the scheduler running, and does the DAG folder hold DAG files? "
        "(see `hareflow dags errors`)",
    )


# -- show ---------------------------------------------------------------------------------------


def _load_serialized(settings: Any, dag_id: str) -> Any:
    from hareflow.common.operations import get_dag, serialized_dag

    with metastore(settings) as sessions, sessions() as session, user_mistakes():
        return serialized_dag(get_dag(session, dag_id))


def _task_notes(task: Any, default_queue: str) -> str:
    notes = []
    if task.task_type not in ("PythonTask",):
        notes.append(task.task_type)
    if task.queue != default_queue:
        notes.append(f"queue {task.queue}")
    if task.pool:
        notes.append(f"pool {task.pool}")
    if task.trigger_rule != "all_success":
        notes.append(f"trigger {task.trigger_rule}")
    if task.retries:
        notes.append(f"retries {task.retries}")
    return f"  ({', '.join(notes)})" if notes else ""


def render_tree(sdag: Any, default_queue: str = "default") -> list[str]:
    """The DAG as a tree from its roots; a task reached again is marked "(see above)"."""
    down = sdag.downstream_map()
    lines = [f"{sdag.dag_id}  (schedule {sdag.schedule or 'none: manual only'}, {len(sdag.tasks)} tasks)"]
    shown: set[str] = set()

    def walk(task_id: str, prefix: str, last: bool) -> None:
        branch = "└── " if last else "├── "
        task = sdag.task_dict[task_id]
        if task_id in shown and down[task_id]:
            lines.append(f"{prefix}{branch}{task_id}  (see above)")
            return
        shown.add(task_id)
        lines.append(f"{prefix}{branch}{task_id}{_task_notes(task, default_queue)}")
        children = down[task_id]
        for i, child in enumerate(children):
            walk(child, prefix + ("    " if last else "│   "), i == len(children) - 1)

    roots = [t.task_id for t in sdag.roots]
    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1)
    return lines


def render_dot(sdag: Any) -> list[str]:
    """The DAG in Graphviz DOT (pipe it to ``dot -Tsvg``)."""

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {q(sdag.dag_id)} {{", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    lines += [f"  {q(t.task_id)};" for t in sdag.tasks]
    lines += [f"  {q(up)} -> {q(t.task_id)};" for t in sdag.tasks for up in t.upstream]
    lines.append("}")
    return lines


@dags.command("show")
@dag_id_argument
@click.option("--dot", is_flag=True, help="Print Graphviz DOT instead of a tree.")
@output_option
def dags_show(dag_id: str, dot: bool, output: str) -> None:
    """Show DAG_ID's tasks and their dependencies, as a tree (default), in DOT or as JSON.

    \b
    Example:
      hareflow dags show example_fanout
      hareflow dags show example_fanout --dot | dot -Tsvg > fanout.svg
    """
    settings = get_settings()
    sdag = _load_serialized(settings, dag_id)
    if output == "json":
        down = sdag.downstream_map()
        print_json(
            {
                "dag_id": sdag.dag_id,
                "file": sdag.fileloc,
                "schedule": sdag.schedule,
                "timezone": sdag.timezone,
                "start_date": iso(sdag.start_date),
                "end_date": iso(sdag.end_date),
                "catchup": sdag.catchup,
                "max_active_runs": sdag.max_active_runs,
                "max_active_tasks": sdag.max_active_tasks,
                "params": sdag.params,
                "tags": list(sdag.tags),
                "owner": sdag.owner,
                "description": sdag.description,
                "tasks": [
                    {
                        "task_id": t.task_id,
                        "task_type": t.task_type,
                        "upstream": list(t.upstream),
                        "downstream": list(down[t.task_id]),
                        "trigger_rule": t.trigger_rule,
                        "queue": t.queue,
                        "pool": t.pool,
                        "retries": t.retries,
                        "priority": t.priority,
                    }
                    for t in sdag.tasks
                ],
            }
        )
        return
    for line in render_dot(sdag) if dot else render_tree(sdag, settings.default_queue):
        click.echo(line)


# -- pause --------------------------------------------------------------------------------------


def _set_paused(dag_id: str, paused: bool) -> None:
    settings = get_settings()
    from hareflow.common.operations import set_paused

    with metastore(settings) as sessions, user_mistakes():
        with sessions() as session, session.begin():
            changed = set_paused(session, dag_id, paused, username=cli_user(settings))
    word = "paused" if paused else "unpaused"
    if not changed:
        click.echo(f"DAG {dag_id} was already {word}")
        return
    notify_scheduler(settings, [{"kind": "dag", "dag_id": dag_id, "state": word}])
    click.echo(f"DAG {dag_id} {word}")


@dags.command("pause")
@dag_id_argument
def dags_pause(dag_id: str) -> None:
    """Pause DAG_ID: no new scheduled runs, no new tasks dispatched (running ones finish).

    \b
    Example:
      hareflow dags pause daily_sales
    """
    _set_paused(dag_id, True)


@dags.command("unpause")
@dag_id_argument
def dags_unpause(dag_id: str) -> None:
    """Unpause DAG_ID: the scheduler creates its due runs and dispatches its tasks again.

    \b
    Example:
      hareflow dags unpause daily_sales
    """
    _set_paused(dag_id, False)


# -- errors -------------------------------------------------------------------------------------


@dags.command("errors")
@click.option("--full", is_flag=True, help="Print each error's whole message and traceback.")
@output_option
def dags_errors(full: bool, output: str) -> None:
    """List DAG files that failed to load, with the file, the line and the error. Exits 1 when
    there is at least one (a CI gate), 0 when there is none.

    \b
    Example:
      hareflow dags errors --full
    """
    settings = get_settings()
    from sqlalchemy import select

    from hareflow.common.db import ImportError_

    with metastore(settings) as sessions, sessions() as session:
        rows = list(session.scalars(select(ImportError_).order_by(ImportError_.filename, ImportError_.line)))
    if output == "json":
        print_json(
            [{"file": r.filename, "line": r.line, "message": r.message, "at": iso(r.timestamp)} for r in rows]
        )
    elif not rows:
        click.echo("no import errors", err=True)
    elif full:
        for r in rows:
            where = f"{r.filename}:{r.line}" if r.line else r.filename
            click.echo(f"== {where}\n{r.message}\n")
    else:
        print_table(
            ["file", "line", "error"],
            [[r.filename, r.line, (r.message.splitlines() or [""])[0]] for r in rows],
        )
    sys.exit(1 if rows else 0)


# -- next-runs ----------------------------------------------------------------------------------


@dags.command("next-runs")
@dag_id_argument
@click.option("-n", "count", default=5, show_default=True, type=click.IntRange(1, 1000), help="How many.")
@output_option
def dags_next_runs(dag_id: str, count: int, output: str) -> None:
    """Show the next N scheduled runs of DAG_ID: logical date, data interval, when each is due.

    \b
    Example:
      hareflow dags next-runs daily_sales -n 3
    """
    settings = get_settings()
    from hareflow.common.operations import get_dag, next_runs

    with metastore(settings) as sessions, sessions() as session, user_mistakes():
        dag = get_dag(session, dag_id)
        schedule, paused = dag.schedule, dag.is_paused
        infos = next_runs(session, dag, count)
    data = [
        {
            "logical_date": iso(i.logical_date),
            "data_interval_start": iso(i.data_interval_start),
            "data_interval_end": iso(i.data_interval_end),
            "run_after": iso(i.run_after),
        }
        for i in infos
    ]
    if output == "json":
        print_json(data)
        return
    if schedule is None:
        click.echo(f"DAG {dag_id} has no schedule: it runs only when triggered", err=True)
        return
    if paused:
        click.echo(
            f"(DAG {dag_id} is paused: these runs wait until `hareflow dags unpause {dag_id}`)", err=True
        )
    print_table(
        ["logical date", "data interval start", "data interval end", "due at"],
        [
            [when(i.logical_date), when(i.data_interval_start), when(i.data_interval_end), when(i.run_after)]
            for i in infos
        ],
        empty=f"DAG {dag_id} has no more scheduled runs (its end_date has passed)",
    )


# -- trigger ------------------------------------------------------------------------------------


@dags.command("trigger")
@dag_id_argument
@click.option("--conf", default=None, help="Run configuration as a JSON object (overrides params).")
@click.option("--run-id", default=None, help="Run id (default manual__<logical date>).")
@click.option("--logical-date", default=None, help="Logical date, ISO 8601 (default now).")
@click.option("--wait", is_flag=True, help="Follow the run live; exit 0 on success, 1 on failure.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after this many seconds.")
def dags_trigger(
    dag_id: str,
    conf: str | None,
    run_id: str | None,
    logical_date: str | None,
    wait: bool,
    timeout: float | None,
) -> None:
    """Start a manual run of DAG_ID. With --wait, print task states as they change and exit 0 when
    the run succeeds, 1 when it fails.

    \b
    Example:
      hareflow dags trigger daily_sales --conf '{"region": "eu"}' --wait
    """
    settings = get_settings()
    conf_obj = parse_conf(conf)
    when_ = parse_date(logical_date, "--logical-date")
    from hareflow.common.audit import cli_origin
    from hareflow.common.runs import trigger_run

    with metastore(settings) as sessions:
        with user_mistakes(), sessions() as session, session.begin():
            run = trigger_run(
                session,
                dag_id,
                conf=conf_obj,
                run_id=run_id,
                logical_date=when_,
                triggered_by=cli_user(settings),
                origin=cli_origin(),
            )
            run_pk, created_id = run.id, run.run_id
        notify_scheduler(
            settings, [{"kind": "run", "dag_id": dag_id, "run_id": created_id, "state": "queued"}]
        )
        click.echo(f"created run {created_id} of {dag_id}")
        if wait:
            from hareflow.cli.follow import follow_run

            try:
                code = follow_run(settings, sessions, run_pk, dag_id, created_id, timeout)
            except KeyboardInterrupt:
                click.echo(
                    f"\nstopped following; the run goes on. "
                    f"See it with `hareflow runs show {created_id} --dag {dag_id}`",
                    err=True,
                )
                code = INTERRUPTED
            sys.exit(code)


@dags.command("test")
@dag_id_argument
@click.option("--conf", default=None, help="Run configuration as a JSON object (overrides params).")
@click.option("--logical-date", default=None, help="Logical date the tasks see, ISO 8601 (default now).")
def dags_test(dag_id: str, conf: str | None, logical_date: str | None) -> None:
    """Run the whole of DAG_ID here, in one process, without the broker, the scheduler or the metastore.

    Tasks run in dependency order, honouring trigger rules, each as a worker runs it (context,
    templates, callbacks); upstream return values flow to the tasks consuming them; retries run at
    once. Each task's log and result are printed; nothing is recorded. Exits 1 if the run fails.
    Connections and variables are read here: the environment, the secrets backends, then the
    configured metastore (with the DAG's allow-lists); secrets are masked in the output.

    \b
    Example:
      hareflow dags test example_templates --conf '{"region": "eu"}' --logical-date 2026-01-05
    """
    settings = get_settings()
    conf_obj = parse_conf(conf) or {}
    when_ = parse_date(logical_date, "--logical-date")
    from hareflow.cli.tasks import find_dag_in_folder, task_logging
    from hareflow.inprocess import run_dag

    dag = find_dag_in_folder(settings.effective_dags_folder(), dag_id)
    task_logging()
    click.echo(f"testing DAG {dag_id} (nothing is recorded)", err=True)
    result = run_dag(dag, conf=conf_obj, logical_date=when_, max_result_bytes=settings.max_result_bytes)
    sys.exit(1 if result.failed else 0)
