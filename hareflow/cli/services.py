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

access_log_option = click.option(
    "--access-log", is_flag=True, help="Log one line per HTTP request to stdout (off by default)."
)


def _bind(settings: Any) -> Any:
    """The web UI's listening socket, bound before anything else is done (a taken port is the
    likeliest start-up mistake: report it before migrating or creating anything)."""
    from hareflow.web.production import bind_listener

    try:
        return bind_listener(settings.web_host, settings.web_port)
    except OSError as exc:
        raise UserError(
            f"cannot serve the web UI on {settings.web_host}:{settings.web_port}: {exc.strerror or exc}"
        ) from None


@click.command()
@click.option("--host", default=None, help="Address for the web UI (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port for the web UI (default 8080).")
@click.option("--concurrency", default=None, type=int, help="Task slots of the embedded worker.")
@access_log_option
@log_level_option
def standalone(
    host: str | None, port: int | None, concurrency: int | None, access_log: bool, log_level: str | None
) -> None:
    """Run everything on one machine: metastore migration, scheduler, results, a local worker and
    the web UI, in one command.

    Uses SQLite in $HAREFLOW_HOME (default ~/hareflow) and the embedded local executor unless a
    database or broker URL is configured. Ctrl-C stops it (twice: at once).

    \b
    Example:
      HAREFLOW_HOME=/tmp/hf hareflow standalone --concurrency 8
    """
    import sys

    settings = get_settings(web_host=host, web_port=port, log_level=log_level)
    setup_logging(settings.log_level)
    from hareflow.cli import first_run

    listener = _bind(settings)
    restore_logging = first_run.quiet_start(settings.log_level)
    settings.home.mkdir(parents=True, exist_ok=True)
    settings, dags_folder = first_run.prepare_dags_folder(settings)
    password = _migrate_and_create_admin(settings)
    from hareflow.web.security import ensure_secret_key

    settings = settings.replace(secret_key=ensure_secret_key(settings))
    if not settings.fernet_key:  # connections and variables are encrypted with <home>/fernet.key
        from hareflow.common.secrets.crypto import ensure_key_file

        ensure_key_file(settings.home)
    url = f"http://{settings.web_host}:{listener.getsockname()[1]}/"
    sys.exit(
        _serve_standalone(
            settings,
            listener,
            concurrency=concurrency or settings.worker_concurrency,
            access_log=access_log,
            first_screen=lambda unpaused: first_run.first_screen(
                url,
                dags_folder,
                password=password,
                metastore=_masked_url(settings),
                executor=settings.effective_executor,
                unpaused=unpaused,
            ),
            restore_logging=restore_logging,
        )
    )


def _masked_url(settings: Any) -> str:
    from hareflow.common.config import mask_url

    return str(mask_url(settings.effective_database_url))


def _migrate_and_create_admin(settings: Any) -> str | None:
    """Migrate the metastore and create the first admin (its password, or None when users exist).
    Done in the main process with an engine of its own, disposed before the server forks."""
    from hareflow.cli import first_run
    from hareflow.common.db import create_engine_for, make_session_factory
    from hareflow.common.db.migrate import migrate

    engine = create_engine_for(settings.effective_database_url)
    try:
        migrate(engine)
        return first_run.create_first_admin(make_session_factory(engine))
    except Exception as exc:
        fail_unreachable(settings, exc)
    finally:
        engine.dispose()


def _serve_standalone(
    settings: Any,
    listener: Any,
    *,
    concurrency: int,
    access_log: bool,
    first_screen: Any,
    restore_logging: Any,
) -> int:
    """Serve the UI with the whole cluster inside the web server's worker process: the local
    executor's events then reach the pages without a broker."""
    from hareflow.cli import first_run
    from hareflow.cluster import Cluster, WorkerSpec
    from hareflow.web import create_app
    from hareflow.web.production import serve

    running: list[Cluster] = []
    unpaused: list[str] = []

    def build_app() -> Any:
        cluster = Cluster(settings, workers=[WorkerSpec(concurrency=concurrency)])
        running.append(cluster)
        cluster.start()
        unpaused.extend(first_run.unpause_copied_examples(cluster.sessions, settings.home))
        return create_app(settings, sessions=cluster.sessions, executor=cluster.executor)

    def on_ready() -> None:
        first_run.show_first_screen(first_screen(unpaused), restore_logging)

    def on_exit(immediate: threading.Event) -> None:
        def stop_now() -> None:
            immediate.wait()
            for cluster in running:
                for w in cluster.workers:
                    for ref in w.ref:
                        ref.request_stop(immediate=True)

        threading.Thread(target=stop_now, name="hareflow-stop-now", daemon=True).start()
        for cluster in running:
            cluster.stop()

    return serve(settings, listener, build_app, access_log=access_log, on_ready=on_ready, on_exit=on_exit)


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
@access_log_option
@log_level_option
def web(host: str | None, port: int | None, access_log: bool, log_level: str | None) -> None:
    """Run the web UI and REST API (login required; see docs/web.md) with gunicorn: one process of
    web_threads threads. Needs a migrated metastore.

    \b
    Example:
      hareflow web --host 0.0.0.0 --port 8080 --access-log
    """
    import sys

    settings = get_settings(web_host=host, web_port=port, log_level=log_level)
    setup_logging(settings.log_level)
    from hareflow.common.db import create_engine_for
    from hareflow.common.db.migrate import status
    from hareflow.web import create_app
    from hareflow.web.production import serve
    from hareflow.web.security import ensure_secret_key

    listener = _bind(settings)
    engine = create_engine_for(settings.effective_database_url)
    try:
        schema = status(engine)
    except Exception as exc:
        fail_unreachable(settings, exc)
    finally:
        engine.dispose()  # the server's process opens its own after the fork
    if not schema.is_current:
        raise UserError(
            f"the metastore schema is at {schema.current or 'nothing'}, not {schema.head}: "
            "run `hareflow db migrate`"
        )
    settings = settings.replace(secret_key=ensure_secret_key(settings))
    click.echo(f"hareflow web on http://{settings.web_host}:{listener.getsockname()[1]}/ (Ctrl-C stops)")
    sys.exit(serve(settings, listener, lambda: create_app(settings), access_log=access_log))


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
