"""The executor port: how the scheduler, results consumer, workers and web talk to each other.

Two adapters implement it and pass one contract test suite: ``rabbitmq`` (durable queues, publisher
confirms, manual acks) and ``local`` (in-process queues, for one node with no broker).

Handlers given to ``consume_*`` and ``subscribe_events`` run on the adapter's own thread and must
not block: they hand the delivery to a queue and return. ``Delivery.ack`` may be called from any
thread.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from hareflow.common.messages import HeartbeatMessage, LogMessage, ResultMessage, StateEvent, TaskMessage

#: Headers of a dead-lettered copy: how many times the original had been delivered, why it was
#: moved, the queue it was consumed from, and an id of this dead-lettering (what makes recording
#: it idempotent: a redelivered copy has the same id, the same message dead-lettered again a new one).
DELIVERIES_HEADER = "x-hareflow-deliveries"
REASON_HEADER = "x-hareflow-reason"
QUEUE_HEADER = "x-hareflow-queue"
DEAD_ID_HEADER = "x-hareflow-dead-id"
#: On a message requeued from the dead letters: the id of the dead letter it came from.
REQUEUED_FROM_HEADER = "x-hareflow-requeued-from"


class BrokerError(RuntimeError):
    """Base of broker errors."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached (recoverable: callers retry with backoff)."""


class NoBrokerTriggers(BrokerError):
    """This executor has no broker to consume event messages from (the local executor)."""


@dataclass(frozen=True)
class TriggerSource:
    """Where a DAG's event messages come from: ``queue`` (declared durable by us and bound to
    ``exchange`` with ``routing_key`` when ``exchange`` is set; else an existing queue, consumed as
    it is)."""

    queue: str
    exchange: str | None = None
    routing_key: str = "#"
    exchange_type: str = "topic"


class Delivery(abc.ABC):
    """One message handed to a consumer, to be acked or handed back exactly once."""

    body: bytes
    #: How many times this message has been delivered, this time included (1 on first delivery).
    delivery_count: int
    redelivered: bool
    #: The publisher's message id, if it set one (a dead-lettered copy keeps it).
    message_id: str | None = None
    #: The queue it was consumed from.
    queue: str = ""
    #: The message's headers and content type (empty where the adapter has none).
    headers: Mapping[str, Any] = MappingProxyType({})
    content_type: str | None = None

    @abc.abstractmethod
    def ack(self) -> None:
        """Settle the message as done. Thread-safe; a no-op if its channel is gone (the broker
        redelivers it then, and the state machine makes the repeat harmless)."""

    @abc.abstractmethod
    def requeue(self) -> None:
        """Return the message to its queue; its next delivery counts as another attempt."""

    @abc.abstractmethod
    def hand_back(self) -> None:
        """Return a message that was never started (graceful stop, or waiting too long behind busy
        slots). Its next delivery keeps this delivery's count: handing back is not an attempt."""


@dataclass(frozen=True)
class QueueStats:
    name: str
    messages: int
    consumers: int


ResultLike = ResultMessage | LogMessage | HeartbeatMessage
#: What ``consume_tasks`` returns, to stop exactly that consumer later.
ConsumerHandle = object
DeliveryHandler = Callable[[Delivery], None]


class Executor(abc.ABC):
    """The port. A dozen methods; everything else is policy in the services."""

    name: str
    #: Whether a task message this executor confirmed outlives the process that published it (a
    #: broker's durable queue: True). The scheduler never re-publishes a confirmed message of a
    #: durable executor; an in-process queue's messages die with the process (False), so a new
    #: scheduler process re-publishes what an earlier one left queued.
    durable: bool = True

    @abc.abstractmethod
    def start(self) -> None:
        """Connect and declare the shared topology. Raises BrokerUnavailable."""

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect. Unacked deliveries go back to their queues."""

    @abc.abstractmethod
    def declare_queues(self, queues: Sequence[str]) -> None:
        """Make sure task queues exist before tasks are published to them."""

    @abc.abstractmethod
    def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        """Publish task messages; return once the broker has confirmed every one (they are then
        safe until a worker acks them: the scheduler records that and never publishes them again)."""

    @abc.abstractmethod
    def consume_tasks(self, queues: Sequence[str], prefetch: int, handler: DeliveryHandler) -> ConsumerHandle:
        """Start consuming task messages from ``queues``, at most ``prefetch`` unacked at once."""

    @abc.abstractmethod
    def stop_consuming_tasks(self, handle: ConsumerHandle | None = None) -> None:
        """Stop receiving new task messages on ``handle`` (default: every consumer of this
        executor). Graceful worker shutdown; several workers may share one local executor."""

    @abc.abstractmethod
    def consume_trigger(
        self, source: TriggerSource, prefetch: int, handler: DeliveryHandler
    ) -> ConsumerHandle:
        """Declare ``source``'s queue and binding (if it is ours) and consume it on a channel of its
        own, at most ``prefetch`` unacked at once. Raises NoBrokerTriggers on an executor without a
        broker, BrokerError if the queue or exchange cannot be declared as asked."""

    @abc.abstractmethod
    def stop_consuming_trigger(self, handle: ConsumerHandle) -> None:
        """Cancel a ``consume_trigger`` consumer. Messages stay in the queue; deliveries not yet
        acked go back to it when the consumer's channel closes."""

    @abc.abstractmethod
    def publish_results(self, messages: Sequence[ResultLike], *, confirm: bool = True) -> None:
        """Publish worker results; with ``confirm``, return once the broker has them."""

    @abc.abstractmethod
    def consume_results(self, prefetch: int, handler: DeliveryHandler) -> None:
        """Start consuming results (results consumer)."""

    @abc.abstractmethod
    def publish_events(self, events: Sequence[StateEvent]) -> None:
        """Broadcast state events; best effort, never blocks for long, never raises."""

    @abc.abstractmethod
    def subscribe_events(self, handler: Callable[[StateEvent], None]) -> None:
        """Receive every state event published from now on (a private queue per subscriber)."""

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a message to the dead-letter queue with ``reason``, then ack the original. The copy
        keeps the original's message id and says why, from which queue and after how many
        deliveries it was moved."""

    @abc.abstractmethod
    def consume_dead_letters(self, prefetch: int, handler: DeliveryHandler) -> None:
        """Start consuming the dead-letter queue (the results-consumer side records each one in
        the metastore, then acks it). Deliveries carry the dead-lettered copy's headers."""

    @abc.abstractmethod
    def requeue_dead_letter(
        self,
        queue: str,
        body: bytes,
        *,
        headers: Mapping[str, Any],
        message_id: str | None,
        content_type: str | None,
    ) -> None:
        """Publish ``body`` with ``headers`` straight to ``queue`` (the queue it was dead-lettered
        from) and return once the broker has confirmed it. Raises BrokerError when the queue does
        not exist, BrokerUnavailable when the broker cannot be reached."""

    @abc.abstractmethod
    def queue_stats(self, queues: Sequence[str]) -> list[QueueStats]:
        """Depth and consumer count of task queues (and the dead-letter queue)."""

    @abc.abstractmethod
    def serve_lookups(self, handler: Callable[[bytes], bytes]) -> None:
        """Answer lookup requests (``lookup`` messages) with ``handler``'s reply body. The handler
        may block (it reads the metastore); it runs off the adapter's own thread. Several servers
        may serve at once: each request goes to one of them."""

    @abc.abstractmethod
    def lookup(self, body: bytes, timeout: float) -> bytes:
        """Send one lookup request and return the reply body. Replies are transient and never
        queued (they carry secrets). Raises BrokerUnavailable when no reply comes in ``timeout``."""

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name}

    def is_connected(self) -> bool:
        """Whether the broker connection is up right now (False while it is being re-established).
        Publishing without confirms can appear to succeed on a connection that is already dead."""
        return True
