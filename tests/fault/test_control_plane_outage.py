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

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hareflow.common.db import DagRun, TaskInstance, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from sqlalchemy import select

from tests.fault.conftest import (
    control_environment,
    start_worker_process,
    wait_dag_active,
    wait_for,
    wait_run_finished,
)
from tests.fault.report import executions, record_fault

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


def _states(sessions, run_id: str) -> dict[str, TaskInstance]:
    with sessions() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == "control_plane_outage", TaskInstance.run_id == run_id
            )
        )
        return {ti.task_id: ti for ti in rows}


@pytest.mark.timeout(OUTAGE + 400)
def test_with_the_database_and_the_scheduler_down_workers_finish_every_task_and_every_state_lands_once(
    private_rabbitmq, private_postgres, broker_prefix, tmp_path: Path, control_processes
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    markers = tmp_path / "markers"
    markers.mkdir()
    (dags / "outage.py").write_text(DAG_SOURCE.replace("@MARKERS@", repr(str(markers))))
    engine = create_engine_for(private_postgres.url)
    migrate(engine)
    sessions = make_session_factory(engine)
    control = control_environment(
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
        return control_processes("scheduler", control, f"scheduler-{n}")

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

        wait_dag_active(sessions, "control_plane_outage", unpause=True)
        with sessions() as session, session.begin():
            run_id = trigger_run(session, "control_plane_outage", triggered_by="test").run_id

        def all_parts_dispatched() -> bool:
            # Queued is not enough: the scheduler commits queued, then publishes. Wait until the
            # broker has confirmed every part's message (or a worker has started it).
            tis = _states(sessions, run_id)
            parts = [ti for t, ti in tis.items() if t.startswith("part")]
            return len(parts) == TASKS and all(
                ti.state in ("running", "success") or (ti.state == "queued" and ti.confirmed_at is not None)
                for ti in parts
            )

        wait_for(all_parts_dispatched, timeout=120, what="every part's message confirmed", interval=0.05)
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

        wait_run_finished(sessions, run_id, timeout=300)
        recovery = time.monotonic() - back

        with sessions() as session:
            state = session.scalar(select(DagRun.state).where(DagRun.run_id == run_id))
        tis = _states(sessions, run_id)
        ran = executions(markers)
        figures = record_fault(
            "PostgreSQL crash + scheduler SIGKILL, 5 min, tasks running",
            tasks=TASKS,
            lost=TASKS - len(ran),
            more_than_once=sum(1 for n in ran.values() if n > 1),
            outage_s=OUTAGE,
            results_waiting_in_broker=depth_during,
            recovery_s=round(recovery, 2),
        )
        assert state == "success", {t: (ti.state, ti.try_number, ti.error) for t, ti in tis.items()}
        assert figures["lost"] == 0 and figures["executed_more_than_once"] == 0, figures
        assert all(ti.state == "success" and ti.try_number == 1 for ti in tis.values())
        assert depth_during > 0  # the results really did wait in the broker
    finally:
        for worker in workers:
            worker.stop()
        engine.dispose()
