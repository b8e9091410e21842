"""The whole control plane goes away while tasks run: PostgreSQL crashes and the scheduler (with its
results consumer) is SIGKILLed, for ``HAREFLOW_FAULT_OUTAGE`` seconds (300 by default). Workers need
neither: they finish every task they hold and every task still queued, their results wait in
RabbitMQ, and when the control plane returns every state lands once: nothing lost, nothing run twice,
no worker taken for lost because its heartbeats were waiting in the queue.

Everything runs as real processes (``hareflow scheduler``, two ``hareflow worker``) against a private
PostgreSQL cluster and a private RabbitMQ node. The measured figures are appended as a JSON line to
``$HAREFLOW_FAULT_REPORT`` when it is set (docs/reliability.md records them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hareflow.common.db import DagRun, TaskInstance, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from sqlalchemy import select

from tests.fault.conftest import start_worker_process, wait_for

pytestmark = pytest.mark.fault

TASKS = 100
OUTAGE = float(os.environ.get("HAREFLOW_FAULT_OUTAGE", "300"))
TASK_SECONDS = 6.0
DAG_SOURCE = f"""
import os, time
from pathlib import Path
from hareflow import DAG, task

MARKERS = Path(@MARKERS@)

with DAG("control_plane_outage", max_active_tasks=200):
    @task
    def start():
        return 1

    @task
    def part(i, _):
        (MARKERS / f"part-{{i}}-{{os.getpid()}}-{{time.time_ns()}}").touch()
        time.sleep({TASK_SECONDS})
        return i

    @task
    def join(*values):
        return sum(values)

    first = start()
    join(*[part(i, first) for i in range({TASKS})])
"""


def _environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    env.update(values)
    return env


def _states(sessions, run_id: str) -> dict[str, TaskInstance]:
    with sessions() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == "control_plane_outage", TaskInstance.run_id == run_id
            )
        )
        return {ti.task_id: ti for ti in rows}


@pytest.fixture
def scheduler_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.timeout(OUTAGE + 400)
def test_with_the_database_and_the_scheduler_down_workers_finish_every_task_and_every_state_lands_once(
    private_rabbitmq, private_postgres, broker_prefix, tmp_path: Path, scheduler_processes
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    markers = tmp_path / "markers"
    markers.mkdir()
    (dags / "outage.py").write_text(DAG_SOURCE.replace("@MARKERS@", repr(str(markers))))
    engine = create_engine_for(private_postgres.url)
    migrate(engine)
    sessions = make_session_factory(engine)
    control = _environment(
        HAREFLOW_HOME=str(tmp_path / "scheduler-home"),
        HAREFLOW_DATABASE_URL=private_postgres.url,
        HAREFLOW_BROKER_URL=private_rabbitmq.url,
        HAREFLOW_BROKER_PREFIX=broker_prefix,
        HAREFLOW_DAGS_FOLDER=str(dags),
        HAREFLOW_SCHEDULER_IDLE_WAIT="0.2",
        HAREFLOW_HEARTBEAT_INTERVAL="0.5",
        HAREFLOW_WORKER_TIMEOUT="20",  # far shorter than the outage: heartbeats wait in the queue too
    )

    def start_scheduler(n: int) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"scheduler-{n}.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from hareflow.cli import main; main()", "scheduler"],
                env=control,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(tmp_path),
            )
        scheduler_processes.append(proc)
        return proc

    workers = [
        start_worker_process(
            f"outage-w{i}",
            broker_url=private_rabbitmq.url,
            prefix=broker_prefix,
            dags=dags,
            log_dir=tmp_path,
            concurrency=10,
        )
        for i in (1, 2)
    ]
    try:
        scheduler = start_scheduler(1)
        from hareflow.common.runs import trigger_run

        def dag_loaded() -> bool:
            from hareflow.common.db import Dag

            with sessions() as session:
                dag = session.get(Dag, "control_plane_outage")
                if dag is not None and dag.is_paused:
                    dag.is_paused = False
                    session.commit()
                return dag is not None and dag.is_active

        wait_for(dag_loaded, timeout=90, what="the DAG parsed")
        with sessions() as session, session.begin():
            run_id = trigger_run(session, "control_plane_outage", triggered_by="test").run_id

        def all_parts_dispatched() -> bool:
            tis = _states(sessions, run_id)
            parts = [ti for t, ti in tis.items() if t.startswith("part")]
            return len(parts) == TASKS and all(ti.state in ("queued", "running", "success") for ti in parts)

        wait_for(all_parts_dispatched, timeout=120, what="every part dispatched", interval=0.05)
        outage_started = time.monotonic()
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait(timeout=30)
        private_postgres.stop("immediate")
        # The workers go on: every part runs (markers are written by the tasks themselves).
        wait_for(
            lambda: len(list(markers.iterdir())) >= TASKS,
            timeout=max(OUTAGE, 300),
            what="every part started by a worker during the outage",
        )
        results_queue = f"{broker_prefix}.results"
        depth_during = sum(private_rabbitmq.queue_depths().get(results_queue, (0, 0)))
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - outage_started)))
        private_postgres.start()
        start_scheduler(2)
        back = time.monotonic()

        def finished() -> bool:
            with sessions() as session:
                return session.scalar(select(DagRun.state).where(DagRun.run_id == run_id)) in (
                    "success",
                    "failed",
                )

        wait_for(
            finished, timeout=300, what="the run finished after the control plane came back", interval=0.1
        )
        recovery = time.monotonic() - back

        with sessions() as session:
            state = session.scalar(select(DagRun.state).where(DagRun.run_id == run_id))
        tis = _states(sessions, run_id)
        executions: dict[str, int] = {}
        for marker in markers.iterdir():
            key = marker.name.split("-")[1]
            executions[key] = executions.get(key, 0) + 1
        lost = TASKS - len(executions)
        twice = sum(1 for n in executions.values() if n > 1)
        figures = {
            "scenario": "postgres crash + scheduler SIGKILL",
            "outage_s": OUTAGE,
            "tasks": TASKS,
            "lost": lost,
            "executed_more_than_once": twice,
            "results_waiting_in_broker": depth_during,
            "recovery_s": round(recovery, 2),
        }
        if os.environ.get("HAREFLOW_FAULT_REPORT"):
            with open(os.environ["HAREFLOW_FAULT_REPORT"], "a") as report:
                report.write(json.dumps(figures) + "\n")
        assert state == "success", {t: (ti.state, ti.try_number, ti.error) for t, ti in tis.items()}
        assert lost == 0 and twice == 0, figures
        assert all(ti.state == "success" and ti.try_number == 1 for ti in tis.values())
        assert depth_during > 0  # the results really did wait in the broker
    finally:
        for worker in workers:
            worker.stop()
        engine.dispose()
