"""Wiring for the long-running worker process. Needs the broker URL and DAG files, no database."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from hareflow.common.broker import Executor, make_executor
from hareflow.common.config import Settings
from hareflow.common.dag.loader import add_dags_folder_to_path
from hareflow.common.health import HealthReporter, progress_probe
from hareflow.common.metrics import start_exporter
from hareflow.worker.runtime import Worker, default_identity


def build_worker(
    settings: Settings,
    *,
    queues: Sequence[str] | None = None,
    concurrency: int | None = None,
    name: str | None = None,
    executor: Executor | None = None,
) -> tuple[Worker, Executor, bool]:
    own = executor is None
    executor = executor or make_executor(settings, connection_name="hareflow-worker")
    queue_list = list(queues or [q.strip() for q in settings.worker_queues.split(",") if q.strip()])
    worker = Worker(
        executor=executor,
        settings=settings,
        queues=queue_list,
        concurrency=concurrency or settings.worker_concurrency,
        identity=default_identity(name, settings.hostname or None),
    )
    return worker, executor, own


def run_worker(
    settings: Settings,
    stop: threading.Event,
    *,
    queues: Sequence[str] | None = None,
    concurrency: int | None = None,
    name: str | None = None,
    executor: Executor | None = None,
    worker_ref: list[Worker] | None = None,
) -> None:
    worker, executor, own = build_worker(
        settings, queues=queues, concurrency=concurrency, name=name, executor=executor
    )
    if worker_ref is not None:
        worker_ref.append(worker)
    # Before the pool starts: its children inherit sys.path, so helper modules beside the DAGs import.
    add_dags_folder_to_path(settings.effective_dags_folder())
    worker.start_pool()
    if own:
        executor.start()
    worker.start()
    # Heartbeats go out every heartbeat_interval; three missed in a row: the broker is out of reach.
    limit = max(30.0, 3 * settings.heartbeat_interval)
    reporter = HealthReporter(
        settings.home,
        "worker",
        progress_probe(lambda: worker.last_heartbeat_sent, limit, "heartbeat reached the broker"),
    ).start()
    exporter = start_exporter(settings)
    try:
        worker.run(stop)
    finally:
        exporter.close()
        reporter.stop()
        if own:
            executor.close()
