"""The long-running processes: standalone, scheduler, results, worker and web."""

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
    from hareflow.cli import first_run
    from hareflow.cluster import Cluster, WorkerSpec

    restore_logging = first_run.quiet_start(settings.log_level)
    settings.home.mkdir(parents=True, exist_ok=True)
    settings, dags_folder = first_run.prepare_dags_folder(settings)
    try:
        cluster = Cluster(
            settings, workers=[WorkerSpec(concurrency=concurrency or settings.worker_concurrency)]
        )
        cluster.migrate()
    except Exception as exc:
        fail_unreachable(settings, exc)
    from hareflow.web.security import ensure_secret_key

    settings = settings.replace(secret_key=ensure_secret_key(settings))
    stop, immediate = stop_on_signals()
    cluster.start()
    unpaused = first_run.unpause_copied_examples(cluster.sessions, settings.home)
    password = first_run.create_first_admin(cluster.sessions)
    from hareflow.common.config import mask_url
    from hareflow.web.server import make_web_server, serve_until

    try:
        server = make_web_server(settings, sessions=cluster.sessions, executor=cluster.executor)
    except OSError as exc:
        cluster.stop()
        raise UserError(
            f"cannot serve the web UI on {settings.web_host}:{settings.web_port}: {exc.strerror}"
        ) from None
    web_thread = threading.Thread(target=serve_until, args=(server, stop), name="hareflow-web", daemon=True)
    web_thread.start()
    first_run.show_first_screen(
        first_run.first_screen(
            f"http://{settings.web_host}:{server.server_port}/",
            dags_folder,
            password=password,
            metastore=mask_url(settings.effective_database_url),
            executor=cluster.executor_name,
            unpaused=unpaused,
        ),
        restore_logging,
    )
    while not stop.wait(0.5):
        pass
    web_thread.join(timeout=10)
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
    from hareflow.common.broker import BrokerUnavailable
    from hareflow.scheduler.service import SchemaNotCurrent, run_scheduler

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
    from hareflow.common.broker import BrokerUnavailable
    from hareflow.scheduler.service import SchemaNotCurrent, run_results

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
    from hareflow.common.broker import BrokerUnavailable
    from hareflow.worker.service import run_worker

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
    """Run the web UI and REST API (login required; see docs/web.md). Needs a migrated metastore.

    \b
    Example:
      hareflow web --host 0.0.0.0 --port 8080
    """
    settings = get_settings(web_host=host, web_port=port, log_level=log_level)
    setup_logging(settings.log_level)
    from hareflow.common.db import create_engine_for, make_session_factory
    from hareflow.common.db.migrate import status
    from hareflow.web.security import ensure_secret_key
    from hareflow.web.server import make_web_server, serve_until

    engine = create_engine_for(settings.effective_database_url)
    try:
        schema = status(engine)
    except Exception as exc:
        fail_unreachable(settings, exc)
    if not schema.is_current:
        raise UserError(
            f"the metastore schema is at {schema.current or 'nothing'}, not {schema.head}: "
            "run `hareflow db migrate`"
        )
    settings = settings.replace(secret_key=ensure_secret_key(settings))
    try:
        server = make_web_server(settings, sessions=make_session_factory(engine))
    except OSError as exc:
        raise UserError(
            f"cannot serve the web UI on {settings.web_host}:{settings.web_port}: {exc.strerror}"
        ) from None
    click.echo(f"hareflow web on http://{settings.web_host}:{server.server_port}/ (Ctrl-C stops)")
    stop, _ = stop_on_signals()
    serve_until(server, stop)


@click.command()
@click.argument("role", type=click.Choice(["scheduler", "results", "worker", "web"]))
@click.option(
    "--max-age",
    default=30.0,
    show_default=True,
    type=float,
    help="Oldest acceptable report, in seconds (processes report every 5 s).",
)
@click.option("--url", default=None, help="For web: the /health address (default the configured web port).")
@click.option("--json", "as_json", is_flag=True, help="Print the details as JSON.")
def health(role: str, max_age: float, url: str | None, as_json: bool) -> None:
    """Check that a long-running process on this machine is healthy: exit 0 if so, 1 if not.

    The scheduler, results consumer and worker keep a report fresh under $HAREFLOW_HOME/health
    (the scheduler finished a pass, the results consumer a cycle, the worker's heartbeat reached the
    broker), so the check needs neither the database nor the broker. For web it asks the server's
    /health and passes when the server answers and its database is reachable. Container
    healthchecks use it.

    \b
    Example:
      hareflow health worker && echo ok
    """
    import json
    import sys

    settings = get_settings()
    if role == "web":
        ok, message, details = _web_health(url or f"http://127.0.0.1:{settings.web_port}/health")
    else:
        from hareflow.common.health import check

        verdict = check(settings.home, role, max_age=max_age)
        ok, message, details = verdict.ok, verdict.message, {"processes": verdict.processes}
    if as_json:
        click.echo(json.dumps({"ok": ok, "message": message, **details}, default=str))
    else:
        click.echo(message)
    sys.exit(0 if ok else 1)


def _web_health(url: str) -> tuple[bool, str, dict[str, Any]]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - an operator's URL
            body = response.read()
    except urllib.error.HTTPError as exc:  # 503: the server answers but something it needs is down
        body = exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"web unhealthy: no answer from {url}: {reason}", {}
    try:
        report = json.loads(body)
    except ValueError:
        return False, f"web unhealthy: {url} did not answer with JSON", {}
    if not report.get("database", {}).get("ok"):
        return False, "web unhealthy: its metastore is unreachable", report
    notes = [k for k in ("broker", "scheduler") if not report.get(k, {}).get("ok")]
    suffix = f" (not ok: {', '.join(notes)})" if notes else ""
    return True, f"web healthy{suffix}", report
