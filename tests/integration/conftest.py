"""Fixtures for the integration tests: a whole hareflow system (scheduler + workers) on real services.

``system`` is parametrised over the executor (and, for a few tests, the database). It is handed out
*not yet started*, so each test writes its DAG files first and then starts the cluster with the
workers it wants; the finalizer stops whatever was started, even when the test fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hareflow.common.config import Settings
from hareflow.common.db import DagRun, TaskInstance, TaskLog, TaskResult
from sqlalchemy import select

from hareflow.cluster import Cluster, WorkerSpec
from tests.conftest import fast_settings
from tests.integration.worker_runtime import runtime_for  # noqa: F401 - a fixture for worker tests

T = TypeVar("T")

#: (database, executor) for each ``system`` parameter.
SYSTEMS: dict[str, tuple[str, str]] = {
    "local": ("postgresql", "local"),
    "rabbitmq": ("postgresql", "rabbitmq"),
    "sqlite-local": ("sqlite", "local"),
    "mariadb-rabbitmq": ("mysql", "rabbitmq"),
}
DATABASE_FIXTURES = {"postgresql": "postgres_url", "sqlite": "sqlite_url", "mysql": "mysql_url"}


def wait_until(
    condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy; return that, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message} (last value: {last!r})")
        time.sleep(interval)


@dataclass
class System:
    """One hareflow system under test: settings, a cluster (once started) and metastore helpers."""

    settings: Settings
    database: str
    executor: str
    cluster: Cluster | None = None
    _stopped: bool = field(default=False, repr=False)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, workers: list[WorkerSpec] | None = None, **setting_changes: Any) -> Cluster:
        """Migrate the metastore and start the scheduler and ``workers`` (one default worker)."""
        assert self.cluster is None, "start() once per test"
        if setting_changes:
            self.settings = self.settings.replace(**setting_changes)
        self.cluster = Cluster(self.settings, workers=workers or [WorkerSpec()])
        self.cluster.migrate()
        self.cluster.start()
        return self.cluster

    def stop(self) -> None:
        if self.cluster is not None and not self._stopped:
            self._stopped = True
            self.cluster.stop()

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None, "call system.start() first"
        return self.cluster

    # -- runs ------------------------------------------------------------------------------------

    def run_dag(
        self, dag_id: str, *, conf: dict[str, Any] | None = None, timeout: float = 60.0
    ) -> tuple[str, str]:
        """Trigger a manual run and wait for it to finish; return ``(run_id, final state)``."""
        self.c.wait_for_dag(dag_id)
        run_id = self.c.trigger(dag_id, conf=conf)
        return run_id, self.c.wait_for_run(dag_id, run_id, timeout=timeout)

    def runs(self, dag_id: str) -> list[DagRun]:
        with self.c.sessions() as session:
            return list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id)))

    def tis(self, dag_id: str, run_id: str) -> dict[str, TaskInstance]:
        """Task instances of one run, by task id."""
        with self.c.sessions() as session:
            rows = session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            )
            return {ti.task_id: ti for ti in rows}

    def result(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """The stored return value of a task's latest try (fails if none is stored)."""
        with self.c.sessions() as session:
            row = session.execute(
                select(TaskResult.value_json)
                .join(TaskInstance, TaskInstance.id == TaskResult.ti_id)
                .where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == task_id,
                    TaskResult.try_number == TaskInstance.try_number,
                )
            ).one_or_none()
        assert row is not None, f"no result stored for {dag_id}/{run_id}/{task_id}"
        return json.loads(row[0])

    def log_text(self, dag_id: str, run_id: str, task_id: str) -> str:
        """Every stored log chunk of a task instance, all tries, in order."""
        with self.c.sessions() as session:
            rows = session.scalars(
                select(TaskLog.text)
                .join(TaskInstance, TaskInstance.id == TaskLog.ti_id)
                .where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == task_id,
                )
                .order_by(TaskLog.try_number, TaskLog.seq)
            )
            return "".join(rows)


@pytest.fixture(params=["local", "rabbitmq"])
def system(
    request: pytest.FixtureRequest, tmp_path: Path, dags_folder: Path, broker_prefix: str
) -> Iterator[System]:
    """A hareflow system, not started yet. The parameter picks the executor (and the database)."""
    database, executor = SYSTEMS[request.param]
    database_url = request.getfixturevalue(DATABASE_FIXTURES[database])
    broker_url = request.getfixturevalue("rabbitmq_url") if executor == "rabbitmq" else ""
    settings = fast_settings(
        tmp_path,
        database_url=database_url,
        broker_url=broker_url,
        broker_prefix=broker_prefix,
        dags_folder=str(dags_folder),
    )
    assert settings.effective_executor == executor
    sut = System(settings=settings, database=database, executor=executor)
    try:
        yield sut
    finally:
        sut.stop()
