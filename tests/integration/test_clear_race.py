"""Clearing a failed task at the moment the scheduler finishes its run, against a live scheduler on
PostgreSQL: a clear never leaves the run ``failed`` with the task at ``none``.

The scheduler holds each active run's row lock (``FOR UPDATE SKIP LOCKED``) while it decides the run
and commits its end; a clear locks the runs it touches (``FOR UPDATE``) before reading their task
instances. Either the clear waits and then sees the run finished (and requeues it), or it goes first
and the scheduler skips the run until the clear is committed; the run's end is also re-checked in
its UPDATE (no task instance unfinished). The loop fires each clear as soon as the failure is
recorded, after a seeded delay of 0-20 ms so that the clears sweep the scheduler's whole pass.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from hareflow.common.db import DagRun, TaskInstance
from hareflow.common.messages import StateEvent
from hareflow.common.operations import clear_task_instances
from sqlalchemy import select, update

from hareflow.cluster import Cluster, WorkerSpec
from tests.conftest import fast_settings
from tests.integration.conftest import wait_until

DAG_SOURCE = """
from datetime import datetime
from hareflow import DAG, task

with DAG("clear_race", schedule=None, start_date=datetime(2026, 1, 1)):

    @task
    def a():
        raise RuntimeError("fails fast, on purpose")

    a()
"""
CLEARS = 40


@pytest.mark.timeout(280)
def test_clearing_a_failed_task_while_the_scheduler_finishes_its_run_never_strands_the_run(
    postgres_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "clear_race.py").write_text(DAG_SOURCE)
    settings = fast_settings(
        tmp_path, database_url=postgres_url, dags_folder=str(folder), scheduler_idle_wait=0.5
    )
    rng = random.Random(4)
    stranded: list[int] = []
    cluster = Cluster(settings, workers=[WorkerSpec(concurrency=1)])
    cluster.migrate()
    with cluster:
        cluster.wait_for_dag("clear_race", timeout=60)
        run_id = cluster.trigger("clear_race")

        def failed_try() -> int | None:
            with cluster.sessions() as s:
                row = s.execute(
                    select(TaskInstance.state, TaskInstance.try_number).where(
                        TaskInstance.run_id == run_id, TaskInstance.task_id == "a"
                    )
                ).one_or_none()
            return row[1] if row is not None and row[0] == "failed" else None

        for attempt in range(1, CLEARS + 1):
            deadline = time.monotonic() + 60
            while failed_try() != attempt:  # the results consumer just recorded try N failing
                assert time.monotonic() < deadline, f"clear {attempt}: try {attempt} never failed"
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.02))
            with cluster.sessions() as s, s.begin():
                result = clear_task_instances(s, "clear_race", run_id=run_id, task_regex="^a$")
            assert [r.task_id for r in result.cleared] == ["a"], f"clear {attempt}: {result}"
            _wake(cluster, run_id)  # as `hareflow tasks clear` does
            # The task is picked up again, or the run is stranded (failed, the task at none: a state
            # nothing leaves). Watched until one or the other, as the scheduler may commit after the clear.
            outcome = wait_until(lambda: _outcome(cluster, run_id), timeout=30, message="the cleared task")
            if outcome == "stranded":
                stranded.append(attempt)
                # Requeue the run by hand so the loop goes on and counts every stranding.
                with cluster.sessions() as s, s.begin():
                    s.execute(update(DagRun).where(DagRun.run_id == run_id).values(state="queued"))
                _wake(cluster, run_id)
        wait_until(lambda: failed_try() == CLEARS + 1, timeout=60, message="the last cleared try to fail")
        assert cluster.wait_for_run("clear_race", run_id, timeout=60) == "failed"
    assert not stranded, f"{len(stranded)} of {CLEARS} clears left the run failed with a at none: {stranded}"


def _outcome(cluster: Cluster, run_id: str) -> str | None:
    with cluster.sessions() as s:
        run_state = s.scalar(select(DagRun.state).where(DagRun.run_id == run_id))
        ti_state = s.scalar(select(TaskInstance.state).where(TaskInstance.run_id == run_id))
    if ti_state != "none":
        return "picked up"
    return "stranded" if run_state == "failed" else None


def _wake(cluster: Cluster, run_id: str) -> None:
    event = StateEvent(kind="run", dag_id="clear_race", run_id=run_id, state="queued", at=time.time())
    cluster.executor.publish_events([event])
