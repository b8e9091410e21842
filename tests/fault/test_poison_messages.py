"""Poison messages are contained: unparseable or over-delivered task messages go to the dead-letter
queue with a reason, the task instance (if there is one) fails with that reason, nothing crashes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pika
import pytest
from hareflow.common.broker.topology import Topology
from hareflow.common.db import DeadLetter, Worker
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
from tests.fault.report import record_fault

pytestmark = pytest.mark.fault

PERSISTENT = pika.BasicProperties(delivery_mode=2, content_type="application/json")

NORMAL_DAG = """
    from datetime import datetime

    from hareflow import DAG, task

    with DAG("fault_after_poison", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

        @task
        def first():
            return 20

        @task
        def second(value):
            return value + 1

        second(first())
"""

DOOMED_DAG = """
    from datetime import datetime
    from pathlib import Path

    from hareflow import DAG, task

    MARKER = Path({marker!r})

    with DAG("fault_over_delivered", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

        @task
        def doomed():
            MARKER.write_text("ran")
            return 1

        @task
        def downstream(value):
            return value

        downstream(doomed())
"""


def _worker_active(cluster, name: str) -> bool:
    with cluster.sessions() as session:
        worker = session.get(Worker, name)
        return worker is not None and worker.state == "active"


def _dead_letters(cluster, expected: int) -> list[tuple[bytes, dict]]:
    """The dead letters the results consumer recorded, once ``expected`` of them are there (it
    consumes ``<prefix>.dead`` and keeps each message's body and headers in the metastore)."""

    def recorded() -> list[tuple[bytes, dict]]:
        with cluster.sessions() as session:
            rows = session.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
            return [(row.body, dict(row.headers)) for row in rows]

    return wait_for(
        lambda: len(recorded()) >= expected and recorded(), timeout=60, what=f"{expected} dead letter(s)"
    )


def test_malformed_task_messages_are_dead_lettered_and_the_worker_keeps_working(
    private_rabbitmq, postgres_url, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path
) -> None:
    write_dag("normal.py", NORMAL_DAG)
    settings = fault_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=private_rabbitmq.url,
        prefix=broker_prefix,
        dags=dags_folder,
    )
    topo = Topology(prefix=broker_prefix)
    garbage = b"\x00\xff{not json at all"
    unknown_type = json.dumps({"type": "launch_missiles", "v": 1, "target": "moon"}).encode()
    not_a_task = json.dumps(
        {
            "type": "heartbeat",
            "v": 1,
            "worker": "ghost",
            "hostname": "nowhere",
            "pid": 1,
            "queues": ["default"],
            "concurrency": 1,
            "running": [],
            "at": 0.0,
            "state": "active",
        }
    ).encode()
    with running_cluster(settings, [WorkerSpec(concurrency=2, name="poison-w1")]) as cluster:
        wait_for(lambda: _worker_active(cluster, "poison-w1"), timeout=60, what="the worker to consume")
        with amqp_channel(private_rabbitmq.url) as ch:
            for body in (garbage, unknown_type, not_a_task):
                ch.basic_publish("", topo.task_queue("default"), body, PERSISTENT)

        letters = _dead_letters(cluster, 3)
        reasons = {body: headers.get("x-hareflow-reason", "") for body, headers in letters}
        assert set(reasons) == {garbage, unknown_type, not_a_task}
        assert reasons[garbage].startswith("malformed message: not JSON")
        assert reasons[unknown_type] == "malformed message: unknown message type 'launch_missiles'"
        assert reasons[not_a_task] == "not a task message: 'heartbeat'"
        wait_for(
            lambda: private_rabbitmq.queue_depths().get(topo.task_queue("default")) == (0, 0),
            timeout=30,
            what="the task queue to be empty (the poison was acked, not requeued)",
        )

        # The worker did not crash: it runs a normal DAG.
        assert cluster.workers[0].thread.is_alive()
        cluster.wait_for_dag("fault_after_poison", timeout=60)
        run_id = cluster.trigger("fault_after_poison")
        assert wait_for_run(cluster, "fault_after_poison", run_id, timeout=90) == "success"
        _, tis = run_states(cluster, "fault_after_poison", run_id)
        assert {t: (ti.state, ti.worker) for t, ti in tis.items()} == {
            "first": ("success", "poison-w1"),
            "second": ("success", "poison-w1"),
        }, describe_tis(tis)
        with cluster.sessions() as session:
            assert session.get(Worker, "ghost") is None, "a heartbeat sent to a task queue is not recorded"
        record_fault(
            "poison messages (3 malformed task messages, then a normal run)",
            tasks=len(tis),
            lost=sum(1 for ti in tis.values() if ti.state != "success"),
            more_than_once=sum(1 for ti in tis.values() if ti.try_number > 1),
        )


def test_a_task_message_delivered_too_often_is_dead_lettered_and_its_task_instance_failed(
    private_rabbitmq, postgres_url, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "doomed-ran"
    write_dag("doomed.py", DOOMED_DAG.format(marker=str(marker)))
    settings = fault_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=private_rabbitmq.url,
        prefix=broker_prefix,
        dags=dags_folder,
    )
    topo = Topology(prefix=broker_prefix)
    queue = topo.task_queue("default")
    over_limit = settings.max_deliveries + 1
    with running_cluster(settings, workers=[]) as cluster:
        cluster.wait_for_dag("fault_over_delivered", timeout=60)
        run_id = cluster.trigger("fault_over_delivered")
        # No worker yet: the real task message waits in its queue. Swap it for the same message as
        # it would look after `max_deliveries` deliveries that each killed their worker.
        wait_for(
            lambda: private_rabbitmq.queue_depths().get(queue) == (1, 0), timeout=60, what="the task message"
        )
        with amqp_channel(private_rabbitmq.url) as ch:
            method, props, body = ch.basic_get(queue)
            assert method is not None
            assert json.loads(body)["key"]["task_id"] == "doomed"
            headers = {"x-hareflow-deliveries": over_limit}
            ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, headers=headers))
            ch.basic_ack(method.delivery_tag)

        cluster.add_worker(WorkerSpec(concurrency=1, name="poison-w2"))
        assert wait_for_run(cluster, "fault_over_delivered", run_id, timeout=90) == "failed"
        _, tis = run_states(cluster, "fault_over_delivered", run_id)
        assert tis["doomed"].state == "failed", describe_tis(tis)
        assert tis["doomed"].error == (
            f"task message delivered {over_limit} times (max_deliveries={settings.max_deliveries}); "
            "moved to the dead-letter queue"
        )
        assert tis["doomed"].try_number == 1
        assert tis["downstream"].state == "upstream_failed"
        record_fault(
            "poison message (delivered more than max_deliveries times)",
            tasks=1,
            lost=0 if tis["doomed"].state == "failed" else 1,  # failed with the reason, not left queued
            more_than_once=int(marker.exists()),
        )
        assert not marker.exists(), "a message over the delivery limit is not run again"

        letters = _dead_letters(cluster, 1)
        assert len(letters) == 1
        dead_body, dead_headers = letters[0]
        assert dead_body == body
        assert dead_headers["x-hareflow-reason"] == tis["doomed"].error
        assert dead_headers["x-hareflow-deliveries"] == over_limit
        assert private_rabbitmq.queue_depths().get(queue) == (0, 0)
        assert cluster.workers[0].thread.is_alive()
        with cluster.sessions() as session:
            workers = session.scalars(select(Worker.state).where(Worker.name == "poison-w2")).all()
        assert workers == ["active"]


OUTSIDE_DAG = """
    from datetime import datetime
    from pathlib import Path

    from hareflow import DAG, task

    with DAG("fault_outside_folder", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

        @task
        def doomed():
            Path({marker!r}).write_text("ran from " + __file__)
            return 1

        doomed()
"""


@pytest.mark.parametrize("where", ["beside", "traversal"])
def test_a_task_message_naming_a_file_outside_the_dag_folder_is_dead_lettered_not_run(
    private_rabbitmq, postgres_url, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path, where: str
) -> None:
    marker = tmp_path / "outside-ran"
    write_dag("inside.py", OUTSIDE_DAG.format(marker=str(tmp_path / "inside-ran")))
    # The same DAG, outside the worker's DAG folder, that would leave a marker if it were imported.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "evil.py").write_text(textwrap.dedent(OUTSIDE_DAG.format(marker=str(marker))))
    evil = {
        "beside": str(elsewhere / "evil.py"),
        "traversal": f"{dags_folder}/../elsewhere/evil.py",
    }[where]
    settings = fault_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=private_rabbitmq.url,
        prefix=broker_prefix,
        dags=dags_folder,
    )
    topo = Topology(prefix=broker_prefix)
    queue = topo.task_queue("default")
    with running_cluster(settings, workers=[]) as cluster:
        cluster.wait_for_dag("fault_outside_folder", timeout=60)
        run_id = cluster.trigger("fault_outside_folder")
        wait_for(
            lambda: private_rabbitmq.queue_depths().get(queue) == (1, 0), timeout=60, what="the task message"
        )
        with amqp_channel(private_rabbitmq.url) as ch:
            method, props, body = ch.basic_get(queue)
            assert method is not None
            forged = json.loads(body)
            assert forged["dag_file"] == str((dags_folder / "inside.py").resolve())
            forged["dag_file"] = evil
            forged_body = json.dumps(forged).encode()
            ch.basic_publish("", queue, forged_body, props)
            ch.basic_ack(method.delivery_tag)

        cluster.add_worker(WorkerSpec(concurrency=1, name="poison-w3"))
        assert wait_for_run(cluster, "fault_outside_folder", run_id, timeout=90) == "failed"
        _, tis = run_states(cluster, "fault_outside_folder", run_id)
        reason = f"dag_file {evil!r} lies outside this worker's DAG folder {str(dags_folder.resolve())!r}"
        assert tis["doomed"].state == "failed", describe_tis(tis)
        assert tis["doomed"].error == reason
        record_fault(
            "task message naming a file outside the worker's DAG folder",
            tasks=1,
            lost=0 if tis["doomed"].state == "failed" else 1,
            more_than_once=0,
            imported=int(marker.exists()),
        )
        assert not marker.exists(), "a file outside the DAG folder was imported"

        letters = _dead_letters(cluster, 1)
        assert [(b, h["x-hareflow-reason"]) for b, h in letters] == [(forged_body, reason)]
        assert cluster.workers[0].thread.is_alive()


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_dag_file_linked_into_the_folder_is_run(
    private_rabbitmq, postgres_url, broker_prefix, dags_folder: Path, tmp_path: Path, link: str
) -> None:
    """The other side of the check: a DAG folder may link to a file or a folder kept elsewhere (the
    scheduler sends the resolved path), and that file runs."""
    marker = tmp_path / "linked-ran"
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "real.py").write_text(textwrap.dedent(OUTSIDE_DAG.format(marker=str(marker))))
    if link == "file":
        (dags_folder / "link.py").symlink_to(kept / "real.py")
    else:
        (dags_folder / "shared").symlink_to(kept, target_is_directory=True)
    settings = fault_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=private_rabbitmq.url,
        prefix=broker_prefix,
        dags=dags_folder,
    )
    with running_cluster(settings, [WorkerSpec(concurrency=1, name="poison-w4")]) as cluster:
        cluster.wait_for_dag("fault_outside_folder", timeout=60)
        run_id = cluster.trigger("fault_outside_folder")
        assert wait_for_run(cluster, "fault_outside_folder", run_id, timeout=90) == "success"
        assert marker.read_text() == f"ran from {kept / 'real.py'}"
