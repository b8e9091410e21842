"""Long tasks against RabbitMQ's ``consumer_timeout``.

RabbitMQ closes a channel whose delivery stays unacked longer than ``consumer_timeout``; hareflow's
answer (worker/runtime.py) is to ack a task still running after ``long_task_ack_after`` and let the
heartbeats protect it from then on. RabbitMQ 3.10 checks the timeout on each channel's tick
(``channel_tick_interval``, 60 s by default): this node ticks every 500 ms, so a 4 s timeout
bites within about 4.5 s instead of a minute or more.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hareflow.cluster import WorkerSpec
from tests.fault.conftest import (
    PrivateRabbitMQ,
    describe_tis,
    fault_settings,
    private_rabbitmq_node,
    run_states,
    running_cluster,
    wait_for,
    wait_for_run,
)

pytestmark = pytest.mark.fault

CONSUMER_TIMEOUT_MS = 4000
TASK_SECONDS = 8.0  # comfortably longer than the timeout plus a tick

DAG_SOURCE = """
    import time
    from datetime import datetime

    from hareflow import DAG, task

    with DAG("fault_long_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

        @task
        def long_one(ctx):
            with open({runs!r}, "a") as f:
                f.write(f"try {{ctx.try_number}}\\n")
            time.sleep({seconds})
            return "finished"

        long_one()
"""


@pytest.fixture(scope="module")
def short_timeout_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    with private_rabbitmq_node(consumer_timeout_ms=CONSUMER_TIMEOUT_MS, channel_tick_ms=500) as node:
        yield node


def _timeouts_logged(node: PrivateRabbitMQ) -> int:
    try:
        return node.log_file.read_text(errors="replace").count("delivery acknowledgement on channel")
    except OSError:
        return 0


def _run_long_task(
    node, ack_after: float, postgres_url, broker_prefix, write_dag, dags_folder, tmp_path, check
):
    runs = tmp_path / "runs.txt"
    write_dag("long.py", DAG_SOURCE.format(runs=str(runs), seconds=TASK_SECONDS))
    settings = fault_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=node.url,
        prefix=broker_prefix,
        dags=dags_folder,
        long_task_ack_after=ack_after,
    )
    with running_cluster(settings, [WorkerSpec(concurrency=1, name="long-w1")]) as cluster:
        cluster.wait_for_dag("fault_long_task", timeout=60)
        run_id = cluster.trigger("fault_long_task")
        check(cluster, run_id, runs)


def test_a_task_longer_than_the_consumer_timeout_runs_once_and_succeeds(
    short_timeout_rabbitmq, postgres_url, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path
) -> None:
    timeouts_before = _timeouts_logged(short_timeout_rabbitmq)

    def check(cluster, run_id, runs: Path) -> None:
        assert wait_for_run(cluster, "fault_long_task", run_id, timeout=120) == "success"
        _, tis = run_states(cluster, "fault_long_task", run_id)
        ti = tis["long_one"]
        assert ti.state == "success", describe_tis(tis)
        assert ti.try_number == 1
        assert ti.duration is not None and ti.duration >= TASK_SECONDS - 0.5
        assert ti.duration * 1000 > CONSUMER_TIMEOUT_MS + 2000
        assert runs.read_text().splitlines() == ["try 1"], "the task ran exactly once: no redelivery"
        assert short_timeout_rabbitmq.queue_depths()[f"{cluster.settings.broker_prefix}.q.default"] == (0, 0)

    _run_long_task(
        short_timeout_rabbitmq, 1.0, postgres_url, broker_prefix, write_dag, dags_folder, tmp_path, check
    )
    assert _timeouts_logged(short_timeout_rabbitmq) == timeouts_before, "the broker closed no channel"


def test_without_the_early_ack_the_broker_times_the_delivery_out_and_its_copy_joins_the_running_task(
    short_timeout_rabbitmq, postgres_url, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path
) -> None:
    """The converse: what ``long_task_ack_after`` protects against. The broker closes the channel
    and redelivers the message; the copy comes back to the worker still running the task and joins
    it instead of running it again (on another worker it would run again)."""
    timeouts_before = _timeouts_logged(short_timeout_rabbitmq)

    def check(cluster, run_id, runs: Path) -> None:
        wait_for(
            lambda: _timeouts_logged(short_timeout_rabbitmq) > timeouts_before,
            timeout=60,
            what="the broker to time the delivery out",
        )
        assert wait_for_run(cluster, "fault_long_task", run_id, timeout=60) == "success"
        assert runs.read_text().splitlines() == ["try 1"], "the redelivered copy was not run again"

    _run_long_task(
        short_timeout_rabbitmq, 3600.0, postgres_url, broker_prefix, write_dag, dags_folder, tmp_path, check
    )


SHORT_DAG = """
    from datetime import datetime

    from hareflow import DAG, task

    with DAG("fault_short_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

        @task
        def short_one(ctx):
            with open({runs!r}, "a") as f:
                f.write(f"short {{ctx.try_number}}\\n")
            return "quick"

        short_one()
"""


def test_a_task_queued_behind_an_early_acked_long_task_is_not_timed_out_by_the_broker(
    short_timeout_rabbitmq, postgres_url, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path
) -> None:
    short_runs = tmp_path / "short-runs.txt"
    write_dag("short.py", SHORT_DAG.format(runs=str(short_runs)))
    timeouts_before = _timeouts_logged(short_timeout_rabbitmq)

    def check(cluster, run_id, runs: Path) -> None:
        wait_for(lambda: runs.exists(), timeout=60, what="the long task to start")
        short_run = cluster.trigger("fault_short_task")
        assert wait_for_run(cluster, "fault_long_task", run_id, timeout=120) == "success"
        assert wait_for_run(cluster, "fault_short_task", short_run, timeout=60) == "success"
        wait_for(lambda: short_runs.exists(), timeout=30, what="the short task's run to be noted")
        assert short_runs.read_text().splitlines() == ["short 1"], "the short task ran exactly once"
        assert _timeouts_logged(short_timeout_rabbitmq) == timeouts_before, "the broker closed no channel"

    _run_long_task(
        short_timeout_rabbitmq, 1.0, postgres_url, broker_prefix, write_dag, dags_folder, tmp_path, check
    )
