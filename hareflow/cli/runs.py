"""``hareflow runs``: list runs and show one with its task instances."""

from __future__ import annotations

import click

from hareflow.cli.common import (
    CONTEXT_SETTINGS,
    complete_dag_id,
    duration,
    get_settings,
    metastore,
    output_option,
    print_json,
    print_table,
    user_mistakes,
    when,
)
from hareflow.common.records import run_dict, ti_dict

RUN_STATES = ["queued", "running", "success", "failed"]


@click.group(context_settings=CONTEXT_SETTINGS)
def runs() -> None:
    """List DAG runs and show one in detail.

    \b
    Example:
      hareflow runs list daily_sales --state failed
    """


@runs.command("list")
@click.argument("dag_id", required=False, shell_complete=complete_dag_id)
@click.option("--state", type=click.Choice(RUN_STATES), default=None, help="Only runs in this state.")
@click.option("--limit", default=25, show_default=True, type=click.IntRange(1), help="Newest N runs.")
@output_option
def runs_list(dag_id: str | None, state: str | None, limit: int, output: str) -> None:
    """List the newest runs, of every DAG or of DAG_ID.

    \b
    Example:
      hareflow runs list example_etl --state failed --limit 10 -o json
    """
    settings = get_settings()
    from sqlalchemy import select
    from sqlalchemy.orm import undefer

    from hareflow.common.db import Dag, DagRun
    from hareflow.common.operations import OperationError

    with metastore(settings) as sessions, sessions() as session, user_mistakes():
        if dag_id is not None and session.get(Dag, dag_id) is None:
            raise OperationError(f"no DAG named {dag_id!r} (see `hareflow dags list`)")
        query = (
            select(DagRun)
            .options(undefer(DagRun.dag_version_number))
            .order_by(DagRun.queued_at.desc(), DagRun.id.desc())
            .limit(limit)
        )
        if dag_id is not None:
            query = query.where(DagRun.dag_id == dag_id)
        if state is not None:
            query = query.where(DagRun.state == state)
        rows = list(session.scalars(query))
    if output == "json":
        print_json([run_dict(r) for r in rows])
        return
    print_table(
        ["dag_id", "run_id", "type", "state", "logical date", "started", "duration"],
        [
            [
                r.dag_id,
                r.run_id,
                r.run_type,
                r.state,
                when(r.logical_date),
                when(r.start_date),
                duration(
                    (r.end_date - r.start_date).total_seconds() if r.start_date and r.end_date else None
                ),
            ]
            for r in rows
        ],
        empty="no runs",
    )


@runs.command("show")
@click.argument("run_id")
@click.option(
    "--dag",
    "dag_id",
    default=None,
    shell_complete=complete_dag_id,
    help="The run's DAG (run ids are unique per DAG only).",
)
@output_option
def runs_show(run_id: str, dag_id: str | None, output: str) -> None:
    """Show one run and the state of each of its task instances.

    \b
    Example:
      hareflow runs show scheduled__2026-01-01T00:00:00+00:00 --dag daily_sales
    """
    settings = get_settings()
    from sqlalchemy import select

    from hareflow.common.db import TaskInstance
    from hareflow.common.operations import find_run

    with metastore(settings) as sessions, sessions() as session, user_mistakes():
        run = find_run(session, run_id, dag_id)
        tis = list(
            session.scalars(
                select(TaskInstance).where(TaskInstance.run_pk == run.id).order_by(TaskInstance.id)
            )
        )
        data = run_dict(run)  # in the session: it reads the run's version number
    if output == "json":
        print_json({**data, "task_instances": [ti_dict(t) for t in tis]})
        return
    dates = (
        "logical_date",
        "data_interval_start",
        "data_interval_end",
        "queued_at",
        "start_date",
        "end_date",
    )
    for key in ("dag_id", "run_id", "run_type", "state", *dates, "triggered_by", "backfill_id"):
        value = when(getattr(run, key)) if key in dates else data[key]
        click.echo(f"{key + ':':<22}{'-' if value is None else value}")
    click.echo(f"{'duration:':<22}{duration(data['duration'])}")
    click.echo(f"{'dag_version:':<22}{data['dag_version'] or 'unknown'}")
    if run.conf:
        import json

        click.echo(f"{'conf:':<22}{json.dumps(run.conf)}")
    click.echo("")
    print_table(
        ["task_id", "state", "try", "started", "duration", "worker", "error"],
        [
            [
                t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]",
                t.state,
                f"{t.try_number}/{t.max_tries}",
                when(t.start_date),
                duration(t.duration),
                t.worker,
                (t.error or "").splitlines()[0] if t.error else None,
            ]
            for t in tis
        ],
        empty="(no task instances yet: the scheduler creates them when the run starts)",
    )
