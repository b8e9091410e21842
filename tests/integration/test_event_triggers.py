"""Broker events become runs: exactly one run per event key, whatever the broker or publisher does.

The consumer is driven one cycle at a time (``run_once``) against a real RabbitMQ and a real
metastore; the end-to-end tests run a whole system and check the event's body reaches the task.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest
from hareflow.common.broker.rabbitmq import REASON_HEADER, RabbitMQExecutor
from hareflow.common.config import Settings
from hareflow.common.db import Dag, DagRun, ImportError_, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.common.event_runs import Event, insert_event_runs
from hareflow.scheduler.event_triggers import TriggerConsumer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.events import make_events, publish
from tests.conftest import fast_settings
from tests.integration.conftest import System, wait_until
from tests.web.conftest import make_dag

DB_FIXTURES = {"postgresql": "postgres_url", "sqlite": "sqlite_url", "mysql": "mysql_url"}


def _sessions(url: str) -> sessionmaker[Session]:
    engine = create_engine_for(url)
    migrate(engine)
    return make_session_factory(engine)


def _run_ids(sessions: sessionmaker[Session], dag_id: str) -> list[str]:
    with sessions() as s:
        return sorted(s.scalars(select(DagRun.run_id).where(DagRun.dag_id == dag_id)))


@pytest.mark.parametrize("database", ["postgresql", "sqlite", "mysql"])
def test_batched_inserts_store_one_run_per_key_and_count_only_the_new_ones(
    request: pytest.FixtureRequest, database: str
) -> None:
    sessions = _sessions(request.getfixturevalue(DB_FIXTURES[database]))
    dag_id = make_dag(sessions, "batched")
    now = datetime.now(UTC)
    first = [Event({"n": 1}, "a"), Event({"n": 2}, "b"), Event({"n": 1}, "a")]
    second = [Event({"n": 2}, "b"), Event({"n": 3}, "c")]

    with sessions() as s, s.begin():
        dag = s.get(Dag, dag_id)
        created_first = insert_event_runs(s, dag, first, now, triggered_by="test")
    with sessions() as s, s.begin():
        dag = s.get(Dag, dag_id)
        created_second = insert_event_runs(s, dag, second, now, triggered_by="test")

    assert (created_first, created_second) == (2, 1)
    assert _run_ids(sessions, dag_id) == ["event__a", "event__b", "event__c"]
    with sessions() as s:
        run = s.scalar(select(DagRun).where(DagRun.run_id == "event__a"))
        assert run is not None and run.run_type == "event" and run.conf == {"n": 1}
        assert run.interval_key is None and run.state == "queued"


# -- the consumer on a real broker -------------------------------------------------------------------


class Rig:
    """A metastore with one BrokerTrigger DAG, and consumers of its queue."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], url: str) -> None:
        self.settings = settings
        self.sessions = sessions
        self.url = url
        self.exchange = f"{settings.broker_prefix}.orders"
        self.executors: list[RabbitMQExecutor] = []

    def dag(self, dag_id: str, *, dedupe_key: str | None = None, params: dict[str, Any] | None = None) -> str:
        trigger = {
            "kind": "broker",
            "exchange": self.exchange,
            "routing_key": "order.created",
            "exchange_type": "topic",
            "queue": None,
            "dedupe_key": dedupe_key,
        }
        return make_dag(self.sessions, dag_id, triggers=[trigger], params=params)

    def consumer(self, cls: type[TriggerConsumer] = TriggerConsumer) -> TriggerConsumer:
        executor = RabbitMQExecutor(self.settings, connection_name="hareflow-events-test")
        executor.start(timeout=15)
        self.executors.append(executor)
        consumer = cls(settings=self.settings, session_factory=self.sessions, executor=executor)
        consumer.sync_consumers()
        return consumer

    def publish(self, events: list[tuple[str | None, dict[str, Any] | bytes]]) -> None:
        publish(
            self.url,
            self.exchange,
            "order.created",
            [(mid, body if isinstance(body, bytes) else json.dumps(body).encode()) for mid, body in events],
        )

    def queue_depth(self, name: str) -> int:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            return conn.channel().queue_declare(name, passive=True).method.message_count
        finally:
            conn.close()

    def dead_letters(self) -> list[tuple[bytes, dict[str, Any]]]:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        out = []
        try:
            channel = conn.channel()
            while True:
                method, props, body = channel.basic_get(f"{self.settings.broker_prefix}.dead", auto_ack=True)
                if method is None:
                    return out
                out.append((body, dict(props.headers or {})))
        finally:
            conn.close()


def drain(consumer: TriggerConsumer, until: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run consumer cycles until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            pytest.fail("the consumer did not get there in time")
        consumer.run_once(wait=0.1)


@pytest.fixture
def rig(tmp_path: Path, postgres_url: str, rabbitmq_url: str, broker_prefix: str) -> Iterator[Rig]:
    settings = fast_settings(
        tmp_path, database_url=postgres_url, broker_url=rabbitmq_url, broker_prefix=broker_prefix
    )
    sut = Rig(settings, _sessions(postgres_url), rabbitmq_url)
    try:
        yield sut
    finally:
        for executor in sut.executors:
            executor.close()


def test_the_same_message_id_published_twice_makes_one_run(rig: Rig) -> None:
    dag_id = rig.dag("by_message_id")
    consumer = rig.consumer()
    queue = consumer.consuming()[0]

    rig.publish([("m-1", {"n": 1}), ("m-1", {"n": 1}), ("m-2", {"n": 2})])
    drain(consumer, lambda: rig.queue_depth(queue) == 0 and len(_run_ids(rig.sessions, dag_id)) == 2)
    consumer.run_once(wait=0.3)  # anything left over would be handled now

    assert _run_ids(rig.sessions, dag_id) == ["event__m-1", "event__m-2"]
    assert rig.queue_depth(queue) == 0  # no copy left waiting in the queue


def test_the_same_body_key_published_twice_makes_one_run_whatever_the_message_ids(rig: Rig) -> None:
    dag_id = rig.dag("by_body_key", dedupe_key="order.id")
    consumer = rig.consumer()

    rig.publish([("x-1", {"order": {"id": 9}}), ("x-2", {"order": {"id": 9}}), (None, {"order": {"id": 10}})])
    drain(consumer, lambda: len(_run_ids(rig.sessions, dag_id)) >= 2)
    consumer.run_once(wait=0.3)

    assert _run_ids(rig.sessions, dag_id) == ["event__10", "event__9"]


def test_a_bad_body_makes_no_run_and_is_dead_lettered_with_its_reason(rig: Rig) -> None:
    dag_id = rig.dag("bad_bodies", dedupe_key="order_id", params={"amount": 0})
    consumer = rig.consumer()

    rig.publish(
        [
            ("b-1", b"not json"),
            ("b-2", {"amount": 1}),  # no order_id
            ("b-3", {"order_id": "o-3", "amount": "lots"}),  # amount must be a number
            ("b-4", {"order_id": "o-4", "amount": 4}),
        ]
    )
    dead: list[tuple[bytes, dict[str, Any]]] = []

    def settled() -> bool:
        dead.extend(rig.dead_letters())
        return len(dead) == 3 and len(_run_ids(rig.sessions, dag_id)) == 1

    drain(consumer, settled)

    reasons = {body.decode("utf-8", "replace"): headers[REASON_HEADER] for body, headers in dead}
    assert _run_ids(rig.sessions, dag_id) == ["event__o-4"]
    assert "not JSON" in reasons["not json"]
    assert "order_id" in reasons[json.dumps({"amount": 1})]
    assert "conf.amount" in reasons[json.dumps({"order_id": "o-3", "amount": "lots"})]


class CrashesBeforeAcking(TriggerConsumer):
    """Dies between the commit and the acks: its connection goes away with every delivery unacked."""

    def _before_ack(self) -> None:
        executor = self._executor
        assert isinstance(executor, RabbitMQExecutor) and executor._conn is not None
        executor._call(executor._conn.close(), timeout=10)  # the acks that follow go nowhere


def test_a_redelivery_after_a_crash_between_commit_and_ack_is_recognised_and_makes_no_second_run(
    rig: Rig,
) -> None:
    dag_id = rig.dag("crash_window")
    crashing = rig.consumer(CrashesBeforeAcking)
    queue = crashing.consuming()[0]
    rig.publish([(f"c-{i}", {"i": i}) for i in range(20)])

    drain(crashing, lambda: len(_run_ids(rig.sessions, dag_id)) == 20)
    assert rig.queue_depth(queue) == 20  # committed, never acked: the broker still has them all

    survivor = rig.consumer()
    seen = {"created": 0, "duplicates": 0}
    deadline = time.monotonic() + 30
    while seen["duplicates"] < 20 and time.monotonic() < deadline:
        report = survivor.run_once(wait=0.1)
        if report is not None:
            seen["created"] += report.created
            seen["duplicates"] += report.duplicates

    assert seen == {"created": 0, "duplicates": 20}  # every redelivery recognised, and acked
    assert len(_run_ids(rig.sessions, dag_id)) == 20


def test_a_burst_with_ten_percent_duplicates_makes_exactly_one_run_per_unique_key(rig: Rig) -> None:
    dag_id = rig.dag("burst")
    consumer = rig.consumer()
    events = make_events(2000, 0.1)
    unique = {mid for mid, _ in events}

    publish(rig.url, rig.exchange, "order.created", events)
    drain(consumer, lambda: len(_run_ids(rig.sessions, dag_id)) >= len(unique), timeout=120)
    consumer.run_once(wait=0.3)

    assert len(unique) == 1800
    assert _run_ids(rig.sessions, dag_id) == sorted(f"event__{k}" for k in unique)


def test_a_paused_dags_events_wait_in_its_queue_until_it_is_unpaused(rig: Rig) -> None:
    dag_id = rig.dag("pausable")
    consumer = rig.consumer()
    queue = consumer.consuming()[0]
    with rig.sessions() as s, s.begin():
        s.get(Dag, dag_id).is_paused = True
    consumer.sync_consumers()
    assert consumer.consuming() == []

    rig.publish([("p-1", {}), ("p-2", {})])
    consumer.run_once(wait=0.3)
    assert _run_ids(rig.sessions, dag_id) == [] and rig.queue_depth(queue) == 2

    with rig.sessions() as s, s.begin():
        s.get(Dag, dag_id).is_paused = False
    consumer.dags_changed()
    drain(consumer, lambda: len(_run_ids(rig.sessions, dag_id)) == 2)
    assert _run_ids(rig.sessions, dag_id) == ["event__p-1", "event__p-2"]


# -- whole systems ---------------------------------------------------------------------------------

ORDERS_DAG = """
from hareflow import DAG, BrokerTrigger, task

with DAG("orders", trigger=BrokerTrigger(exchange="{exchange}", routing_key="order.*", dedupe_key="order_id"),
         params={{"amount": 0}}):
    @task
    def handle(params):
        return {{"order_id": params["order_id"], "amount": params["amount"]}}

    handle()
"""


@pytest.mark.parametrize("system", ["local", "rabbitmq", "sqlite-local", "mariadb-rabbitmq"], indirect=True)
def test_a_published_event_starts_a_run_whose_task_sees_the_body_as_params(
    system: System, write_dag: Callable[[str, str], Path]
) -> None:
    if system.executor == "local":  # the local executor, on PostgreSQL or SQLite
        # No broker: the DAG is refused with an import error saying so, and nothing is stored.
        write_dag("orders.py", ORDERS_DAG.format(exchange="x"))
        system.start()
        message = wait_until(lambda: _import_error(system), message="an import error")
        assert "BrokerTrigger" in message and "local executor" in message
        with system.c.sessions() as s:
            assert s.get(Dag, "orders") is None
        return
    exchange = f"{system.settings.broker_prefix}.shop"
    write_dag("orders.py", ORDERS_DAG.format(exchange=exchange))
    system.start()
    system.c.wait_for_dag("orders")
    with system.c.sessions() as s:
        dag = s.get(Dag, "orders")
        assert dag is not None and dag.schedule == f"on event: {exchange}/order.*"  # the list's column
    queue = f"{system.settings.broker_prefix}.trigger.orders"
    wait_until(lambda: _queue_exists(system.settings.broker_url, queue), message="the trigger queue")

    publish(
        system.settings.broker_url,
        exchange,
        "order.created",
        [("m1", json.dumps({"order_id": "o-77", "amount": 5}).encode())] * 2,
    )

    state = system.c.wait_for_run("orders", "event__o-77")
    assert state == "success"
    assert system.result("orders", "event__o-77", "handle") == {"order_id": "o-77", "amount": 5}
    assert [r.run_id for r in system.runs("orders")] == ["event__o-77"]


def _import_error(system: System) -> str | None:
    with system.c.sessions() as s:
        return s.scalar(select(ImportError_.message))


def _queue_exists(url: str, name: str) -> bool:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if conn.is_open:
            conn.close()


KILLED_AFTER_COMMIT = """
import json, os, signal, sys
from hareflow.common.broker.rabbitmq import RabbitMQExecutor
from hareflow.common.config import load_settings
from hareflow.common.db import create_engine_for, make_session_factory
from hareflow.scheduler.event_triggers import TriggerConsumer

class DiesAfterCommit(TriggerConsumer):
    def _before_ack(self):
        os.kill(os.getpid(), signal.SIGKILL)  # committed, nothing acked: the worst moment

settings = load_settings(env={}, overrides=json.loads(sys.argv[1]))
executor = RabbitMQExecutor(settings, connection_name="hareflow-killed-consumer")
executor.start()
sessions = make_session_factory(create_engine_for(settings.database_url))
consumer = DiesAfterCommit(settings=settings, session_factory=sessions, executor=executor)
while True:
    consumer.run_once(wait=0.2)
"""


def test_a_consumer_process_killed_right_after_committing_leaves_one_run_per_event(rig: Rig) -> None:
    import subprocess
    import sys

    dag_id = rig.dag("killed_after_commit")
    rig.consumer().close()  # declares and binds the queue before the publish
    rig.publish([(f"k-{i}", {"i": i}) for i in range(50)])
    overrides = {
        "database_url": rig.settings.database_url,
        "broker_url": rig.settings.broker_url,
        "broker_prefix": rig.settings.broker_prefix,
        "home": str(rig.settings.home),
    }

    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_COMMIT, json.dumps(overrides)], timeout=60, capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    committed = len(_run_ids(rig.sessions, dag_id))
    assert committed > 0  # it died after a commit, before any ack

    survivor = rig.consumer()
    drain(survivor, lambda: len(_run_ids(rig.sessions, dag_id)) == 50)
    survivor.run_once(wait=0.3)

    assert _run_ids(rig.sessions, dag_id) == sorted(f"event__k-{i}" for i in range(50))


def test_two_schedulers_consuming_one_queue_make_one_run_per_key(rig: Rig) -> None:
    import threading

    dag_id = rig.dag("two_schedulers")
    consumers = [rig.consumer(), rig.consumer()]
    events = make_events(1000, 0.1)
    # The same events again from a second publisher: copies now reach both schedulers at once.
    publish(rig.url, rig.exchange, "order.created", events)
    publish(rig.url, rig.exchange, "order.created", events)
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in consumers]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(_run_ids(rig.sessions, dag_id)) >= 900, timeout=60, message="900 runs")
    finally:
        stop.set()
        for t in threads:
            t.join(10)

    assert _run_ids(rig.sessions, dag_id) == sorted(f"event__{k}" for k in {m for m, _ in events})
