"""Event triggers: what starts a DAG besides its schedule (broker messages, webhook calls).

``DAG(trigger=...)`` takes one trigger or a list of them. Each event's JSON object body becomes the
run's conf; each event has a deduplication key, and a DAG has exactly one run per key however often
the event is delivered (``common.event_runs`` creates the runs).

The serialized form (``"triggers"`` in the serialized DAG) is a list of plain dicts, so the
scheduler and the web server work from the metastore alone:

    {"kind": "broker", "exchange": str|null, "routing_key": str, "exchange_type": str,
     "queue": str|null, "dedupe_key": str|null}
    {"kind": "webhook", "dedupe_key": str|null}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hareflow.common.dag.errors import DagDefinitionError

#: A dotted path into the body: ``order_id`` or ``order.id`` (letters, digits, ``_`` and ``-``).
FIELD_PATH = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
#: AMQP names (exchanges, queues) we accept: no spaces or control characters, at most 200 bytes.
AMQP_NAME = re.compile(r"^[A-Za-z0-9_.:/@-]{1,200}$")
EXCHANGE_TYPES = ("topic", "direct", "fanout", "headers")


def _check_dedupe_key(value: object, what: str) -> str | None:
    if value is None:
        return None
    if callable(value):
        raise DagDefinitionError.here(
            f"{what}: dedupe_key must be the name of a body field (e.g. 'order_id' or 'order.id'), not a "
            f"function: the scheduler and web server read it from the stored DAG, without your code"
        )
    if not isinstance(value, str) or not FIELD_PATH.match(value):
        raise DagDefinitionError.here(
            f"{what}: dedupe_key {value!r} must be a field name or dotted path like 'order_id' or 'order.id'"
        )
    return value


@dataclass(frozen=True, init=False)
class BrokerTrigger:
    """Start a run for every message on a RabbitMQ exchange binding or an existing queue.

    ``exchange`` + ``routing_key``: the scheduler declares a durable queue of its own
    (``<prefix>.trigger.<dag_id>``), binds it and consumes it. ``queue``: consume that existing
    queue as it is (it is not declared or bound). ``dedupe_key``: a body field holding the event's
    key; by default the message's AMQP ``message_id``, else a hash of the body.
    """

    exchange: str | None
    routing_key: str
    queue: str | None
    dedupe_key: str | None
    exchange_type: str

    def __init__(
        self,
        exchange: str | None = None,
        routing_key: str = "#",
        *,
        queue: str | None = None,
        dedupe_key: str | None = None,
        exchange_type: str = "topic",
    ) -> None:
        what = "BrokerTrigger"
        if (exchange is None) == (queue is None):
            raise DagDefinitionError.here(f"{what}: give exchange= (with routing_key=) or queue=, not both")
        for name, value in (("exchange", exchange), ("queue", queue)):
            if value is not None and (not isinstance(value, str) or not AMQP_NAME.match(value)):
                raise DagDefinitionError.here(
                    f"{what}: {name} {value!r} must be 1-200 letters, digits and _ . : / @ -"
                )
        if exchange is not None and exchange.startswith("amq."):
            raise DagDefinitionError.here(
                f"{what}: exchange {exchange!r}: amq.* exchanges are the broker's own"
            )
        if not isinstance(routing_key, str) or len(routing_key) > 255:
            raise DagDefinitionError.here(f"{what}: routing_key must be a string of at most 255 characters")
        if queue is not None and routing_key != "#":
            raise DagDefinitionError.here(
                f"{what}: routing_key applies to exchange=, not to an existing queue"
            )
        if exchange_type not in EXCHANGE_TYPES:
            raise DagDefinitionError.here(
                f"{what}: exchange_type {exchange_type!r} must be one of {', '.join(EXCHANGE_TYPES)}"
            )
        object.__setattr__(self, "exchange", exchange)
        object.__setattr__(self, "routing_key", routing_key)
        object.__setattr__(self, "queue", queue)
        object.__setattr__(self, "dedupe_key", _check_dedupe_key(dedupe_key, what))
        object.__setattr__(self, "exchange_type", exchange_type)

    def serialize(self) -> dict[str, Any]:
        return {
            "kind": "broker",
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "exchange_type": self.exchange_type,
            "queue": self.queue,
            "dedupe_key": self.dedupe_key,
        }


@dataclass(frozen=True, init=False)
class WebhookTrigger:
    """Start a run for every ``POST /api/v1/dags/<dag_id>/events`` (an API token with the op role).

    The event's key is the request's ``Idempotency-Key`` header, else the body field named by
    ``dedupe_key``, else a hash of the body.
    """

    dedupe_key: str | None

    def __init__(self, *, dedupe_key: str | None = None) -> None:
        object.__setattr__(self, "dedupe_key", _check_dedupe_key(dedupe_key, "WebhookTrigger"))

    def serialize(self) -> dict[str, Any]:
        return {"kind": "webhook", "dedupe_key": self.dedupe_key}


Trigger = BrokerTrigger | WebhookTrigger


def check_triggers(value: object, dag_id: str) -> tuple[Trigger, ...]:
    """``DAG(trigger=...)`` as a tuple of triggers, or a DagDefinitionError saying what is wrong."""
    if value is None:
        return ()
    items: Sequence[object] = value if isinstance(value, (list, tuple)) else (value,)
    out: list[Trigger] = []
    for item in items:
        if not isinstance(item, (BrokerTrigger, WebhookTrigger)):
            raise DagDefinitionError.here(
                f"DAG '{dag_id}': trigger must be a BrokerTrigger, a WebhookTrigger or a list of them, "
                f"not {type(item).__name__}"
            )
        out.append(item)
    if sum(isinstance(t, WebhookTrigger) for t in out) > 1:
        raise DagDefinitionError.here(f"DAG '{dag_id}': at most one WebhookTrigger")
    broker = [t for t in out if isinstance(t, BrokerTrigger)]
    if len(set(broker)) != len(broker):
        raise DagDefinitionError.here(f"DAG '{dag_id}': the same BrokerTrigger is given twice")
    return tuple(out)


def describe_trigger(spec: dict[str, Any]) -> str:
    """A serialized trigger as the UI shows it: ``on event: orders/order.created``."""
    if spec.get("kind") == "webhook":
        return "on event: webhook"
    if spec.get("queue"):
        return f"on event: queue {spec['queue']}"
    return f"on event: {spec.get('exchange')}/{spec.get('routing_key')}"
