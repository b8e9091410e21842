"""``hareflow tasks``: list a DAG's tasks, test one in the terminal, clear, read logs and states."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from hareflow.cli.common import (
    CONTEXT_SETTINGS,
    INTERRUPTED,
    UserError,
    complete_dag_id,
    get_settings,
    metastore,
    notify_scheduler,
    output_option,
    parse_conf,
    parse_date,
    print_json,
    print_table,
    user_mistakes,
)

map_index_option = click.option(
    "--map-index",
    "map_index",
    default=None,
    type=click.IntRange(0),
    help="One instance of a mapped task (0, 1, ...); a mapped task needs it.",
)
dag_option = click.option(
    "--dag",
    "dag_id",
    default=None,
    shell_complete=complete_dag_id,
    help="The run's DAG (needed when the run id exists in several DAGs).",
)


@click.group(context_settings=CONTEXT_SETTINGS)
def tasks() -> None:
    """List tasks, test one locally, clear task instances, read their logs and states.

    \b
    Example:
      hareflow tasks clear daily_sales --only-failed --yes
    """


@tasks.command("list")
@click.argument("dag_id", shell_complete=complete_dag_id)
@output_option
def tasks_list(dag_id: str, output: str) -> None:
    """List DAG_ID's tasks in the order they can run, with their upstream tasks and settings.

    \b
    Example:
      hareflow tasks list example_etl
    """
    settings = get_settings()
    from hareflow.common.operations import get_dag, serialized_dag

    with metastore(settings) as sessions, sessions() as session, user_mistakes():
        sdag = serialized_dag(get_dag(session, dag_id))
    data = [
        {
            "task_id": t.task_id,
            "task_type": t.task_type,
            "upstream": list(t.upstream),
            "trigger_rule": t.trigger_rule,
            "queue": t.queue,
            "pool": t.pool,
            "retries": t.retries,
            "priority": t.priority,
            "execution_timeout": t.execution_timeout,
        }
        for t in sdag.tasks
    ]
    if output == "json":
        print_json(data)
        return
    print_table(
        ["task_id", "type", "upstream", "trigger rule", "queue", "retries"],
        [
            [
                d["task_id"],
                d["task_type"],
                ",".join(d["upstream"]) or "-",
                d["trigger_rule"],
                d["queue"],
                d["retries"],
            ]
            for d in data
        ],
    )


# -- test ---------------------------------------------------------------------------------------


def find_dag_in_folder(folder: Path, dag_id: str) -> Any:
    """Load DAG ``dag_id`` by parsing the DAG folder in this process (files naming it first)."""
    from hareflow.common.dag.loader import find_dag_files, load_dag_file

    if not folder.exists():
        raise UserError(f"the DAG folder {folder} does not exist (set HAREFLOW_DAGS_FOLDER)")
    files = find_dag_files(folder)
    needle = dag_id.encode()
    files.sort(key=lambda p: needle not in _read(p))
    errors = []
    for path in files:
        result = load_dag_file(path, dags_folder=folder)
        for dag in result.dags:
            if dag.dag_id == dag_id:
                return dag
        if needle in _read(path):
            errors.extend(result.errors)
    if errors:
        first = errors[0]
        where = f"{first.file}:{first.line}" if first.line else first.file
        raise UserError(f"DAG {dag_id!r} could not be loaded: {where}: {first.message.splitlines()[0]}")
    raise UserError(f"no DAG named {dag_id!r} in the DAG folder {folder}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@tasks.command("test")
@click.argument("dag_id", shell_complete=complete_dag_id)
@click.argument("task_id")
@click.option("--conf", default=None, help="Run configuration as a JSON object (overrides params).")
@click.option("--logical-date", default=None, help="Logical date the task sees, ISO 8601 (default now).")
@click.option(
    "--map-index",
    "map_index",
    default=None,
    type=click.IntRange(0),
    help="Which instance of a task mapped over a literal list (default 0).",
)
def tasks_test(
    dag_id: str, task_id: str, conf: str | None, logical_date: str | None, map_index: int | None
) -> None:
    """Run one task here, in the terminal, without the broker or the metastore.

    The DAG file is loaded from the DAG folder; upstream results the task consumes are None. Its
    output goes to the terminal and its return value is printed as JSON; nothing is recorded.
    Exits 1 if the task raised.

    \b
    Example:
      hareflow tasks test example_fanout plan --conf '{"parts": 4}'
    """
    settings = get_settings()
    conf_obj = parse_conf(conf) or {}
    logical = parse_date(logical_date, "--logical-date")
    import logging
    import traceback
    from datetime import UTC, datetime

    from hareflow.common.dag import Context, SkipTask, encode_result, resolve_params
    from hareflow.common.dag.branching import downstream_skips

    dag = find_dag_in_folder(settings.effective_dags_folder(), dag_id)
    if not dag.has_task(task_id):
        raise UserError(f"DAG {dag_id!r} has no task {task_id!r}; its tasks: {', '.join(dag.task_ids)}")
    task = dag.get_task(task_id)
    logical = logical or datetime.now(UTC)
    map_index, expand_args = _test_element(task, map_index)
    ctx = Context(
        dag_id=dag_id,
        task_id=task_id,
        run_id=f"test__{logical.isoformat()}",
        logical_date=logical,
        data_interval_start=logical,
        data_interval_end=logical,
        params=resolve_params(dag.params, conf_obj),
        conf=conf_obj,
        try_number=1,
        max_tries=task.max_tries,
        upstream_results={upstream: None for upstream in task.input_task_ids},
        map_index=map_index,
        expand_args=expand_args,
    )
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s", force=True
    )
    click.echo(f"testing {dag_id}.{task_id} (nothing is recorded)", err=True)
    try:
        value = task.execute(ctx)
        decision = downstream_skips(task, value)
        text = encode_result(value, settings.max_result_bytes, task_id=task_id)
    except SkipTask as exc:
        click.echo(f"task {task_id} skipped itself: {exc}", err=True)
        return
    except BaseException as exc:  # noqa: BLE001 - the task's own failure, reported like a worker would
        if isinstance(exc, KeyboardInterrupt):
            raise
        sys.stdout.flush()
        traceback.print_exc()
        click.echo(f"task {task_id} failed: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    import json

    sys.stdout.flush()
    if decision is not None:
        click.echo(f"{decision.reason}; it would skip: {', '.join(decision.task_ids)}", err=True)
    click.echo(f"task {task_id} returned:", err=True)
    click.echo(json.dumps(json.loads(text), indent=2))


def _test_element(task: Any, map_index: int | None) -> tuple[int, dict[str, Any] | None]:
    """The map index and arguments ``tasks test`` gives a task (a mapped one over literals only)."""
    from hareflow.common.dag.mapping import ExpansionError, element, source_lists

    spec = getattr(task, "expand_spec", None)
    if spec is None:
        if map_index is not None:
            raise UserError(f"task {task.task_id!r} is not mapped: drop --map-index")
        return -1, None
    index = map_index or 0
    try:
        args = element(spec, source_lists(spec, {}), index)
    except ExpansionError:
        raise UserError(
            f"task {task.task_id!r} maps over the output of task(s) {', '.join(spec.task_ids)}, which "
            f"exists only in a run: trigger the DAG instead"
        ) from None
    if args is None:
        raise UserError(f"task {task.task_id!r} has no map index {index}")
    return index, args


# -- clear --------------------------------------------------------------------------------------


@tasks.command("clear")
@click.argument("dag_id", shell_complete=complete_dag_id)
@click.option("--run-id", default=None, help="Only this run (default: every run of the DAG).")
@click.option("--task", "task_regex", default=None, help="Only tasks whose id matches this regex.")
@click.option("--upstream", is_flag=True, help="Also clear the matched tasks' upstream tasks.")
@click.option("--downstream", is_flag=True, help="Also clear the matched tasks' downstream tasks.")
@click.option("--only-failed", is_flag=True, help="Only failed and upstream_failed task instances.")
@click.option(
    "--map-index",
    "map_index",
    default=None,
    type=click.IntRange(0),
    help="Only this instance of the matched mapped tasks (default: every instance).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@output_option
def tasks_clear(
    dag_id: str,
    run_id: str | None,
    task_regex: str | None,
    upstream: bool,
    downstream: bool,
    only_failed: bool,
    map_index: int | None,
    yes: bool,
    output: str,
) -> None:
    """Clear finished task instances so the scheduler runs them again, retries included.

    Their runs go back to queued if they had finished. Queued and running task instances are left
    alone and listed as skipped.

    \b
    Example:
      hareflow tasks clear example_etl --run-id manual__2026-01-05T10:00:00+00:00 --task '^load' --downstream
    """
    settings = get_settings()
    from hareflow.common.operations import clear_task_instances

    options = {
        "run_id": run_id,
        "task_regex": task_regex,
        "upstream": upstream,
        "downstream": downstream,
        "only_failed": only_failed,
        "map_index": map_index,
    }
    with metastore(settings) as sessions:
        if not yes:
            with user_mistakes(), sessions() as session:
                plan = clear_task_instances(session, dag_id, dry_run=True, **options)
            if not plan.cleared:
                _report_clear(plan, output, done=False)
                return
            if output == "table":
                _print_refs("would clear", plan.cleared)
            click.confirm(
                f"Clear {len(plan.cleared)} task instance(s) in {len(plan.runs_touched)} run(s) of {dag_id}?",
                abort=True,
                err=True,
            )
        with user_mistakes(), sessions() as session, session.begin():
            result = clear_task_instances(session, dag_id, username="cli", **options)
    notify_scheduler(
        settings,
        [{"kind": "run", "dag_id": dag_id, "run_id": r, "state": "queued"} for r in result.runs_touched],
    )
    _report_clear(result, output, done=True)


def _label(ref: Any) -> str:
    return ref.task_id if ref.map_index < 0 else f"{ref.task_id}[{ref.map_index}]"


def _print_refs(title: str, refs: list[Any]) -> None:
    click.echo(f"{title}:", err=True)
    for r in refs:
        click.echo(f"  {r.run_id}  {_label(r)}  ({r.state}, try {r.try_number})", err=True)


def _report_clear(result: Any, output: str, *, done: bool) -> None:
    if output == "json":
        print_json(
            {
                "cleared": [r.to_dict() for r in result.cleared],
                "skipped": [r.to_dict() for r in result.skipped],
                "runs_requeued": result.runs_requeued,
            }
        )
        return
    if not result.cleared:
        click.echo("nothing to clear")
    else:
        click.echo(f"cleared {len(result.cleared)} task instance(s) in {len(result.runs_touched)} run(s)")
        for r in result.cleared:
            click.echo(f"  {r.run_id}  {_label(r)}  (was {r.state}, try {r.try_number})")
    if result.runs_requeued and done:
        click.echo(f"runs queued again: {', '.join(result.runs_requeued)}")
    if result.skipped:
        click.echo(f"skipped {len(result.skipped)} queued or running task instance(s):")
        for r in result.skipped:
            click.echo(f"  {r.run_id}  {_label(r)}  ({r.state})")


# -- logs and state -----------------------------------------------------------------------------


@tasks.command("logs")
@click.argument("run_id")
@click.argument("task_id")
@dag_option
@click.option(
    "--try", "try_number", default=None, type=click.IntRange(1), help="Which try (default the latest)."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the task finishes.")
@map_index_option
def tasks_logs(
    run_id: str, task_id: str, dag_id: str | None, try_number: int | None, follow: bool, map_index: int | None
) -> None:
    """Print the captured output of one task instance's try; --follow tails it live.

    \b
    Example:
      hareflow tasks logs manual__2026-01-05T10:00:00+00:00 load --dag example_etl --follow
    """
    settings = get_settings()
    from hareflow.common.operations import find_run, find_task_instance

    with metastore(settings) as sessions:
        with user_mistakes(), sessions() as session:
            run = find_run(session, run_id, dag_id)
            ti = find_task_instance(session, run, task_id, map_index)
            ti_id, latest, state = ti.id, ti.try_number, ti.state
        if try_number is not None and try_number > latest:
            raise UserError(
                f"task {task_id} of run {run_id} has had {latest} tr{'y' if latest == 1 else 'ies'} so far"
            )
        if not follow:
            if latest == 0:
                click.echo(f"task {task_id} of run {run_id} has not started yet (state {state})", err=True)
                return
            chunks = _chunks(sessions, ti_id, try_number or latest, -1)
            if not chunks:
                click.echo(f"(no output for try {try_number or latest})", err=True)
            for _, text in chunks:
                click.echo(text, nl=False)
            return
        try:
            _follow_logs(sessions, ti_id, try_number)
        except KeyboardInterrupt:
            sys.exit(INTERRUPTED)


def _chunks(sessions: Any, ti_id: int, try_number: int, after_seq: int) -> list[tuple[int, str]]:
    from sqlalchemy import select

    from hareflow.common.db import TaskLog

    with sessions() as session:
        rows = session.execute(
            select(TaskLog.seq, TaskLog.text)
            .where(TaskLog.ti_id == ti_id, TaskLog.try_number == try_number, TaskLog.seq > after_seq)
            .order_by(TaskLog.seq)
        ).all()
    return [(seq, text) for seq, text in rows]


def _follow_logs(sessions: Any, ti_id: int, fixed_try: int | None) -> None:
    """Print new chunks as they arrive; move on to later tries unless one was asked for; stop
    when the try (or, following every try, the task instance) has finished."""
    from hareflow.common.db import TaskInstance
    from hareflow.common.states import TASK_FINISHED

    current = fixed_try
    last_seq = -1
    while True:
        with sessions() as session:
            ti = session.get(TaskInstance, ti_id)
            assert ti is not None
            state, latest = ti.state, ti.try_number
        if current is None and latest >= 1:
            current = latest
            click.echo(f"--- try {current} ---", err=True)
        if current is not None:
            for seq, text in _chunks(sessions, ti_id, current, last_seq):
                last_seq = seq
                click.echo(text, nl=False)
            try_over = latest > current or state not in ("queued", "running")
            if try_over:
                # The final report and the last chunks may land in separate batches: read once more.
                for seq, text in _chunks(sessions, ti_id, current, last_seq):
                    last_seq = seq
                    click.echo(text, nl=False)
                if fixed_try is not None or state in TASK_FINISHED:
                    click.echo(f"--- {state} ---", err=True)
                    return
                if latest > current:
                    current, last_seq = latest, -1
                    click.echo(f"--- try {current} ---", err=True)
        time.sleep(0.3)


@tasks.command("state")
@click.argument("run_id")
@click.argument("task_id")
@dag_option
@map_index_option
@output_option
def tasks_state(run_id: str, task_id: str, dag_id: str | None, map_index: int | None, output: str) -> None:
    """Print the state of one task instance (with -o json: also its try, times, worker and error).

    \b
    Example:
      hareflow tasks state manual__2026-01-05T10:00:00+00:00 load --dag example_etl
    """
    settings = get_settings()
    from hareflow.cli.runs import ti_dict
    from hareflow.common.operations import find_run, find_task_instance

    with metastore(settings) as sessions, sessions() as session, user_mistakes():
        ti = find_task_instance(session, find_run(session, run_id, dag_id), task_id, map_index)
    if output == "json":
        print_json(ti_dict(ti))
        return
    click.echo(ti.state)
