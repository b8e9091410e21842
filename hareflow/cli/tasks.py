"""``hareflow tasks``: list a DAG's tasks, test or render one, clear or mark, read logs and states."""

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
    cli_user,
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


def task_logging() -> None:
    """Log records of the tasks run here go to the terminal, formatted as a worker formats them."""
    import logging

    from hareflow.worker.child import LOG_FORMAT

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)


def parse_inputs(values: tuple[str, ...]) -> dict[str, Any]:
    """``--input TASK=JSON`` options as ``{task_id: value}``, or a UserError naming the bad one."""
    import json

    inputs: dict[str, Any] = {}
    for item in values:
        task_id, sep, text = item.partition("=")
        if not sep or not task_id:
            raise UserError(f"--input {item!r}: expected TASK=JSON, e.g. --input extract='[1, 2]'")
        try:
            inputs[task_id] = json.loads(text)
        except ValueError as exc:
            raise UserError(f"--input {task_id}: not JSON: {exc}") from None
    return inputs


def _stored_run(settings: Any, run_id: str, dag_id: str, wanted: Any) -> dict[str, Any]:
    """The run's conf, dates and the latest stored results of the tasks in ``wanted``."""
    import json

    from sqlalchemy import select

    from hareflow.common.db import TaskInstance, TaskResult
    from hareflow.common.operations import find_run

    with metastore(settings) as sessions, sessions() as session, user_mistakes():
        run = find_run(session, run_id, dag_id)
        rows = session.execute(
            select(TaskInstance.task_id, TaskResult.value_json)
            .join(
                TaskResult,
                (TaskResult.ti_id == TaskInstance.id) & (TaskResult.try_number == TaskInstance.try_number),
            )
            .where(TaskInstance.run_pk == run.id, TaskInstance.task_id.in_(list(wanted)))
        ).all()
        return {
            "conf": dict(run.conf or {}),
            "logical_date": run.logical_date,
            "data_interval": (run.data_interval_start, run.data_interval_end),
            "results": {task_id: json.loads(value) for task_id, value in rows},
        }


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
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="TASK=JSON",
    help="The value an upstream task's output takes (repeatable).",
)
@click.option(
    "--from-run",
    default=None,
    metavar="RUN_ID",
    help="Take upstream values (and conf and dates, unless given) from this run's stored results.",
)
def tasks_test(
    dag_id: str,
    task_id: str,
    conf: str | None,
    logical_date: str | None,
    inputs: tuple[str, ...],
    from_run: str | None,
    map_index: int | None,
) -> None:
    """Run one task here, in the terminal, without the broker (and without the metastore unless
    --from-run is given), as a worker runs it: context, templates, callbacks.

    Upstream values the task consumes come from --input, then from --from-run's stored results;
    any other is None. Its output goes to the terminal and its return value is printed as JSON;
    nothing is recorded. Exits 1 if the task failed.

    \b
    Example:
      hareflow tasks test example_fanout plan --conf '{"parts": 4}'
      hareflow tasks test example_etl load --input transform='[1, 2, 3]'
    """
    import json
    from datetime import UTC, datetime

    from hareflow.inprocess import run_try, task_payload

    settings = get_settings()
    conf_obj = parse_conf(conf)
    logical = parse_date(logical_date, "--logical-date")
    given = parse_inputs(inputs)
    dag = find_dag_in_folder(settings.effective_dags_folder(), dag_id)
    if not dag.has_task(task_id):
        raise UserError(f"DAG {dag_id!r} has no task {task_id!r}; its tasks: {', '.join(dag.task_ids)}")
    task = dag.get_task(task_id)
    unknown = sorted(set(given) - set(task.input_task_ids))
    if unknown:
        consumed = ", ".join(sorted(task.input_task_ids)) or "none"
        raise UserError(
            f"--input {unknown[0]}: task {task_id} does not consume its output (it consumes: {consumed})"
        )
    stored: dict[str, Any] = {"conf": {}, "logical_date": None, "data_interval": None, "results": {}}
    if from_run is not None:
        stored = _stored_run(settings, from_run, dag_id, task.input_task_ids)
    upstream = {u: given.get(u, stored["results"].get(u)) for u in task.input_task_ids}
    index, expand_args = _test_element(task, map_index, upstream)
    logical = logical or stored["logical_date"] or datetime.now(UTC)
    payload = task_payload(
        dag,
        task,
        run_id=from_run or f"test__{logical.isoformat()}",
        logical_date=logical,
        conf=conf_obj if conf_obj is not None else stored["conf"],
        upstream_results=upstream,
        data_interval=stored["data_interval"] if logical_date is None else None,
        map_index=index,
        expand_args=expand_args,
    )
    task_logging()
    click.echo(f"testing {dag_id}.{task_id} (nothing is recorded)", err=True)
    outcome = run_try(task, payload, max_result_bytes=settings.max_result_bytes, out=sys.stdout)
    sys.stdout.flush()
    if outcome.outcome == "skipped":
        click.echo(f"task {task_id} skipped itself: {outcome.error}", err=True)
        return
    if outcome.outcome == "up_for_reschedule":
        when = datetime.fromtimestamp(float(outcome.extras.get("reschedule_at") or 0), UTC)
        click.echo(
            f"sensor {task_id} found nothing yet; in a run it would give its slot back and poke again "
            f"at {when.isoformat(timespec='seconds')} (up_for_reschedule)",
            err=True,
        )
        return
    if outcome.outcome != "success":
        click.echo(f"task {task_id} failed: {outcome.error}", err=True)
        sys.exit(1)
    skips = outcome.extras.get("skip_task_ids")
    if skips:
        click.echo(f"{outcome.extras.get('skip_reason')}; it would skip: {', '.join(skips)}", err=True)
    click.echo(f"task {task_id} returned:", err=True)
    click.echo(json.dumps(outcome.result, indent=2))


@tasks.command("render")
@click.argument("run_id")
@click.argument("task_id")
@dag_option
@output_option
def tasks_render(run_id: str, task_id: str, dag_id: str | None, output: str) -> None:
    """Print a task instance's rendered template fields: those its worker stored for the latest
    try, or, if it has not run yet, rendered here from the DAG file with the run's context.

    \b
    Example:
      hareflow tasks render scheduled__2026-01-05T00:00:00+00:00 report --dag example_templates
    """
    settings = get_settings()
    from hareflow.common.operations import find_run, find_task_instance

    with metastore(settings) as sessions, sessions() as session, user_mistakes():
        run = find_run(session, run_id, dag_id)
        ti = find_task_instance(session, run, task_id)
        fields = _stored_rendered(session, ti.id, ti.try_number) if ti.try_number > 0 else None
        run_facts = {
            "dag_id": run.dag_id,
            "conf": dict(run.conf or {}),
            "logical_date": run.logical_date,
            "data_interval": (run.data_interval_start, run.data_interval_end),
            "try_number": max(1, ti.try_number),
        }
    if fields is not None:
        source = f"stored by the worker for try {ti.try_number}"
    else:
        fields = _render_here(settings, run_id, task_id, run_facts)
        why = "it has not run yet" if ti.try_number == 0 else f"nothing stored for try {ti.try_number}"
        source = f"rendered here from the DAG file ({why})"
    if output == "json":
        print_json({"source": "stored" if source.startswith("stored") else "local", "rendered": fields})
        return
    click.echo(f"{run_facts['dag_id']}.{task_id} in {run_id}: {source}", err=True)
    if not fields:
        click.echo("(the task has no template fields)")
    for name, value in fields.items():
        import json

        text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        click.echo(f"{name}:\n" + "".join(f"  {line}\n" for line in text.splitlines() or [""]), nl=False)


def _stored_rendered(session: Any, ti_id: int, try_number: int) -> dict[str, Any] | None:
    import json

    from sqlalchemy import select

    from hareflow.common.db import TaskRendered

    value = session.scalar(
        select(TaskRendered.fields_json).where(
            TaskRendered.ti_id == ti_id, TaskRendered.try_number == try_number
        )
    )
    return None if value is None else json.loads(value)


def _render_here(settings: Any, run_id: str, task_id: str, run: dict[str, Any]) -> dict[str, Any]:
    """Render the task's template fields from the DAG file with the run's context, as a worker would."""
    import json

    from hareflow.common.dag.context import context_from_message
    from hareflow.common.dag.templating import TemplateRenderError, render_fields
    from hareflow.inprocess import task_payload

    dag = find_dag_in_folder(settings.effective_dags_folder(), run["dag_id"])
    if not dag.has_task(task_id):
        raise UserError(f"DAG {run['dag_id']!r} has no task {task_id!r} any more")
    task = dag.get_task(task_id)
    payload = task_payload(
        dag,
        task,
        run_id=run_id,
        logical_date=run["logical_date"],
        conf=run["conf"],
        upstream_results={},
        try_number=run["try_number"],
        data_interval=run["data_interval"],
    )
    try:
        return json.loads(json.dumps(render_fields(task, context_from_message(payload)), default=str))
    except TemplateRenderError as exc:
        raise UserError(str(exc)) from None


def _test_element(
    task: Any, map_index: int | None, upstream: dict[str, Any]
) -> tuple[int, dict[str, Any] | None]:
    """The map index and arguments ``tasks test`` gives a task (a mapped one over literals, or over
    upstream values given with --input or --from-run)."""
    from hareflow.common.dag.mapping import ExpansionError, element, source_lists

    spec = getattr(task, "expand_spec", None)
    if spec is None:
        if map_index is not None:
            raise UserError(f"task {task.task_id!r} is not mapped: drop --map-index")
        return -1, None
    index = map_index or 0
    try:
        args = element(spec, source_lists(spec, {u: v for u, v in upstream.items() if v is not None}), index)
    except ExpansionError:
        raise UserError(
            f"task {task.task_id!r} maps over the output of task(s) {', '.join(spec.task_ids)}: give it "
            f"with --input TASK=JSON or --from-run RUN_ID, or trigger the DAG"
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
            result = clear_task_instances(session, dag_id, username=cli_user(settings), **options)
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


@tasks.command("mark")
@click.argument("state", type=click.Choice(["success", "failed"]))
@click.argument("run_id")
@click.argument("task_id")
@dag_option
@map_index_option
@output_option
def tasks_mark(
    state: str, run_id: str, task_id: str, dag_id: str | None, map_index: int | None, output: str
) -> None:
    """Set one task instance to success or failed by hand, as the UI's Mark buttons do.

    A report the worker sends later for the same try changes nothing. A finished run goes back to
    queued, so the scheduler re-evaluates the downstream tasks and the run's outcome. Audited.

    \b
    Example:
      hareflow tasks mark success manual__2026-01-05T10:00:00+00:00 load --dag example_etl
    """
    settings = get_settings()
    from hareflow.cli.runs import ti_dict
    from hareflow.common.operations import find_run, find_task_instance, mark_task_instance

    with metastore(settings) as sessions, user_mistakes(), sessions() as session, session.begin():
        run = find_run(session, run_id, dag_id)
        previous = find_task_instance(session, run, task_id, map_index).state
        ti = mark_task_instance(
            session, run.dag_id, run.run_id, task_id, state, map_index=map_index, username=cli_user(settings)
        )
        result = ti_dict(ti)
        dag_id = run.dag_id
    notify_scheduler(
        settings,
        [
            {"kind": "task", "dag_id": dag_id, "run_id": run_id, "state": state},
            {"kind": "run", "dag_id": dag_id, "run_id": run_id, "state": "queued"},
        ],
    )
    if output == "json":
        print_json(result)
        return
    label = task_id if ti.map_index < 0 else f"{task_id}[{ti.map_index}]"
    click.echo(f"marked {label} of {run_id} {state} (was {previous})")


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
