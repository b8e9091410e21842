"""Duplicate and stale worker reports change nothing: redelivery is safe for the metastore."""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pytest
from hareflow.common.broker.topology import Topology
from hareflow.common.db import DeadLetter, TaskInstance, TaskLog, TaskResult, Worker
from hareflow.common.messages import HeartbeatMessage, LogMessage, ResultMessage, TaskKey
from sqlalchemy import select

from hareflow.cluster import WorkerSpec
from tests.fault.conftest import (
    amqp_channel,
    describe_tis,
    fault_settings,
    run_states,
    running_cluster,
    wait_for,
    wait_for_run,
)

pytestmark = pytest.mark.fault

DAG_SOURCE = """
    from datetime import datetime, timedelta

    from hareflow import DAG, task

    with DAG("fault_duplicates", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
             default_args={"retries": 1, "retry_delay": timedelta(seconds=0)}):

        @task
        def flaky(ctx):
            print(f"flaky try {ctx.try_number}", flush=True)
            if ctx.try_number == 1:
                raise RuntimeError("first try fails on purpose")
            return {"answer": 42}

        @task
        def consumer(value):
            print(f"got {value}", flush=True)
            return value["answer"]

        consumer(flaky())
"""


def _snapshot(cluster, run_id: str) -> dict:
    """Everything a duplicate report could touch, as plain data."""
    with cluster.sessions() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)).all()
        ids = [ti.id for ti in tis]
        return {
            "tis": {
                ti.task_id: (
                    ti.state,
                    ti.try_number,
                    ti.start_date,
                    ti.end_date,
                    ti.duration,
                    ti.error,
                    ti.worker,
                    ti.pid,
                )
                for ti in tis
            },
            "results": sorted(
                (r.ti_id, r.try_number, r.value_json)
                for r in session.scalars(select(TaskResult).where(TaskResult.ti_id.in_(ids)))
            ),
            "logs": sorted(
                (r.ti_id, r.try_number, r.seq, r.text)
                for r in session.scalars(select(TaskLog).where(TaskLog.ti_id.in_(ids)))
            ),
        }


def test_duplicate_and_stale_reports_change_nothing_after_a_run_succeeded(
    private_rabbitmq, postgres_url, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path
) -> None:
    write_dag("duplicates.py", DAG_SOURCE)
    settings = fault_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=private_rabbitmq.url,
        prefix=broker_prefix,
        dags=dags_folder,
    )
    topo = Topology(prefix=broker_prefix)
    with running_cluster(settings, [WorkerSpec(concurrency=2, name="dup-w1")]) as cluster:
        cluster.wait_for_dag("fault_duplicates", timeout=60)
        run_id = cluster.trigger("fault_duplicates")
        assert wait_for_run(cluster, "fault_duplicates", run_id, timeout=90) == "success"
        _, tis = run_states(cluster, "fault_duplicates", run_id)
        assert tis["flaky"].state == "success" and tis["flaky"].try_number == 2, describe_tis(tis)
        # Log chunks of both tries of flaky and of consumer are in: they are published unconfirmed
        # and may trail the final result a little.
        wait_for(
            lambda: (
                {(ti_id, t) for ti_id, t, _, _ in _snapshot(cluster, run_id)["logs"]}
                >= {(tis["flaky"].id, 1), (tis["flaky"].id, 2), (tis["consumer"].id, 1)}
            ),
            timeout=30,
            what="the log chunks of every try",
        )
        before = _snapshot(cluster, run_id)
        assert len(before["results"]) == 2

        flaky = tis["flaky"]

        def key(try_number: int) -> TaskKey:
            return TaskKey(flaky.id, flaky.dag_id, flaky.run_id, flaky.task_id, flaky.map_index, try_number)

        now = time.time()
        forged = [
            # A second final result for the current try, contradicting the first.
            ResultMessage(key(2), "failed", "impostor", "elsewhere", 4242, now, error="duplicate failure"),
            # A success for the older, failed try.
            ResultMessage(key(1), "success", "impostor", "elsewhere", 4242, now, result_json='{"answer": 0}'),
            # A late "running" for the current try (a redelivered message starting again).
            ResultMessage(key(2), "running", "impostor", "elsewhere", 4242, now),
            # A redelivered log chunk with different text, and one for a try that never had it.
            LogMessage(key(2), 1, "duplicate chunk text\n", now),
            LogMessage(key(1), 1, "another duplicate chunk\n", now),
        ]
        bodies = [m.encode() for m in forged] + [forged[0].encode(), b"\x00 garbage result"]
        # The sentinel goes last: once it is recorded, everything before it has been processed.
        sentinel = HeartbeatMessage("dup-sentinel", "elsewhere", 1, ["default"], 1, [], now, "stopped")
        bodies.append(sentinel.encode())
        with amqp_channel(private_rabbitmq.url) as ch:
            ch.confirm_delivery()
            for body in bodies:
                ch.basic_publish(topo.results_exchange, "result", body, pika.BasicProperties(delivery_mode=2))

        def sentinel_recorded() -> bool:
            with cluster.sessions() as session:
                return session.get(Worker, "dup-sentinel") is not None

        wait_for(sentinel_recorded, timeout=60, what="the results consumer to reach the sentinel")
        wait_for(
            lambda: private_rabbitmq.queue_depths().get(topo.results_queue) == (0, 0),
            timeout=60,
            what="the results queue to be drained and acked",
        )
        assert _snapshot(cluster, run_id) == before
        assert run_states(cluster, "fault_duplicates", run_id)[0] == "success"

        # The results consumer side records the dead letter (and acks it from <prefix>.dead).
        with cluster.sessions() as session:
            letters = session.scalars(select(DeadLetter)).all()
        assert [row.body for row in letters] == [b"\x00 garbage result"]
        assert letters[0].reason.startswith("malformed result: not JSON")
        assert (
            letters[0].queue == topo.results_queue
            and letters[0].headers["x-hareflow-queue"] == topo.results_queue
        )
