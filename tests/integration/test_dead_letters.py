"""A dead-lettered copy says what it was, why it was moved, from where and after how many deliveries."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from hareflow.common.audit import cli_user
from hareflow.common.broker import Delivery
from hareflow.common.broker.rabbitmq import RabbitMQExecutor
from hareflow.common.broker.topology import Topology
from hareflow.common.db import DeadLetter
from hareflow.common.messages import TaskKey, TaskMessage
from sqlalchemy import select

from hareflow.cluster import WorkerSpec
from tests.conftest import _PREFIXES_USED, TEST_PREFIX, fast_settings
from tests.integration.conftest import wait_until
from tests.integration.test_cli import CliSystem, cli_system

pytestmark = pytest.mark.integration


def test_a_dead_lettered_task_keeps_its_message_id_and_carries_reason_queue_and_delivery_count(
    rabbitmq_url: str, broker_prefix: str, tmp_path: Path
) -> None:
    settings = fast_settings(tmp_path, broker_url=rabbitmq_url, broker_prefix=broker_prefix)
    executor = RabbitMQExecutor(settings, connection_name="hareflow-test")
    executor.start()
    try:
        message = TaskMessage(
            key=TaskKey(7, "dl", "r1", "t", -1, 1),
            max_tries=1,
            dag_file="/dags/dl.py",
            queue="dlq",
            execution_timeout=None,
            logical_date=None,
            data_interval_start=None,
            data_interval_end=None,
        )
        executor.publish_tasks([message])
        inbox: queue.Queue[Delivery] = queue.Queue()
        handle = executor.consume_tasks(["dlq"], 1, inbox.put)
        delivery = inbox.get(timeout=15)
        executor.stop_consuming_tasks(handle)
        executor.dead_letter(delivery, "cannot be run: because")

        conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        try:
            ch = conn.channel()
            dead = executor.topology.dead_queue
            wait_until(
                lambda: ch.queue_declare(dead, passive=True).method.message_count == 1,
                message="the dead-lettered copy",
            )
            method, props, body = ch.basic_get(dead, auto_ack=True)
        finally:
            conn.close()
    finally:
        executor.close()
    assert method is not None and body == message.encode()
    assert props.message_id == message.key.label() == "dl/r1/t#1"
    assert props.content_type == "application/json"
    headers = props.headers or {}
    assert headers["x-hareflow-reason"] == "cannot be run: because"
    assert headers["x-hareflow-queue"] == f"{broker_prefix}.q.dlq"
    assert headers["x-hareflow-deliveries"] == 1


# -- recorded, listed, requeued and discarded on a running system ----------------------------------

SIDE_DAG = """
    from datetime import datetime
    from pathlib import Path

    from hareflow import DAG, task

    with DAG("dl_side_queue", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

        @task(queue="dl_side")
        def on_the_side():
            Path("@MARKERS@/side-ran").write_text("ran")
            return 1

        on_the_side()

    with DAG("dl_plain", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

        @task
        def plain():
            return 2

        plain()
"""


@pytest.fixture(scope="module")
def dl_system(tmp_path_factory: pytest.TempPathFactory, rabbitmq_url: str) -> Iterator[CliSystem]:
    prefix = f"{TEST_PREFIX}-dl-{uuid.uuid4().hex[:8]}"
    _PREFIXES_USED.add(prefix)
    yield from cli_system(
        tmp_path_factory,
        {"side.py": SIDE_DAG},
        broker_url=rabbitmq_url,
        broker_prefix=prefix,
        workers=[WorkerSpec(concurrency=2, name="dl-worker")],
        wait_for=["dl_side_queue", "dl_plain"],
    )


@pytest.fixture(scope="module")
def dl_api(dl_system: CliSystem) -> Iterator[Callable[..., Any]]:
    """The REST API of a web app on the system's metastore and broker, as an op user."""
    from hareflow.common.users import create_user
    from hareflow.web import create_app
    from hareflow.web.security import issue_token

    settings = dl_system.cluster.settings.replace(secret_key="tests-only-secret-key-0123456789")
    with dl_system.cluster.sessions() as s, s.begin():
        create_user(s, "dl-op", "correct horse battery", "op", created_by="tests")
        token = issue_token(s, "dl-op")
    app = create_app(settings, sessions=dl_system.cluster.sessions)
    client = app.test_client()

    def call(method: str, path: str) -> Any:
        return client.open("/api/v1" + path, method=method, headers={"Authorization": f"Bearer {token}"})

    yield call
    app.extensions["hareflow"].close()


def _amqp(url: str) -> pika.adapters.blocking_connection.BlockingChannel:
    return pika.BlockingConnection(pika.URLParameters(url)).channel()


def _rows(system: CliSystem, **where: Any) -> list[DeadLetter]:
    with system.cluster.sessions() as s:
        query = select(DeadLetter).order_by(DeadLetter.id)
        for name, value in where.items():
            query = query.where(getattr(DeadLetter, name) == value)
        return list(s.scalars(query))


def test_a_malformed_message_sent_to_a_task_queue_is_listed_by_the_api_and_the_cli_within_a_second(
    dl_system: CliSystem, dl_api: Callable[..., Any], rabbitmq_url: str
) -> None:
    topo = Topology(prefix=dl_system.env["HAREFLOW_BROKER_PREFIX"])
    body = b"\x00\xff{not json, sent at " + uuid.uuid4().hex.encode() + b"}"
    ch = _amqp(rabbitmq_url)
    try:
        ch.confirm_delivery()
        started = time.monotonic()
        ch.basic_publish("", topo.task_queue("default"), body, pika.BasicProperties(delivery_mode=2))
        listed = wait_until(
            lambda: [
                d
                for d in dl_api("GET", "/deadletters").get_json()["deadletters"]
                if d["body_size"] == len(body)
            ],
            timeout=5,
            message="the dead letter listed by the API",
        )
        elapsed = time.monotonic() - started
    finally:
        ch.connection.close()
    assert elapsed < 1.0, f"listed after {elapsed:.2f}s"
    (letter,) = listed
    assert letter["reason"].startswith("malformed message: not JSON")
    assert letter["queue"] == topo.task_queue("default")
    assert letter["deliveries"] == 1 and letter["message_type"] is None and letter["state"] == "dead"
    assert letter["preview"].startswith("\\x00\\xff{not json")

    cli = dl_system.json("deadletters", "list", "--queue", topo.task_queue("default"))
    assert letter["id"] in [d["id"] for d in cli]
    table = dl_system.ok("deadletters", "list").stdout
    assert f"{letter['id']} " in table and "malformed message: not JSON" in table
    shown = dl_system.ok("deadletters", "show", str(letter["id"])).stdout
    assert "payload:" in shown and "x-hareflow-reason" in shown
    assert dl_system.cluster.workers[0].thread.is_alive()
    # Recorded and acked: nothing waits in the dead-letter queue.
    wait_until(
        lambda: {q.name: q.messages for q in _queue_stats(dl_system)}["(dead letters)"] == 0,
        message="the dead-letter queue drained",
    )


def _queue_stats(system: CliSystem) -> list[Any]:
    executor = RabbitMQExecutor(system.cluster.settings, connection_name="hareflow-test")
    executor.start()
    try:
        return executor.queue_stats(["default"])
    finally:
        executor.close()


def test_a_rejected_task_message_is_requeued_to_its_queue_and_a_worker_runs_it(
    dl_system: CliSystem, dl_api: Callable[..., Any], rabbitmq_url: str
) -> None:
    topo = Topology(prefix=dl_system.env["HAREFLOW_BROKER_PREFIX"])
    side = topo.task_queue("dl_side")
    run_id = dl_system.cluster.trigger("dl_side_queue")
    ch = _amqp(rabbitmq_url)
    try:
        # No worker consumes dl_side: the message waits; RabbitMQ dead-letters it when rejected.
        ch.queue_declare(side, durable=True, arguments=topo.task_queue_arguments())
        wait_until(
            lambda: ch.queue_declare(side, passive=True).method.message_count == 1, message="the task message"
        )
        method, _props, body = ch.basic_get(side)
        assert method is not None
        ch.basic_nack(method.delivery_tag, requeue=False)
        (letter,) = wait_until(lambda: _rows(dl_system, queue=side), message="the rejected message recorded")
        assert letter.reason == "dead-lettered by RabbitMQ: rejected"
        assert (letter.dag_id, letter.run_id, letter.task_id, letter.try_number) == (
            "dl_side_queue",
            run_id,
            "on_the_side",
            1,
        )
        assert dl_system.tis("dl_side_queue", run_id)["on_the_side"].state == "queued"

        requeued = dl_system.json("deadletters", "requeue", str(letter.id))
        assert [d["id"] for d in requeued["requeued"]] == [letter.id] and requeued["errors"] == []

        wait_until(
            lambda: ch.queue_declare(side, passive=True).method.message_count == 1, message="it is back"
        )
        method, props, again = ch.basic_get(side)
        assert method is not None and again == body
        headers = props.headers or {}
        assert "x-death" not in headers and headers["x-hareflow-requeued-from"] == letter.id
        ch.basic_nack(method.delivery_tag, requeue=True)  # leave it for the worker below
    finally:
        ch.connection.close()
    assert _rows(dl_system, id=letter.id)[0].state == "requeued"
    assert [a.details["dead_letter_id"] for a in dl_system.audit("dead_letter_requeue")] == [letter.id]
    twice = dl_api("POST", f"/deadletters/{letter.id}/requeue")
    assert twice.status_code == 409 and "already requeued" in twice.get_json()["error"]

    dl_system.cluster.add_worker(WorkerSpec(queues=("dl_side",), concurrency=1, name="dl-side-worker"))
    assert dl_system.cluster.wait_for_run("dl_side_queue", run_id, timeout=60) == "success"
    assert (dl_system.markers / "side-ran").read_text() == "ran"


def test_a_task_message_whose_try_has_ended_is_refused_and_discard_keeps_it_for_the_record(
    dl_system: CliSystem, dl_api: Callable[..., Any]
) -> None:
    # A dead letter for a try the metastore has closed: a task message of a task that succeeded.
    run_id = dl_system.run_to_end("dl_plain")
    ti = dl_system.tis("dl_plain", run_id)["plain"]
    assert ti.state == "success"
    message = TaskMessage(
        key=TaskKey(ti.id, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number),
        max_tries=1,
        dag_file="/dags/side.py",
        queue="dl_refused",  # a queue no worker consumes: this test takes the message itself
        execution_timeout=None,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
    )
    executor = RabbitMQExecutor(dl_system.cluster.settings, connection_name="hareflow-test")
    executor.start()
    try:
        executor.publish_tasks([message])
        inbox: queue.Queue[Delivery] = queue.Queue()
        handle = executor.consume_tasks(["dl_refused"], 1, inbox.put)
        delivery = inbox.get(timeout=15)
        executor.stop_consuming_tasks(handle)
        executor.dead_letter(delivery, "test: delivered too often")
    finally:
        executor.close()
    (letter,) = wait_until(lambda: _rows(dl_system, reason="test: delivered too often"), message="recorded")

    refused = dl_system.invoke("deadletters", "requeue", str(letter.id))
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "is success at try 1" in refused.stderr and "hareflow tasks clear dl_plain" in refused.stderr
    assert _rows(dl_system, id=letter.id)[0].state == "dead"

    unknown = dl_system.invoke("deadletters", "discard", "987654321")
    assert unknown.exit_code == 2 and "no dead letter 987654321" in unknown.stderr
    assert "Traceback" not in unknown.output
    assert dl_system.invoke("deadletters", "show", "987654321").exit_code == 2

    discarded = dl_system.ok("deadletters", "discard", str(letter.id)).stdout
    assert f"dead letter {letter.id} discarded" in discarded
    assert letter.id not in [d["id"] for d in dl_system.json("deadletters", "list")]
    kept = dl_system.json("deadletters", "list", "--state", "discarded")
    assert [d["state_by"] for d in kept if d["id"] == letter.id] == [cli_user()]
    assert dl_api("POST", f"/deadletters/{letter.id}/discard").status_code == 409


def test_a_copy_redelivered_after_its_recorder_died_before_acking_is_stored_once(
    rabbitmq_url: str, broker_prefix: str, postgres_url: str, tmp_path: Path
) -> None:
    from hareflow.common.db import create_engine_for, make_session_factory
    from hareflow.common.db.migrate import migrate
    from hareflow.scheduler.dead_letters import DeadLetterRecorder

    engine = create_engine_for(postgres_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    settings = fast_settings(tmp_path, broker_url=rabbitmq_url, broker_prefix=broker_prefix)
    worker = RabbitMQExecutor(settings, connection_name="hareflow-test")
    worker.start()
    first = RabbitMQExecutor(settings, connection_name="hareflow-test")
    first.start()
    second = RabbitMQExecutor(settings, connection_name="hareflow-test")
    try:
        worker.declare_queues(["dlq"])
        conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        conn.channel().basic_publish("", worker.topology.task_queue("dlq"), b"garbage")
        conn.close()
        inbox: queue.Queue[Delivery] = queue.Queue()
        worker.consume_tasks(["dlq"], 1, inbox.put)
        worker.dead_letter(inbox.get(timeout=15), "malformed message: not JSON")

        # The first recorder commits, then dies before its ack leaves: the broker redelivers.
        crashing = DeadLetterRecorder(executor=first, session_factory=sessions)
        first.consume_dead_letters(10, lambda d: crashing._buffer.put(_AckLost(d)))
        wait_until(lambda: crashing.run_once(timeout=0.2) == 1, message="the first recorder's commit")
        first.close()

        second.start()
        survivor = DeadLetterRecorder(executor=second, session_factory=sessions)
        survivor.start()
        wait_until(lambda: survivor.run_once(timeout=0.2) == 1, message="the redelivered copy")
        with sessions() as s:
            rows = list(s.scalars(select(DeadLetter)))
        assert [(r.queue, r.reason) for r in rows] == [
            (worker.topology.task_queue("dlq"), "malformed message: not JSON")
        ]
        wait_until(
            lambda: {q.name: q.messages for q in second.queue_stats([])}["(dead letters)"] == 0,
            message="the copy acked by the second recorder",
        )
    finally:
        for executor in (worker, first, second):
            executor.close()
        engine.dispose()


class _AckLost:
    """A delivery whose ack never reaches the broker (its recorder dies first)."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    def __getattr__(self, name: str) -> Any:
        return getattr(self._delivery, name)

    def ack(self) -> None:
        return None


@pytest.mark.parametrize("database", ["postgres_url", "mysql_url", "sqlite_url"])
def test_every_database_keeps_a_whole_mebibyte_body_and_stores_a_copy_once(
    request: pytest.FixtureRequest, database: str
) -> None:
    """MySQL's BLOB stops at 64 KiB (the column is LONGBLOB there); binary bodies and bytes in the
    headers survive; the second insert of one fingerprint, from another session, adds nothing."""
    from datetime import UTC, datetime

    from hareflow.common import dead_letters
    from hareflow.common.db import create_engine_for, make_session_factory
    from hareflow.common.db.migrate import migrate

    engine = create_engine_for(request.getfixturevalue(database))
    migrate(engine)
    sessions = make_session_factory(engine)
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value
    headers = {"x-hareflow-reason": "r\x00eason", "x-hareflow-dead-id": "same", "raw": b"\x00\xff"}
    values = dead_letters.describe(body, headers, message_id="m", content_type=None, now=datetime.now(UTC))
    try:
        for _ in range(2):
            with sessions() as s, s.begin():
                dead_letters.record(s, [values])
        with sessions() as s:
            rows = list(s.scalars(select(DeadLetter)))
        assert len(rows) == 1
        assert rows[0].body == body and rows[0].body_size == len(body)
        assert rows[0].headers["raw"] == "\x00\ufffd" and rows[0].reason == "r\u2400eason"
    finally:
        engine.dispose()
