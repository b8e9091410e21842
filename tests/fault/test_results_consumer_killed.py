"""The results consumer is SIGKILLed mid-run and started again later. It acks a result only after
committing it, so whatever it had taken but not committed is redelivered to its successor, and
results published meanwhile wait in RabbitMQ: every state lands once, nothing is lost or re-run.

Real processes throughout: ``hareflow scheduler`` (without its in-process consumer), ``hareflow
results``, two ``hareflow worker``, on the shared RabbitMQ and PostgreSQL (nothing shared is
stopped: only our own processes are killed).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from hareflow.common.broker.topology import Topology
from hareflow.common.db import TaskInstance, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.common.runs import trigger_run
from sqlalchemy import select

from tests.fault.conftest import (
    amqp_channel,
    control_environment,
    start_worker_process,
    wait_dag_active,
    wait_for,
    wait_run_finished,
)
from tests.fault.report import executions, record_fault

pytestmark = pytest.mark.fault

PARTS = 60
DAG_SOURCE = """
import os, time
from pathlib import Path
from hareflow import DAG, task

MARKERS = Path(@MARKERS@)

with DAG("results_killed", max_active_tasks=100):
    @task
    def start():
        return 1

    @task
    def part(i, _):
        (MARKERS / f"part-{i}-{os.getpid()}-{time.time_ns()}").touch()
        time.sleep(0.3)
        return i

    @task
    def join(*values):
        return sum(values)

    first = start()
    join(*[part(i, first) for i in range(@PARTS@)])
"""


def test_a_killed_results_consumer_loses_nothing_and_its_successor_records_every_state_once(
    rabbitmq_url: str, postgres_url: str, broker_prefix: str, tmp_path: Path, control_processes
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    markers = tmp_path / "markers"
    markers.mkdir()
    source = DAG_SOURCE.replace("@MARKERS@", repr(str(markers))).replace("@PARTS@", str(PARTS))
    (dags / "results_killed.py").write_text(source)
    engine = create_engine_for(postgres_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    env = control_environment(
        HAREFLOW_HOME=str(tmp_path / "home"),
        HAREFLOW_DATABASE_URL=postgres_url,
        HAREFLOW_BROKER_URL=rabbitmq_url,
        HAREFLOW_BROKER_PREFIX=broker_prefix,
        HAREFLOW_DAGS_FOLDER=str(dags),
        HAREFLOW_SCHEDULER_IDLE_WAIT="0.2",
        HAREFLOW_HEARTBEAT_INTERVAL="0.5",
        HAREFLOW_DAGS_ARE_PAUSED_AT_CREATION="false",
        HAREFLOW_RUN_RESULTS_CONSUMER="false",
    )
    results_queue = Topology(prefix=broker_prefix).results_queue
    workers = [
        start_worker_process(
            f"rk-w{i}",
            broker_url=rabbitmq_url,
            prefix=broker_prefix,
            dags=dags,
            log_dir=tmp_path,
            concurrency=4,
        )
        for i in (1, 2)
    ]
    try:
        control_processes("scheduler", env)
        consumer = control_processes("results", env, "results-1")

        wait_dag_active(sessions, "results_killed")
        with sessions() as session, session.begin():
            run_id = trigger_run(session, "results_killed", triggered_by="test").run_id

        wait_for(
            lambda: len(list(markers.iterdir())) >= PARTS // 4, timeout=120, what="a quarter of the parts"
        )
        os.killpg(consumer.pid, signal.SIGKILL)
        consumer.wait(timeout=30)
        wait_for(lambda: len(list(markers.iterdir())) >= PARTS, timeout=120, what="every part run meanwhile")
        with amqp_channel(rabbitmq_url) as ch:
            waiting = ch.queue_declare(results_queue, passive=True).method.message_count
        control_processes("results", env, "results-2")
        back = time.monotonic()

        state = wait_run_finished(sessions, run_id, timeout=120)
        recovery = time.monotonic() - back
        ran = executions(markers)
        figures = record_fault(
            "results consumer SIGKILL, restarted after the tasks ran",
            tasks=PARTS,
            lost=PARTS - len(ran),
            more_than_once=sum(1 for n in ran.values() if n > 1),
            results_waiting_in_broker=waiting,
            recovery_s=round(recovery, 2),
        )
        with sessions() as session:
            tis = {
                ti.task_id: ti
                for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id))
            }
        assert state == "success", {t: (ti.state, ti.try_number, ti.error) for t, ti in tis.items()}
        assert figures["lost"] == 0 and figures["executed_more_than_once"] == 0, figures
        assert {(ti.state, ti.try_number) for ti in tis.values()} == {("success", 1)}
        assert waiting > 0, "results published while no consumer ran waited in the broker"
    finally:
        for worker in workers:
            worker.stop()
        engine.dispose()
