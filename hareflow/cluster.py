"""Run a whole hareflow system inside one process: the scheduler (with DAG processing and the
results consumer) plus any number of workers. ``hareflow standalone`` is this with one local
worker; tests and benchmarks use it with either executor.

With the local executor everything shares one in-process executor. With RabbitMQ each component
gets its own connection, exactly as separate processes would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    queues: Sequence[str] = ("default",)
    concurrency: int = 4
    name: str | None = None
    hostname: str | None = None


@dataclass
class _RunningWorker:
    spec: WorkerSpec
    stop: threading.Event
    thread: threading.Thread
    ref: list[Any] = field(default_factory=list)


class Cluster:
    def __init__(self, settings: Any, *, workers: Sequence[WorkerSpec] = (WorkerSpec(),)) -> None:
        from hareflow.common.broker import make_executor
        from hareflow.common.db import create_engine_for, make_session_factory

        self.settings = settings
        self.engine = create_engine_for(settings.effective_database_url)
        self.sessions = make_session_factory(self.engine)
        self._shared = None
        if settings.effective_executor == "local":
            self._shared = make_executor(settings)
        self._initial = list(workers)
        self._stop = threading.Event()
        self._sched_thread: threading.Thread | None = None
        self.workers: list[_RunningWorker] = []
        self._make_executor = make_executor
        self._notify: Any = None

    @property
    def executor(self) -> Any:
        """The in-process executor shared by every component (local executor only; else None)."""
        return self._shared

    @property
    def executor_name(self) -> str:
        return self.settings.effective_executor

    def migrate(self) -> None:
        from hareflow.common.db.migrate import migrate

        migrate(self.engine)

    def start(self, timeout: float = 60.0) -> Cluster:
        from hareflow.scheduler.service import run_scheduler

        if self._shared is not None:
            self._shared.start()
        ready = threading.Event()
        self._sched_thread = threading.Thread(
            target=run_scheduler,
            args=(self.settings, self._stop),
            kwargs={"executor": self._shared, "sessions": self.sessions, "ready": ready},
            name="hareflow-scheduler",
            daemon=True,
        )
        self._sched_thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the scheduler did not start")
        for spec in self._initial:
            self.add_worker(spec)
        return self

    def add_worker(self, spec: WorkerSpec, timeout: float = 30.0) -> _RunningWorker:
        from hareflow.worker.service import run_worker

        stop = threading.Event()
        settings = self.settings.replace(hostname=spec.hostname) if spec.hostname else self.settings
        ref: list[Any] = []
        thread = threading.Thread(
            target=run_worker,
            args=(settings, stop),
            kwargs={
                "queues": list(spec.queues),
                "concurrency": spec.concurrency,
                "name": spec.name,
                "executor": self._shared,
                "worker_ref": ref,
            },
            name=f"hareflow-worker-{spec.name or len(self.workers)}",
            daemon=True,
        )
        thread.start()
        running = _RunningWorker(spec, stop, thread, ref)
        self.workers.append(running)
        deadline = time.monotonic() + timeout
        while not ref and time.monotonic() < deadline:
            time.sleep(0.01)
        return running

    def stop(self, timeout: float = 30.0) -> None:
        for w in self.workers:
            w.stop.set()
        for w in self.workers:
            w.thread.join(timeout)
        self._stop.set()
        if self._sched_thread is not None:
            self._sched_thread.join(timeout)
        if self._shared is not None:
            self._shared.close()
        if self._notify is not None:
            self._notify.close()
        self.engine.dispose()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- conveniences for scripts and tests ---------------------------------------------------------

    def wait_for_dag(self, dag_id: str, timeout: float = 30.0) -> None:
        from hareflow.common.db import Dag

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.sessions() as session:
                dag = session.get(Dag, dag_id)
                if dag is not None and dag.is_active:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"DAG {dag_id!r} was not loaded within {timeout}s")

    def trigger(self, dag_id: str, *, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        from hareflow.common.messages import StateEvent
        from hareflow.common.runs import trigger_run

        with self.sessions() as session, session.begin():
            run = trigger_run(session, dag_id, conf=conf, run_id=run_id, triggered_by="cluster")
            created = run.run_id
        self._notifier().publish_events(
            [StateEvent(kind="run", dag_id=dag_id, run_id=created, state="queued", at=time.time())]
        )
        return created

    def _notifier(self) -> Any:
        """Where wake-up events go: the shared executor, or a connection of our own to the broker."""
        if self._shared is not None:
            return self._shared
        if self._notify is None:
            self._notify = self._make_executor(self.settings, connection_name="hareflow-cluster")
            self._notify.start()
        return self._notify

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 60.0) -> str:
        """Wait until the run finishes; return its state."""
        from sqlalchemy import select

        from hareflow.common.db import DagRun

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.sessions() as session:
                state = session.scalar(
                    select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
                )
            if state in ("success", "failed"):
                return state
            time.sleep(0.02)
        raise TimeoutError(f"run {dag_id}/{run_id} did not finish within {timeout}s (last state {state})")
