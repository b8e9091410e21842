"""Event triggers as DAG arguments, and how an event's key and run id are decided."""

from __future__ import annotations

import pytest
from hareflow.common.broker import NoBrokerTriggers, TriggerSource
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.dag.serialize import SerializedDag, serialize_dag
from hareflow.common.dag.triggers import describe_trigger
from hareflow.common.event_runs import EventError, decode_body, event_key, event_run_id, make_event
from hareflow.common.runs import ConfError

from hareflow import DAG, BrokerTrigger, DagDefinitionError, WebhookTrigger


def test_a_dag_serializes_its_triggers_and_reads_them_back() -> None:
    dag = DAG(
        "orders",
        trigger=[
            BrokerTrigger(exchange="orders", routing_key="order.created", dedupe_key="order_id"),
            WebhookTrigger(),
        ],
    )

    data = serialize_dag(dag)

    assert data["triggers"] == [
        {
            "kind": "broker",
            "exchange": "orders",
            "routing_key": "order.created",
            "exchange_type": "topic",
            "queue": None,
            "dedupe_key": "order_id",
        },
        {"kind": "webhook", "dedupe_key": None},
    ]
    assert SerializedDag.from_dict(data).to_dict() == data
    assert [describe_trigger(t) for t in data["triggers"]] == [
        "on event: orders/order.created",
        "on event: webhook",
    ]


def test_a_dag_without_triggers_keeps_its_serialized_form() -> None:
    assert "triggers" not in serialize_dag(DAG("plain"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BrokerTrigger(), "exchange= (with routing_key=) or queue="),
        (lambda: BrokerTrigger(exchange="a", queue="b"), "not both"),
        (lambda: BrokerTrigger(exchange="has space"), "exchange 'has space'"),
        (lambda: BrokerTrigger(exchange="amq.topic"), "broker's own"),
        (lambda: BrokerTrigger(queue="q", routing_key="x"), "routing_key applies"),
        (lambda: BrokerTrigger(exchange="a", exchange_type="x-delayed"), "exchange_type"),
        (lambda: BrokerTrigger(exchange="a", dedupe_key=lambda body: body["id"]), "not a function"),
        (lambda: WebhookTrigger(dedupe_key="a..b"), "dotted path"),
        (lambda: DAG("d", trigger="orders"), "trigger must be a BrokerTrigger"),
        (lambda: DAG("d", trigger=[WebhookTrigger(), WebhookTrigger()]), "at most one WebhookTrigger"),
        (lambda: DAG("d", trigger=[BrokerTrigger(queue="q"), BrokerTrigger(queue="q")]), "given twice"),
    ],
)
def test_bad_trigger_arguments_fail_when_the_dag_file_is_parsed(make: object, message: str) -> None:
    with pytest.raises(DagDefinitionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()  # type: ignore[operator]


def test_the_key_is_the_body_field_then_the_transport_id_then_a_hash_of_the_body() -> None:
    body = {"order": {"id": 12}, "amount": 3}

    assert event_key(body, "order.id", "msg-1") == "12"
    assert event_key(body, None, "msg-1") == "msg-1"
    assert event_key(body, None, None) == event_key({"amount": 3, "order": {"id": 12}}, None, None)
    assert event_key(body, None, None).startswith("sha256-")
    assert event_key(body, None, None) != event_key({"amount": 4}, None, None)


@pytest.mark.parametrize("body", [{"id": None}, {"id": True}, {"id": ""}, {"id": [1]}, {}])
def test_a_missing_or_unusable_key_field_is_an_error_naming_it(body: dict[str, object]) -> None:
    with pytest.raises(EventError) as raised:
        event_key(body, "id", "msg-1")
    assert raised.value.field == "id"


def test_run_ids_are_readable_keys_or_hashes_that_cannot_collide() -> None:
    assert event_run_id("order-17") == "event__order-17"
    hashed = event_run_id("has space/and slash")
    assert hashed.startswith("event__~") and hashed == event_run_id("has space/and slash")
    assert event_run_id("~x") != event_run_id("x") and event_run_id("~x").startswith("event__~")
    assert len(event_run_id("k" * 1000)) <= 250


def test_an_event_body_is_checked_like_a_triggers_conf() -> None:
    with pytest.raises(ConfError) as raised:
        make_event({"amount": 0}, {"amount": "x"}, None, "m1")
    assert raised.value.field == "conf.amount"
    assert make_event({"amount": 0}, {"amount": 2}, None, "m1").run_id == "event__m1"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"\xff"])
def test_a_body_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(EventError):
        decode_body(raw)


def test_the_local_executor_says_it_cannot_consume_broker_triggers() -> None:
    with pytest.raises(NoBrokerTriggers, match="executor = rabbitmq"):
        LocalExecutor().consume_trigger(TriggerSource(queue="q"), 10, lambda d: None)
