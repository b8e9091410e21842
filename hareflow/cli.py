"""The ``hareflow`` command. Thin and lazy: each command imports its subsystem when it runs, so
``hareflow worker`` never imports Flask and ``hareflow --help`` imports almost nothing."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from typing import Any, NoReturn

import click


class UserError(click.ClickException):
    """A mistake the user can fix: one clear line, exit code 2, no traceback."""

    exit_code = 2


def _settings(**overrides: Any) -> Any:
    from common.config import ConfigError, load_settings

    try:
        return load_settings(overrides={k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)


def _stop_on_signals() -> tuple[threading.Event, threading.Event]:
    """First SIGTERM/SIGINT: graceful stop. Second: immediate."""
    stop, immediate = threading.Event(), threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            immediate.set()
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop, immediate


def _sessions(settings: Any) -> Any:
    from common.db import create_engine_for, make_session_factory

    return make_session_factory(create_engine_for(settings.effective_database_url))


def _fail_unreachable(settings: Any, exc: Exception, what: str = "database") -> NoReturn:
    from common.config import mask_url

    url = settings.effective_database_url if what == "database" else settings.broker_url
    raise UserError(f"cannot reach the {what} at {mask_url(url)}: {str(exc).splitlines()[0]}")


log_level_option = click.option(
    "--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default: the log_level setting)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """hareflow: Python DAGs of tasks, run by workers over RabbitMQ, recorded in a metastore.

    \b
    Example:
      hareflow standalone          # everything on one machine, SQLite, no broker
    """


@main.command()
def version() -> None:
    """Print the hareflow version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    try:
        click.echo(pkg_version("hareflow"))
    except PackageNotFoundError:
        click.echo("unknown (not installed)")


# -- long-running processes ---------------------------------------------------------------------


@main.command()
@click.option("--host", default=None, help="Address for the web UI (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port for the web UI (default 8080).")
@click.option("--concurrency", default=None, type=int, help="Task slots of the embedded worker.")
@log_level_option
def standalone(host: str | None, port: int | None, concurrency: int | None, log_level: str | None) -> None:
    """Run everything on one machine: metastore migration, scheduler, results and a local worker.

    Uses SQLite in $HAREFLOW_HOME (default ~/hareflow) and the embedded local executor unless a
    database or broker URL is configured. Example: hareflow standalone --concurrency 8
    """
    settings = _settings(web_host=host, web_port=port, log_level=log_level)
    _setup_logging(settings.log_level)
    from hareflow.cluster import Cluster, WorkerSpec

    settings.home.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(settings, workers=[WorkerSpec(concurrency=concurrency or settings.worker_concurrency)])
    try:
        cluster.migrate()
    except Exception as exc:
        _fail_unreachable(settings, exc)
    stop, immediate = _stop_on_signals()
    cluster.start()
    click.echo(
        f"hareflow standalone: DAGs from {settings.effective_dags_folder()}, "
        f"metastore {settings.effective_database_url}, executor {cluster.executor_name}. Ctrl-C stops."
    )
    while not stop.wait(0.5):
        pass
    if immediate.is_set():
        for w in cluster.workers:
            for ref in w.ref:
                ref.request_stop(immediate=True)
    cluster.stop()


@main.command()
@log_level_option
def scheduler(log_level: str | None) -> None:
    """Run the scheduler (with the results consumer in-process unless run_results_consumer=false).

    Example: HAREFLOW_BROKER_URL=amqp://guest:guest@127.0.0.1/ hareflow scheduler
    """
    settings = _settings(log_level=log_level)
    _setup_logging(settings.log_level)
    from common.broker import BrokerUnavailable
    from scheduler.service import SchemaNotCurrent, run_scheduler

    stop, _ = _stop_on_signals()
    try:
        run_scheduler(settings, stop)
    except SchemaNotCurrent as exc:
        raise UserError(str(exc)) from None
    except BrokerUnavailable as exc:
        raise UserError(str(exc)) from None


@main.command()
@log_level_option
def results(log_level: str | None) -> None:
    """Run only the results consumer. Example: hareflow results"""
    settings = _settings(log_level=log_level)
    _setup_logging(settings.log_level)
    from common.broker import BrokerUnavailable
    from scheduler.service import SchemaNotCurrent, run_results

    stop, _ = _stop_on_signals()
    try:
        run_results(settings, stop)
    except (SchemaNotCurrent, BrokerUnavailable) as exc:
        raise UserError(str(exc)) from None


@main.command()
@click.option("--queues", "-q", default=None, help="Comma-separated queues to consume (default: default).")
@click.option("--concurrency", "-c", default=None, type=int, help="Tasks run at once (pool size).")
@click.option("--name", "-n", default=None, help="Worker name shown in the UI (default host.pid).")
@log_level_option
def worker(queues: str | None, concurrency: int | None, name: str | None, log_level: str | None) -> None:
    """Run a worker. Needs only the broker URL and the DAG files, no database.

    Example: hareflow worker --queues default,heavy --concurrency 8 --name gpu-1
    """
    settings = _settings(log_level=log_level, worker_queues=queues)
    _setup_logging(settings.log_level)
    if settings.effective_executor != "rabbitmq":
        raise UserError(
            "a separate worker needs a broker: set HAREFLOW_BROKER_URL (or use `hareflow standalone`)"
        )
    from common.broker import BrokerUnavailable
    from worker.service import run_worker

    stop, immediate = _stop_on_signals()
    workers: list[Any] = []
    threading.Thread(
        target=lambda: (immediate.wait(), [w.request_stop(immediate=True) for w in workers]), daemon=True
    ).start()
    try:
        run_worker(settings, stop, concurrency=concurrency, name=name, worker_ref=workers)
    except BrokerUnavailable as exc:
        raise UserError(str(exc)) from None


# -- db -------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Create, upgrade and check the metastore schema."""


@db.command("migrate")
def db_migrate() -> None:
    """Bring the metastore schema to the newest version. Example: hareflow db migrate"""
    settings = _settings()
    from common.db import create_engine_for
    from common.db.migrate import migrate, status

    engine = create_engine_for(settings.effective_database_url)
    try:
        migrate(engine)
        click.echo(f"metastore at revision {status(engine).current}")
    except Exception as exc:
        _fail_unreachable(settings, exc)


@db.command("check")
def db_check() -> None:
    """Exit 0 if the schema is current, 1 if it needs `hareflow db migrate`."""
    settings = _settings()
    from common.db import create_engine_for
    from common.db.migrate import status

    try:
        st = status(create_engine_for(settings.effective_database_url))
    except Exception as exc:
        _fail_unreachable(settings, exc)
    if st.is_current:
        click.echo(f"metastore is current (revision {st.head})")
        return
    click.echo(
        f"metastore is at {st.current or 'no revision'}, newest is {st.head}: run `hareflow db migrate`"
    )
    sys.exit(1)


@db.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def db_reset(yes: bool) -> None:
    """Drop every hareflow table and migrate again (all history is lost)."""
    settings = _settings()
    from common.config import mask_url

    if not yes:
        click.confirm(f"Erase everything in {mask_url(settings.effective_database_url)}?", abort=True)
    from common.db import create_engine_for
    from common.db.migrate import downgrade, migrate

    engine = create_engine_for(settings.effective_database_url)
    try:
        downgrade(engine, "base")
        migrate(engine)
    except Exception as exc:
        _fail_unreachable(settings, exc)
    click.echo("metastore reset")


# -- dags ------------------------------------------------------------------------------------------


@main.group()
def dags() -> None:
    """List and trigger DAGs."""


@dags.command("list")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def dags_list(output: str) -> None:
    """List the active DAGs. Example: hareflow dags list -o json"""
    settings = _settings()
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from common.db import Dag

    try:
        with _sessions(settings)() as session:
            rows = list(session.scalars(select(Dag).where(Dag.is_active.is_(True)).order_by(Dag.dag_id)))
    except SQLAlchemyError as exc:
        _fail_unreachable(settings, exc)
    data = [
        {
            "dag_id": d.dag_id,
            "schedule": d.schedule,
            "paused": d.is_paused,
            "owner": d.owner,
            "tags": d.tags,
            "next_run": d.next_logical_date.isoformat() if d.next_logical_date else None,
            "file": d.fileloc,
        }
        for d in rows
    ]
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    for d in data:
        state = "paused" if d["paused"] else "active"
        click.echo(f"{d['dag_id']:<30} {str(d['schedule']):<14} {state:<7} {d['file']}")


@dags.command("trigger")
@click.argument("dag_id")
@click.option("--conf", default=None, help="Run configuration as a JSON object.")
@click.option("--run-id", default=None, help="Run id (default manual__<timestamp>).")
@click.option("--logical-date", default=None, help="Logical date (ISO 8601; default now).")
@click.option("--wait", is_flag=True, help="Follow the run; exit 0 on success, 1 on failure.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after this many seconds.")
def dags_trigger(
    dag_id: str,
    conf: str | None,
    run_id: str | None,
    logical_date: str | None,
    wait: bool,
    timeout: float | None,
) -> None:
    """Start a manual run of DAG_ID.

    Example: hareflow dags trigger daily_sales --conf '{"region": "eu"}' --wait
    """
    settings = _settings()
    from sqlalchemy.exc import SQLAlchemyError

    from common.runs import RunError, parse_date, trigger_run

    conf_obj = None
    if conf is not None:
        try:
            conf_obj = json.loads(conf)
        except json.JSONDecodeError as exc:
            raise UserError(f"--conf is not valid JSON: {exc}") from None
        if not isinstance(conf_obj, dict):
            raise UserError("--conf must be a JSON object, like '{\"key\": 1}'")
    try:
        when = parse_date(logical_date)
    except ValueError:
        raise UserError(f"--logical-date {logical_date!r} is not an ISO 8601 date") from None
    sessions = _sessions(settings)
    try:
        with sessions() as session, session.begin():
            run = trigger_run(
                session, dag_id, conf=conf_obj, run_id=run_id, logical_date=when, triggered_by="cli"
            )
            run_pk, created_id = run.id, run.run_id
    except RunError as exc:
        raise UserError(str(exc)) from None
    except SQLAlchemyError as exc:
        _fail_unreachable(settings, exc)
    _notify_scheduler(settings, dag_id, created_id)
    click.echo(f"created run {created_id} of {dag_id}")
    if wait:
        sys.exit(_follow_run(sessions, run_pk, timeout))


def _notify_scheduler(settings: Any, dag_id: str, run_id: str) -> None:
    """Wake a scheduler at once over the events exchange (it would find the run within a second anyway)."""
    if settings.effective_executor != "rabbitmq":
        return
    try:
        from common.broker import make_executor
        from common.messages import StateEvent

        executor = make_executor(settings, connection_name="hareflow-cli")
        executor.start(timeout=5)
        executor.publish_events(
            [StateEvent(kind="run", dag_id=dag_id, run_id=run_id, state="queued", at=time.time())]
        )
        time.sleep(0.05)
        executor.close()
    except Exception:
        pass


def _follow_run(sessions: Any, run_pk: int, timeout: float | None) -> int:
    from sqlalchemy import select

    from common.db import DagRun, TaskInstance

    seen: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        with sessions() as session:
            run = session.get(DagRun, run_pk)
            tis = session.scalars(
                select(TaskInstance).where(TaskInstance.run_pk == run_pk).order_by(TaskInstance.id)
            )
            for ti in tis:
                state = (ti.state, ti.try_number)
                if seen.get(ti.task_id) != state:
                    seen[ti.task_id] = state
                    extra = f" (try {ti.try_number})" if ti.try_number > 1 else ""
                    err = (
                        f": {ti.error.splitlines()[0]}"
                        if ti.error and ti.state in ("failed", "up_for_retry")
                        else ""
                    )
                    click.echo(f"  {ti.task_id:<30} {ti.state}{extra}{err}")
            if run is not None and run.state in ("success", "failed"):
                click.echo(f"run {run.run_id}: {run.state}")
                return 0 if run.state == "success" else 1
        if deadline is not None and time.monotonic() > deadline:
            click.echo("gave up waiting (--timeout); the run goes on")
            return 1
        time.sleep(0.2)


# -- config ----------------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Inspect configuration."""


@config.command("show")
def config_show() -> None:
    """Print the effective settings, secrets masked. Example: hareflow config show"""
    settings = _settings()
    for key, value in settings.as_display_dict().items():
        click.echo(f"{key:<32} {value}")


if __name__ == "__main__":  # pragma: no cover
    main()
