"""The local adapter: in-process queues for one node with no broker (``hareflow standalone``).

It is not a broker imitation. Tasks wait in per-queue FIFO deques and a dispatcher thread hands them
to consumers within their prefetch; results and events are handed straight to their consumers.
Nothing survives a crash here, and nothing needs to: the metastore is the source of truth. A task
message counts as confirmed once it is in the in-process queue, which lives exactly as long as the
scheduler beside it; the executor is not ``durable``, so a scheduler process starting on this
metastore re-publishes every task instance an earlier process left queued.
"""

from __future__ import annotations

import collections
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hareflow.common.broker.base import (
    DEAD_ID_HEADER,
    DELIVERIES_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    BrokerError,
    BrokerUnavailable,
    ConsumerHandle,
    Delivery,
    DeliveryHandler,
    Executor,
    NoBrokerTriggers,
    QueueStats,
    ResultLike,
    TriggerSource,
)
from hareflow.common.messages import StateEvent, TaskMessage

log = logging.getLogger(__name__)

#: The queue name results (and log chunks, heartbeats) are consumed from here, which a dead-lettered
#: result names as its queue and a requeued one goes back to.
RESULTS_QUEUE = "(results)"


class LocalDelivery(Delivery):
    def __init__(
        self,
        body: bytes,
        on_settle: Callable[[LocalDelivery, bool], None] | None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        self.body = body
        self.headers = dict(headers or {})
        self.delivery_count = 1
        self.redelivered = False
        self._on_settle = on_settle
        self._settled = False
        self.queue = ""
        #: deliveries that count once this one is settled: it, unless handed back unstarted
        self.counted_deliveries = 1

    def ack(self) -> None:
        self._settle(requeue=False)

    def requeue(self) -> None:
        self._settle(requeue=True)

    def hand_back(self) -> None:
        self.counted_deliveries = self.delivery_count - 1  # the next delivery keeps this count
        self._settle(requeue=True)

    def _settle(self, requeue: bool) -> None:
        if self._settled:
            return
        self._settled = True
        if self._on_settle is not None:
            self._on_settle(self, requeue)


@dataclass
class _Consumer:
    queues: list[str]
    prefetch: int
    handler: DeliveryHandler
    in_flight: int = 0
    active: bool = True


@dataclass
class _State:
    # Each waiting message with how many times it has been delivered already (a requeue counts).
    queues: dict[str, collections.deque[tuple[bytes, int]]] = field(default_factory=dict)
    consumers: list[_Consumer] = field(default_factory=list)
    dead: list[tuple[bytes, str]] = field(default_factory=list)
    # Dead letters not yet recorded by a dead-letter consumer (acked), by dead-letter id.
    dead_pending: dict[str, LocalDelivery] = field(default_factory=dict)


class LocalExecutor(Executor):
    name = "local"
    durable = False

    def __init__(self) -> None:
        self._state = _State()
        self._cond = threading.Condition()
        self._results_handler: DeliveryHandler | None = None
        self._dead_handler: DeliveryHandler | None = None
        self._event_handlers: list[Callable[[StateEvent], None]] = []
        self._lookup_handler: Callable[[bytes], bytes] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, timeout: float = 0.0) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._dispatch_loop, name="hareflow-local", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def declare_queues(self, queues: Sequence[str]) -> None:
        with self._cond:
            for q in queues:
                self._state.queues.setdefault(q, collections.deque())

    def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        with self._cond:
            for m in messages:
                self._state.queues.setdefault(m.queue, collections.deque()).append((m.encode(), 0))
            self._cond.notify_all()

    def consume_tasks(self, queues: Sequence[str], prefetch: int, handler: DeliveryHandler) -> ConsumerHandle:
        self.declare_queues(queues)
        consumer = _Consumer(list(queues), prefetch, handler)
        with self._cond:
            self._state.consumers.append(consumer)
            self._cond.notify_all()
        return consumer

    def stop_consuming_tasks(self, handle: ConsumerHandle | None = None) -> None:
        with self._cond:
            for c in self._state.consumers:
                if handle is None or c is handle:
                    c.active = False

    def consume_trigger(
        self, source: TriggerSource, prefetch: int, handler: DeliveryHandler
    ) -> ConsumerHandle:
        raise NoBrokerTriggers(
            f"the local executor has no broker, so it cannot consume {source.queue!r}: a BrokerTrigger "
            f"needs executor = rabbitmq (a WebhookTrigger works with either executor)"
        )

    def stop_consuming_trigger(self, handle: ConsumerHandle) -> None:
        return None  # it never started one

    def _settled(self, consumer: _Consumer, delivery: LocalDelivery, requeue: bool) -> None:
        with self._cond:
            consumer.in_flight -= 1
            if requeue:
                self._state.queues[delivery.queue].appendleft((delivery.body, delivery.counted_deliveries))
            self._cond.notify_all()

    def _next_assignment(self) -> tuple[_Consumer, LocalDelivery] | None:
        for consumer in self._state.consumers:
            if not consumer.active or consumer.in_flight >= consumer.prefetch:
                continue
            for q in consumer.queues:
                pending = self._state.queues.get(q)
                if pending:
                    body, delivered = pending.popleft()
                    consumer.in_flight += 1
                    delivery = LocalDelivery(body, lambda d, r, c=consumer: self._settled(c, d, r))
                    delivery.delivery_count = delivery.counted_deliveries = delivered + 1
                    delivery.redelivered = delivered > 0
                    delivery.queue = q
                    return consumer, delivery
        return None

    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (assignment := self._next_assignment()) is None:
                    self._cond.wait()
                if self._closed:
                    return
            consumer, delivery = assignment  # handlers run outside the lock: they may ack at once
            try:
                consumer.handler(delivery)
            except Exception:
                log.exception("task handler failed")

    def publish_results(self, messages: Sequence[ResultLike], *, confirm: bool = True) -> None:
        handler = self._results_handler
        if handler is None:
            log.debug("no results consumer yet; dropping %d result(s)", len(messages))
            return
        for m in messages:
            delivery = LocalDelivery(m.encode(), None)
            delivery.queue = RESULTS_QUEUE
            handler(delivery)

    def consume_results(self, prefetch: int, handler: DeliveryHandler) -> None:
        self._results_handler = handler

    def publish_events(self, events: Sequence[StateEvent]) -> None:
        for handler in list(self._event_handlers):
            for event in events:
                try:
                    handler(event)
                except Exception:
                    log.exception("event handler failed")

    def subscribe_events(self, handler: Callable[[StateEvent], None]) -> None:
        self._event_handlers.append(handler)

    def serve_lookups(self, handler: Callable[[bytes], bytes]) -> None:
        self._lookup_handler = handler

    def lookup(self, body: bytes, timeout: float) -> bytes:
        # One process: the answer is a function call (the handler reads the metastore directly).
        handler = self._lookup_handler
        if handler is None:
            raise BrokerUnavailable("no lookup server in this process (is the scheduler running?)")
        return handler(body)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Hand a copy with the same headers as RabbitMQ's to the dead-letter consumer (or keep it
        until one starts: ``hareflow standalone`` starts one with its results consumer)."""
        dead_id = uuid.uuid4().hex
        headers = {
            **dict(delivery.headers),
            REASON_HEADER: reason[:1000],
            DELIVERIES_HEADER: delivery.delivery_count,
            QUEUE_HEADER: delivery.queue,
            DEAD_ID_HEADER: dead_id,
        }
        copy = LocalDelivery(delivery.body, lambda d, _requeue: self._dead_settled(dead_id), headers)
        copy.message_id = delivery.message_id
        copy.content_type = delivery.content_type or "application/json"
        with self._cond:
            self._state.dead.append((delivery.body, reason))
            self._state.dead_pending[dead_id] = copy
            handler = self._dead_handler
        delivery.ack()
        if handler is not None:
            handler(copy)

    def _dead_settled(self, dead_id: str) -> None:
        # Recorded (ack) or given up (the consumer stopped): either way it is in the metastore or
        # dies with this process, like every other in-process message.
        with self._cond:
            self._state.dead_pending.pop(dead_id, None)

    def consume_dead_letters(self, prefetch: int, handler: DeliveryHandler) -> None:
        with self._cond:
            self._dead_handler = handler
            waiting = list(self._state.dead_pending.values())
        for copy in waiting:
            handler(copy)

    def requeue_dead_letter(
        self,
        queue: str,
        body: bytes,
        *,
        headers: Mapping[str, Any],
        message_id: str | None,
        content_type: str | None,
    ) -> None:
        if queue == RESULTS_QUEUE:
            handler = self._results_handler
            if handler is None:
                raise BrokerUnavailable("no results consumer in this process to requeue a result to")
            delivery = LocalDelivery(body, None, headers)
            delivery.queue = RESULTS_QUEUE
            handler(delivery)
            return
        with self._cond:
            if queue not in self._state.queues:
                raise BrokerError(f"this process has no queue {queue!r} to requeue to")
            self._state.queues[queue].append((body, 0))
            self._cond.notify_all()

    @property
    def dead_letters(self) -> list[tuple[bytes, str]]:
        with self._cond:
            return list(self._state.dead)

    def queue_stats(self, queues: Sequence[str]) -> list[QueueStats]:
        with self._cond:
            out = []
            for q in queues:
                consumers = sum(1 for c in self._state.consumers if c.active and q in c.queues)
                out.append(QueueStats(q, len(self._state.queues.get(q, ())), consumers))
            consumers = 1 if self._dead_handler is not None else 0
            out.append(QueueStats("(dead letters)", len(self._state.dead_pending), consumers))
            return out
