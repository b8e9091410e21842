"""The executor port's contract, written once and run against both adapters.

The local adapter and the RabbitMQ adapter must behave the same where the scheduler, the results
consumer and the workers can tell: ordering, prefetch, requeue, ack, results, events, dead letters
and cancelling. RabbitMQ-only guarantees (redelivery counting, confirmed publishing) follow.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hareflow.common.broker import Delivery, Executor
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.broker.rabbitmq import RabbitMQExecutor
from hareflow.common.config import load_settings
from hareflow.common.messages import (
    HeartbeatMessage,
    LogMessage,
    ResultMessage,
    StateEvent,
    TaskKey,
    TaskMessage,
    decode,
)

from tests.integration.conftest import wait_until

QUEUE = "work"
DEAD = "(dead letters)"


def task_message(n: int, queue_name: str = QUEUE) -> TaskMessage:
    return TaskMessage(
        key=TaskKey(ti_id=n, dag_id="contract", run_id="r1", task_id=f"t{n}", map_index=-1, try_number=1),
        max_tries=1,
        dag_file="/nowhere/contract.py",
        queue=queue_name,
        execution_timeout=None,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
        conf={"n": n},
    )


def ti_id(delivery: Delivery) -> int:
    message = decode(delivery.body)
    assert isinstance(message, TaskMessage)
    return message.key.ti_id


def take(inbox: queue.Queue, n: int, timeout: float = 15.0) -> list:
    """Wait for exactly ``n`` items from a handler's inbox."""
    items = []
    deadline = time.monotonic() + timeout
    while len(items) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"got {len(items)} of {n} expected deliveries within {timeout}s")
        try:
            items.append(inbox.get(timeout=remaining))
        except queue.Empty:
            continue
    return items


def assert_nothing_more(inbox: queue.Queue, within: float = 0.5) -> None:
    """A negative check: no further delivery shows up (bounded, after the state was already settled)."""
    try:
        extra = inbox.get(timeout=within)
    except queue.Empty:
        return
    pytest.fail(f"unexpected extra delivery: {extra.body[:200]!r}")


def messages_in(executor: Executor, name: str = QUEUE) -> int:
    """Messages waiting in a queue (not counting those held unacked by a consumer)."""
    return {s.name: s.messages for s in executor.queue_stats([QUEUE])}[name]


@dataclass
class Adapter:
    """One adapter under test. ``client()`` gives another client of the same broker state; ``drop``
    makes a consumer let go of what it holds unsettled, the way a vanished consumer would."""

    name: str
    client: Callable[[], Executor]
    drop: Callable[[Executor, list[Delivery]], None]
    opened: list[Executor] = field(default_factory=list)


@pytest.fixture(params=["local", "rabbitmq"])
def adapter(request: pytest.FixtureRequest, broker_prefix: str) -> Iterator[Adapter]:
    if request.param == "local":
        local = LocalExecutor()
        local.start()

        def drop_local(executor: Executor, held: list[Delivery]) -> None:
            # One process, no connection to lose: stop consuming and hand back what was held.
            executor.stop_consuming_tasks()
            for delivery in held:
                delivery.requeue()

        sut = Adapter("local", client=lambda: local, drop=drop_local, opened=[local])
        yield sut
        local.close()
        return

    url = request.getfixturevalue("rabbitmq_url")
    settings = load_settings(env={}, overrides={"broker_url": url, "broker_prefix": broker_prefix})
    opened: list[Executor] = []

    def client() -> Executor:
        executor = RabbitMQExecutor(settings, connection_name="hareflow-contract-test")
        opened.append(executor)
        executor.start(timeout=15)
        return executor

    def drop_rabbit(executor: Executor, held: list[Delivery]) -> None:
        executor.close()  # the broker takes back every unacked delivery of a closed connection

    sut = Adapter("rabbitmq", client=client, drop=drop_rabbit, opened=opened)
    try:
        yield sut
    finally:
        for executor in opened:
            executor.close()


class TestExecutorContract:
    def test_published_tasks_are_consumed_in_order_on_their_first_delivery(self, adapter: Adapter) -> None:
        executor = adapter.client()
        sent = [task_message(n) for n in range(1, 11)]
        executor.publish_tasks(sent)
        inbox: queue.Queue[Delivery] = queue.Queue()
        executor.consume_tasks([QUEUE], 20, inbox.put)

        got = take(inbox, 10)

        assert [ti_id(d) for d in got] == list(range(1, 11))
        assert [decode(d.body) for d in got] == sent
        assert all(d.delivery_count == 1 and not d.redelivered for d in got)
        for d in got:
            d.ack()
        wait_until(lambda: messages_in(executor) == 0, message="an empty queue")

    def test_prefetch_limits_how_many_unacked_deliveries_a_consumer_holds(self, adapter: Adapter) -> None:
        executor = adapter.client()
        executor.publish_tasks([task_message(n) for n in range(1, 6)])
        inbox: queue.Queue[Delivery] = queue.Queue()
        executor.consume_tasks([QUEUE], 2, inbox.put)

        first = take(inbox, 2)
        wait_until(lambda: messages_in(executor) == 3, message="three messages left waiting")
        assert_nothing_more(inbox)
        assert [ti_id(d) for d in first] == [1, 2]

        first[0].ack()
        (third,) = take(inbox, 1)
        assert ti_id(third) == 3
        wait_until(lambda: messages_in(executor) == 2, message="two messages left waiting")
        assert_nothing_more(inbox)

    def test_a_requeued_message_is_delivered_again(self, adapter: Adapter) -> None:
        executor = adapter.client()
        executor.publish_tasks([task_message(7)])
        inbox: queue.Queue[Delivery] = queue.Queue()
        executor.consume_tasks([QUEUE], 1, inbox.put)

        (first,) = take(inbox, 1)
        first.requeue()
        (again,) = take(inbox, 1)

        assert again.body == first.body
        assert (first.delivery_count, again.delivery_count) == (1, 2)
        again.ack()

    def test_an_acked_message_is_removed_while_an_unsettled_one_comes_back(self, adapter: Adapter) -> None:
        consumer = adapter.client()
        consumer.publish_tasks([task_message(1), task_message(2)])
        inbox: queue.Queue[Delivery] = queue.Queue()
        consumer.consume_tasks([QUEUE], 2, inbox.put)
        acked, unsettled = take(inbox, 2)

        acked.ack()
        adapter.drop(consumer, [unsettled])

        observer = adapter.client()
        wait_until(lambda: messages_in(observer) == 1, message="the unsettled message back in its queue")
        later: queue.Queue[Delivery] = queue.Queue()
        observer.consume_tasks([QUEUE], 5, later.put)
        (back,) = take(later, 1)
        assert ti_id(back) == 2
        assert_nothing_more(later)
        back.ack()
        wait_until(lambda: messages_in(observer) == 0, message="an empty queue")

    def test_published_results_reach_the_results_consumer(self, adapter: Adapter) -> None:
        executor = adapter.client()
        inbox: queue.Queue[Delivery] = queue.Queue()
        executor.consume_results(10, inbox.put)
        key = task_message(3).key
        sent = [
            ResultMessage(key=key, outcome="running", worker="w1", hostname="h", pid=1, at=1.0),
            LogMessage(key=key, seq=1, text="hello\n", at=2.0),
            ResultMessage(
                key=key, outcome="success", worker="w1", hostname="h", pid=1, at=3.0, result_json="42"
            ),
            HeartbeatMessage(
                worker="w1", hostname="h", pid=1, queues=["q"], concurrency=2, running=[3], at=4.0
            ),
        ]

        adapter.client().publish_results(sent, confirm=True)

        got = take(inbox, 4)
        assert [decode(d.body) for d in got] == sent
        for d in got:
            d.ack()

    def test_results_carry_skips_and_no_retry_intact(self, adapter: Adapter) -> None:
        executor = adapter.client()
        inbox: queue.Queue[Delivery] = queue.Queue()
        executor.consume_results(10, inbox.put)
        key = task_message(4).key
        common = {"key": key, "worker": "w1", "hostname": "h", "pid": 1}
        sent = [
            ResultMessage(**common, outcome="skipped", at=1.0, error="no new files"),  # type: ignore[arg-type]
            ResultMessage(**common, outcome="failed", at=2.0, error="revoked", no_retry=True),  # type: ignore[arg-type]
            ResultMessage(
                **common,  # type: ignore[arg-type]
                outcome="success",
                at=3.0,
                result_json='"a"',
                skip_task_ids=["b", "c"],
                skip_reason="skipped by branch 'pick' (it followed 'a')",
            ),
        ]

        adapter.client().publish_results(sent, confirm=True)

        got = take(inbox, 3)
        assert [decode(d.body) for d in got] == sent
        for d in got:
            d.ack()

    def test_events_reach_every_subscriber(self, adapter: Adapter) -> None:
        first: queue.Queue[StateEvent] = queue.Queue()
        second: queue.Queue[StateEvent] = queue.Queue()
        adapter.client().subscribe_events(first.put)
        adapter.client().subscribe_events(second.put)
        events = [
            StateEvent(kind="task", dag_id="d", run_id="r", state=s, at=float(i), task_id="t")
            for i, s in enumerate(["queued", "running", "success"])
        ]

        adapter.client().publish_events(events)

        assert take(first, 3) == events
        assert take(second, 3) == events

    def test_dead_letter_moves_a_message_to_the_dead_letter_queue_and_acks_it(self, adapter: Adapter) -> None:
        consumer = adapter.client()
        consumer.publish_tasks([task_message(9)])
        inbox: queue.Queue[Delivery] = queue.Queue()
        consumer.consume_tasks([QUEUE], 1, inbox.put)
        (poison,) = take(inbox, 1)
        assert messages_in(consumer, DEAD) == 0

        consumer.dead_letter(poison, "poison message for the contract test")

        wait_until(lambda: messages_in(consumer, DEAD) == 1, message="one dead letter")
        adapter.drop(consumer, [])
        observer = adapter.client()
        assert messages_in(observer, DEAD) == 1
        # Had the original not been acked, dropping the consumer would have put it back.
        assert messages_in(observer) == 0

    def test_the_dead_letter_consumer_gets_the_copy_with_why_from_where_and_how_often(
        self, adapter: Adapter
    ) -> None:
        worker = adapter.client()
        worker.publish_tasks([task_message(11)])
        inbox: queue.Queue[Delivery] = queue.Queue()
        worker.consume_tasks([QUEUE], 1, inbox.put)
        (poison,) = take(inbox, 1)
        worker.dead_letter(poison, "refused for the contract test")

        recorder = adapter.client()
        dead: queue.Queue[Delivery] = queue.Queue()
        recorder.consume_dead_letters(10, dead.put)
        (copy,) = take(dead, 1)
        assert copy.body == task_message(11).encode()
        assert copy.headers["x-hareflow-reason"] == "refused for the contract test"
        assert copy.headers["x-hareflow-queue"] == poison.queue
        assert copy.headers["x-hareflow-deliveries"] == 1
        assert copy.headers["x-hareflow-dead-id"]
        copy.ack()
        wait_until(lambda: messages_in(recorder, DEAD) == 0, message="the recorded copy acked")

    def test_a_dead_letter_requeued_to_its_queue_is_delivered_again_as_new(self, adapter: Adapter) -> None:
        from hareflow.common.broker import BrokerError

        worker = adapter.client()
        worker.publish_tasks([task_message(12)])
        inbox: queue.Queue[Delivery] = queue.Queue()
        worker.consume_tasks([QUEUE], 1, inbox.put)
        (poison,) = take(inbox, 1)
        worker.dead_letter(poison, "refused for the contract test")
        recorder = adapter.client()
        dead: queue.Queue[Delivery] = queue.Queue()
        recorder.consume_dead_letters(10, dead.put)
        (copy,) = take(dead, 1)
        copy.ack()

        recorder.requeue_dead_letter(
            copy.headers["x-hareflow-queue"],
            copy.body,
            headers={"x-hareflow-requeued-from": 1},
            message_id=copy.message_id,
            content_type="application/json",
        )

        (again,) = take(inbox, 1)
        assert again.body == task_message(12).encode()
        assert again.delivery_count == 1 and not again.redelivered
        again.ack()
        with pytest.raises(BrokerError):
            recorder.requeue_dead_letter(
                "no-such-queue-anywhere", b"{}", headers={}, message_id=None, content_type=None
            )

    def test_stop_consuming_tasks_stops_new_deliveries(self, adapter: Adapter) -> None:
        executor = adapter.client()
        inbox: queue.Queue[Delivery] = queue.Queue()
        executor.consume_tasks([QUEUE], 5, inbox.put)
        executor.publish_tasks([task_message(1)])
        (first,) = take(inbox, 1)
        first.ack()

        executor.stop_consuming_tasks()
        executor.publish_tasks([task_message(2)])

        wait_until(
            lambda: (
                [(s.messages, s.consumers) for s in executor.queue_stats([QUEUE]) if s.name == QUEUE]
                == [(1, 0)]
            ),
            message="the new message waiting with no consumer",
        )
        assert_nothing_more(inbox)

    def test_a_handed_back_message_comes_again_without_counting_as_an_attempt(self, adapter: Adapter) -> None:
        executor = adapter.client()
        inbox: queue.Queue[Delivery] = queue.Queue()
        executor.consume_tasks([QUEUE], 5, inbox.put)
        executor.publish_tasks([task_message(1)])
        (first,) = take(inbox, 1)
        first.hand_back()
        (again,) = take(inbox, 1)
        again.requeue()  # a real second attempt, for contrast
        (third,) = take(inbox, 1)
        assert [ti_id(d) for d in (first, again, third)] == [1, 1, 1]
        assert (first.delivery_count, again.delivery_count, third.delivery_count) == (1, 1, 2)
        third.ack()

    def test_stopping_one_consumer_leaves_the_others_consuming(self, adapter: Adapter) -> None:
        executor = adapter.client()  # on the local adapter, several workers share one executor
        stopping: queue.Queue[Delivery] = queue.Queue()
        staying: queue.Queue[Delivery] = queue.Queue()
        handle = executor.consume_tasks([QUEUE], 5, stopping.put)
        executor.consume_tasks([QUEUE], 5, staying.put)
        executor.stop_consuming_tasks(handle)
        executor.publish_tasks([task_message(n) for n in range(1, 4)])
        assert sorted(ti_id(d) for d in take(staying, 3)) == [1, 2, 3]
        assert_nothing_more(stopping)


# -- RabbitMQ only ------------------------------------------------------------------------------------


def rabbit(url: str, prefix: str, **settings: object) -> RabbitMQExecutor:
    executor = RabbitMQExecutor(
        load_settings(env={}, overrides={"broker_url": url, "broker_prefix": prefix, **settings}),
        connection_name="hareflow-contract-test",
    )
    executor.start(timeout=15)
    return executor


@pytest.fixture
def rabbit_clients(rabbitmq_url: str, broker_prefix: str) -> Iterator[Callable[..., RabbitMQExecutor]]:
    opened: list[RabbitMQExecutor] = []

    def make(**settings: object) -> RabbitMQExecutor:
        executor = rabbit(rabbitmq_url, broker_prefix, **settings)
        opened.append(executor)
        return executor

    try:
        yield make
    finally:
        for executor in opened:
            executor.close()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_task_redelivered_after_its_consumer_connection_closes_counts_a_second_delivery(
    rabbit_clients: Callable[..., RabbitMQExecutor], queue_type: str
) -> None:
    first_consumer = rabbit_clients(queue_type=queue_type)
    first_consumer.publish_tasks([task_message(5)])
    inbox: queue.Queue[Delivery] = queue.Queue()
    first_consumer.consume_tasks([QUEUE], 1, inbox.put)
    (first,) = take(inbox, 1)
    assert first.delivery_count == 1

    first_consumer.close()  # dies without acking

    second_consumer = rabbit_clients(queue_type=queue_type)
    again_inbox: queue.Queue[Delivery] = queue.Queue()
    second_consumer.consume_tasks([QUEUE], 1, again_inbox.put)
    (again,) = take(again_inbox, 1)
    assert again.body == first.body
    assert again.delivery_count == 2
    again.ack()
    wait_until(lambda: messages_in(second_consumer) == 0, message="an empty queue")
    assert_nothing_more(again_inbox)


def test_publishing_two_thousand_tasks_returns_once_the_broker_holds_them_all(
    rabbit_clients: Callable[..., RabbitMQExecutor],
) -> None:
    executor = rabbit_clients()
    executor.publish_tasks([task_message(n) for n in range(2000)])
    # No waiting: publisher confirms mean every message is in the queue when publish_tasks returns.
    assert messages_in(executor) == 2000


def _broker_side_timeout(connection_name: str) -> int:
    """The heartbeat timeout the broker agreed with our connection, as the broker reports it."""
    import json
    import subprocess

    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "--formatter", "json", "client_properties", "timeout"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for conn in json.loads(listed.stdout):
        props = {p[0]: p[2] for p in conn["client_properties"]}
        if str(props.get("connection_name", "")).startswith(connection_name + "@"):
            return int(conn["timeout"])
    raise AssertionError(f"no connection named {connection_name} on the broker")


@pytest.mark.parametrize(("query", "expected"), [("", 15), ("?heartbeat=7", 7)])
def test_connections_use_a_15_second_heartbeat_unless_the_url_sets_one(
    rabbitmq_url: str, broker_prefix: str, query: str, expected: int
) -> None:
    """The broker must notice a silent host before the scheduler's worker_timeout (60 s) gives its
    tasks up as lost; its own default heartbeat (60 s) would race with that."""
    import uuid

    name = f"hareflow-heartbeat-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        env={},
        overrides={"broker_url": rabbitmq_url.rstrip("/") + "/" + query, "broker_prefix": broker_prefix},
    )
    executor = RabbitMQExecutor(settings, connection_name=name)
    executor.start(timeout=15)
    try:
        assert _broker_side_timeout(name) == expected
    finally:
        executor.close()


def test_a_trigger_consumer_gets_what_its_binding_routes_and_cancelling_leaves_the_rest_queued(
    adapter: Adapter, broker_prefix: str
) -> None:
    from hareflow.common.broker import NoBrokerTriggers, TriggerSource

    executor = adapter.client()
    source = TriggerSource(
        queue=f"{broker_prefix}.trigger.contract", exchange=f"{broker_prefix}.orders", routing_key="order.*"
    )
    inbox: queue.Queue[Delivery] = queue.Queue()
    if adapter.name == "local":
        with pytest.raises(NoBrokerTriggers):
            executor.consume_trigger(source, 10, inbox.put)
        return
    import pika

    handle = executor.consume_trigger(source, 10, inbox.put)
    url = executor._url  # type: ignore[attr-defined]

    def send(routing_key: str, message_id: str) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(url))
        channel = conn.channel()
        channel.confirm_delivery()
        props = pika.BasicProperties(message_id=message_id, delivery_mode=2)
        channel.basic_publish(source.exchange, routing_key, b"{}", props)
        conn.close()

    send("order.created", "e-1")
    send("invoice.created", "e-2")  # not bound: never arrives
    (first,) = take(inbox, 1)
    assert first.message_id == "e-1" and first.queue == source.queue
    first.ack()
    assert_nothing_more(inbox)

    executor.stop_consuming_trigger(handle)
    send("order.paid", "e-3")
    assert_nothing_more(inbox)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    waiting = conn.channel().queue_declare(source.queue, passive=True).method.message_count
    conn.close()
    assert waiting == 1
