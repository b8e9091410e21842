"""A dead-lettered copy says what it was, why it was moved, from where and after how many deliveries."""

from __future__ import annotations

import queue
from pathlib import Path

import pika
import pytest
from hareflow.common.broker import Delivery
from hareflow.common.broker.rabbitmq import RabbitMQExecutor
from hareflow.common.messages import TaskKey, TaskMessage

from tests.conftest import fast_settings
from tests.integration.conftest import wait_until

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
