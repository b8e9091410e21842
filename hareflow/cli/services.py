"""The long-running processes: standalone, scheduler, results, worker, and (later) web."""

from __future__ import annotations

import threading
from typing import Any

import click

from hareflow.cli.common import (
    UserError,
    fail_unreachable,
    get_settings,
    log_level_option,
    setup_logging,
    stop_on_signals,
)


@click.command()
@click.option("--host", default=None, help="Address for the web UI (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port for the web UI (default 8080).")
@click.option("--concurrency", default=None, type=int, help="Task slots of the embedded worker.")
@log_level_option
def standalone(host: str | None, port: int | None, concurrency: int | None, log_level: str | None) -> None:
    """Run everything on one machine: metastore migration, scheduler, results and a local worker.

    Uses SQLite in $HAREFLOW_HOME (default ~/hareflow) and the embedded local executor unless a
    database or broker URL is configured. Ctrl-C stops it (twice: at once).

    \b
    Example:
      HAREFLOW_HOME=/tmp/hf hareflow standalone --concurrency 8
    """
    settings = get_settings(web_host=host, web_port=port, log_level=log_level)
    setup_logging(settings.log_level)
    from hareflow.cluster import Cluster, WorkerSpec

    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        cluster = Cluster(
            settings, workers=[WorkerSpec(concurrency=concurrency or settings.worker_concurrency)]
        )
        cluster.migrate()
    except Exception as exc:
        fail_unreachable(settings, exc)
    stop, immediate = stop_on_signals()
    cluster.start()
    from common.config import mask_url

    click.echo(
        f"hareflow standalone: DAGs from {settings.effective_dags_folder()}, "
        f"metastore {mask_url(settings.effective_database_url)}, executor {cluster.executor_name}. "
        "Ctrl-C stops."
    )
    while not stop.wait(0.5):
        pass
    if immediate.is_set():
        for w in cluster.workers:
            for ref in w.ref:
                ref.request_stop(immediate=True)
    cluster.stop()


@click.command()
@log_level_option
def scheduler(log_level: str | None) -> None:
    """Run the scheduler: DAG file processing, run creation, dispatch (and the results consumer
    in-process unless run_results_consumer=false).

    \b
    Example:
      HAREFLOW_BROKER_URL=amqp://guest:guest@127.0.0.1/ hareflow scheduler
    """
    settings = get_settings(log_level=log_level)
    setup_logging(settings.log_level)
    from common.broker import BrokerUnavailable
    from scheduler.service import SchemaNotCurrent, run_scheduler

    stop, _ = stop_on_signals()
    try:
        run_scheduler(settings, stop)
    except (SchemaNotCurrent, BrokerUnavailable) as exc:
        raise UserError(str(exc)) from None


@click.command()
@log_level_option
def results(log_level: str | None) -> None:
    """Run only the results consumer (scale it out beside schedulers run with
    HAREFLOW_RUN_RESULTS_CONSUMER=false).

    \b
    Example:
      hareflow results --log-level WARNING
    """
    settings = get_settings(log_level=log_level)
    setup_logging(settings.log_level)
    from common.broker import BrokerUnavailable
    from scheduler.service import SchemaNotCurrent, run_results

    stop, _ = stop_on_signals()
    try:
        run_results(settings, stop)
    except (SchemaNotCurrent, BrokerUnavailable) as exc:
        raise UserError(str(exc)) from None


@click.command()
@click.option("--queues", "-q", default=None, help="Comma-separated queues to consume (default: default).")
@click.option("--concurrency", "-c", default=None, type=int, help="Tasks run at once (pool size).")
@click.option("--name", "-n", default=None, help="Worker name shown in the UI (default host.pid).")
@log_level_option
def worker(queues: str | None, concurrency: int | None, name: str | None, log_level: str | None) -> None:
    """Run a worker. Needs only the broker URL and the DAG files, no database. SIGTERM finishes the
    running tasks and hands back the rest; a second SIGTERM hands back everything.

    \b
    Example:
      hareflow worker --queues default,heavy --concurrency 8 --name gpu-1
    """
    settings = get_settings(log_level=log_level, worker_queues=queues)
    setup_logging(settings.log_level)
    if settings.effective_executor != "rabbitmq":
        raise UserError(
            "a separate worker needs a broker: set HAREFLOW_BROKER_URL (or use `hareflow standalone`)"
        )
    from common.broker import BrokerUnavailable
    from worker.service import run_worker

    stop, immediate = stop_on_signals()
    workers: list[Any] = []
    threading.Thread(
        target=lambda: (immediate.wait(), [w.request_stop(immediate=True) for w in workers]), daemon=True
    ).start()
    try:
        run_worker(settings, stop, concurrency=concurrency, name=name, worker_ref=workers)
    except BrokerUnavailable as exc:
        raise UserError(str(exc)) from None


@click.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port to listen on (default 8080).")
@log_level_option
def web(host: str | None, port: int | None, log_level: str | None) -> None:
    """Run the web UI (not available yet: it arrives in a later release; exits 2).

    \b
    Example:
      hareflow web --host 0.0.0.0 --port 8080
    """
    get_settings(web_host=host, web_port=port, log_level=log_level)
    raise UserError(
        "the web UI is not available yet (it comes in a later release); "
        "use the CLI meanwhile: `hareflow --help`"
    )
