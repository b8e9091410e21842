"""The broker goes away mid-run and comes back: every component reconnects and the run finishes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hareflow.cluster import WorkerSpec
from tests.fault.conftest import (
    describe_tis,
    fault_settings,
    run_states,
    running_cluster,
    wait_for,
    wait_for_run,
)
from tests.fault.report import executions, record_fault

pytestmark = pytest.mark.fault

PARTS = 20
DAG_SOURCE = f"""
    import os
    import time
    from datetime import datetime
    from pathlib import Path

    from hareflow import DAG, task

    MARKERS = Path(__file__).resolve().parent.parent / "markers"

    with DAG("fault_broker_restart", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
             max_active_tasks=32):

        @task
        def start():
            return 7

        @task
        def part(seed, index):
            (MARKERS / f"part-{{index}}-{{os.getpid()}}-{{time.time_ns()}}").touch()
            print(f"part {{index}} working", flush=True)
            time.sleep(1.0)
            return seed + index

        @task
        def join(*values):
            return sum(values)

        seed = start()
        join(*[part(seed, i) for i in range({PARTS})])
"""


def _connection_names(node) -> list[str]:
    return node.ctl("-q", "list_connections", "client_properties").stdout.split("\n")


@pytest.mark.parametrize("outage", ["stop_app", "full_restart", "connections_closed"])
def test_a_run_survives_the_broker_going_away_and_coming_back(
    outage: str, private_rabbitmq, postgres_url, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path
) -> None:
    write_dag("restart.py", DAG_SOURCE)
    markers = tmp_path / "markers"
    markers.mkdir()
    settings = fault_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=private_rabbitmq.url,
        prefix=broker_prefix,
        dags=dags_folder,
    )
    workers = [WorkerSpec(concurrency=4, name=f"{outage}-w{i}") for i in (1, 2)]
    with running_cluster(settings, workers) as cluster:
        cluster.wait_for_dag("fault_broker_restart", timeout=60)
        run_id = cluster.trigger("fault_broker_restart")

        def parts_in_flight() -> bool:
            _, tis = run_states(cluster, "fault_broker_restart", run_id)
            states = [ti.state for t, ti in tis.items() if t.startswith("part")]
            return states.count("success") >= 2 and states.count("running") >= 2

        wait_for(parts_in_flight, timeout=90, what="some parts done and some running", interval=0.05)
        _, before = run_states(cluster, "fault_broker_restart", run_id)
        assert before["join"].state in ("none", "scheduled"), "the outage must come before the run's end"
        if outage == "stop_app":
            private_rabbitmq.stop_app()
            time.sleep(3)  # the outage itself: tasks finish and try to report meanwhile
            private_rabbitmq.start_app()
        elif outage == "full_restart":
            private_rabbitmq.restart()  # the node's OS process ends; booting again takes seconds
        else:
            private_rabbitmq.close_all_connections("fault test: connections dropped")
        back = time.monotonic()

        assert wait_for_run(cluster, "fault_broker_restart", run_id, timeout=180) == "success"
        recovery = time.monotonic() - back
        _, tis = run_states(cluster, "fault_broker_restart", run_id)
        ran = executions(markers)
        record_fault(
            {
                "stop_app": "RabbitMQ stop_app for 3 s, tasks running",
                "full_restart": "RabbitMQ full restart, tasks running",
                "connections_closed": "RabbitMQ closes every connection",
            }[outage],
            tasks=PARTS,
            lost=PARTS - len(ran),
            more_than_once=sum(1 for n in ran.values() if n > 1),
            recovery_s=round(recovery, 2),
        )
        assert len(tis) == PARTS + 2
        assert all(ti.state == "success" for ti in tis.values()), describe_tis(tis)
        assert all(ti.try_number == 1 for ti in tis.values()), describe_tis(tis)
        with cluster.sessions() as session:
            from hareflow.common.db import TaskResult
            from sqlalchemy import select

            join_value = session.scalar(
                select(TaskResult.value_json).where(TaskResult.ti_id == tis["join"].id)
            )
        assert join_value == str(sum(7 + i for i in range(PARTS)))
        # The scheduler's connection and both workers' connections are back.
        names = " ".join(_connection_names(private_rabbitmq))
        assert names.count("hareflow-scheduler@") == 1, names
        assert names.count("hareflow-worker@") == 2, names


def test_the_executor_says_when_its_connection_is_down_and_up_again(private_rabbitmq) -> None:
    """What the worker's health check relies on: a publish without confirms raises nothing on a dead
    connection, so the executor must say itself whether the link is up."""
    from hareflow.common.broker.rabbitmq import RabbitMQExecutor
    from hareflow.common.config import load_settings

    settings = load_settings(
        env={}, overrides={"broker_url": private_rabbitmq.url, "broker_prefix": "hf-conn"}
    )
    executor = RabbitMQExecutor(settings, connection_name="hareflow-connection-test")
    executor.start(timeout=30)
    try:
        assert executor.is_connected()
        private_rabbitmq.stop_app()
        try:
            wait_for(
                lambda: not executor.is_connected(), timeout=30, what="the executor to notice the broker left"
            )
        finally:
            private_rabbitmq.start_app()
        wait_for(executor.is_connected, timeout=60, what="the executor to reconnect")
    finally:
        executor.close()
