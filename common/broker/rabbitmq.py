"""The RabbitMQ adapter: aio-pika on one event-loop thread that owns the connection.

The rest of hareflow is plain threads; this class gives it a synchronous API. Each public method
hands a coroutine to the loop thread and waits for it (publishing) or returns at once (acks).
aio-pika's robust connection reconnects with backoff and restores channels, queues, bindings and
consumers; messages that were unacked when a connection dropped are redelivered by the broker,
which the state machine makes harmless.

Publisher confirms are pipelined: a batch of messages is published as concurrent coroutines, each
awaiting its own confirm, so a batch costs about one broker round trip, not one per message.

Delivery counting: quorum queues count deliveries in ``x-delivery-count``. Classic queues only say
``redelivered``; a redelivered task message is re-published with an incremented
``x-hareflow-deliveries`` header (confirmed) and the original acked, so a message that keeps
killing workers is still counted and dead-lettered past ``max_deliveries``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import aio_pika
import aiormq
import yarl
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
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
    QueueStats,
    ResultLike,
    TriggerSource,
)
from hareflow.common.broker.topology import Topology
from hareflow.common.config import Settings, mask_url
from hareflow.common.messages import EventBatch, MessageError, StateEvent, TaskMessage, decode

log = logging.getLogger(__name__)
#: AMQP heartbeat (seconds) unless the URL sets ``?heartbeat=``. The broker drops a silent peer after
#: about two of them and then hands its unacked tasks to other workers; at 15 s that happens well
#: within ``worker_timeout`` (60 s), so a host cut off from the network has its tasks redelivered
#: before the scheduler gives them up as lost. (The broker's own default, 60 s, races with it.)
DEFAULT_HEARTBEAT = 15
T = TypeVar("T")

__all__ = ["DELIVERIES_HEADER", "QUEUE_HEADER", "REASON_HEADER", "RabbitMQExecutor"]
_RECOVERABLE = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
)


class RabbitDelivery(Delivery):
    def __init__(
        self,
        message: AbstractIncomingMessage,
        count: int,
        loop: asyncio.AbstractEventLoop,
        republish: Callable[[AbstractIncomingMessage, int], Coroutine[Any, Any, None]] | None = None,
        queue: str = "",
    ) -> None:
        self._message = message
        self.message_id = message.message_id
        self.queue = queue
        #: the original's headers and content type, carried onto a dead-lettered copy
        self.headers = dict(message.headers or {})
        self.content_type = message.content_type
        self._loop = loop
        self._republish = republish
        self._settled = False
        self.body = message.body
        self.delivery_count = count
        self.redelivered = bool(message.redelivered)

    def _settle(self, coro_factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._settled:
            return
        self._settled = True

        async def run() -> None:
            try:
                await coro_factory()
            except Exception as exc:  # the channel is gone: the broker will redeliver
                log.debug("could not settle delivery (%s); the broker will redeliver it", exc)

        if _on_loop(self._loop):
            self._loop.create_task(run())
        else:
            asyncio.run_coroutine_threadsafe(run(), self._loop)

    def ack(self) -> None:
        self._settle(lambda: self._message.ack())

    def requeue(self) -> None:
        self._settle(lambda: self._message.nack(requeue=True))

    def hand_back(self) -> None:
        republish = self._republish
        if republish is None:
            self.requeue()
            return

        async def copy_then_ack() -> None:
            # A fresh copy carrying the same count, then the original acked: a nack would mark it
            # redelivered and count the hand-back as an attempt toward max_deliveries.
            try:
                await republish(self._message, self.delivery_count)
            except Exception as exc:
                log.warning("could not hand a task back (%s); requeueing it instead", exc)
                await self._message.nack(requeue=True)
                return
            await self._message.ack()

        self._settle(copy_then_ack)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class RabbitMQExecutor(Executor):
    name = "rabbitmq"

    def __init__(self, settings: Settings, *, connection_name: str = "hareflow") -> None:
        self._url = settings.broker_url
        self._settings = settings
        self.topology = Topology(
            prefix=settings.broker_prefix,
            queue_type=settings.queue_type,
            max_deliveries=settings.max_deliveries,
        )
        self._connection_name = connection_name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="hareflow-amqp", daemon=True)
        self._conn: AbstractRobustConnection | None = None
        self._confirm_channel: AbstractChannel | None = None
        self._event_channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._declared: set[str] = set()
        self._task_consumers: list[list[tuple[AbstractQueue, str]]] = []
        self._task_channel: AbstractChannel | None = None
        self._reply_channel: AbstractChannel | None = None
        self._requeue_channel: AbstractChannel | None = None
        self._waiting_replies: dict[str, asyncio.Future[bytes]] = {}
        #: Held while opening a channel that may be closed by the broker (a passive declaration of
        #: a missing queue) and while opening trigger channels: aiormq can hand a number the broker
        #: has not finished closing to a channel opened at that moment ("second 'channel.open'
        #: seen", which closes the whole connection).
        self._channel_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if _on_loop(self._loop):
            raise RuntimeError("blocking broker call from the broker's own thread")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise BrokerUnavailable(f"broker at {mask_url(self._url)} did not answer in time") from None
        except concurrent.futures.CancelledError:
            # A connection found dead (missed heartbeats) cancels what waits on it, e.g. a confirm.
            raise BrokerUnavailable(f"connection to the broker at {mask_url(self._url)} was lost") from None

    def start(self, timeout: float = 30.0) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            try:
                self._call(self._connect(), timeout=max(1.0, deadline - time.monotonic()))
                return
            except (BrokerUnavailable, *_RECOVERABLE) as exc:
                if time.monotonic() + delay > deadline:
                    raise BrokerUnavailable(
                        f"cannot connect to the broker at {mask_url(self._url)}: {exc}"
                    ) from None
                log.warning("broker at %s unreachable (%s); retrying", mask_url(self._url), exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _connect(self) -> None:
        # aio-pika drops ``client_properties`` when given a URL: the name must travel as ``?name=``.
        name = f"{self._connection_name}@{socket.gethostname()}:{os.getpid()}"
        url = yarl.URL(self._url).update_query(name=name)
        if "heartbeat" not in url.query:
            url = url.update_query(heartbeat=str(DEFAULT_HEARTBEAT))
        self._conn = await aio_pika.connect_robust(url, reconnect_interval=1.0, timeout=10)
        self._confirm_channel = await self._conn.channel(publisher_confirms=True)
        self._event_channel = await self._conn.channel(publisher_confirms=False)
        topo = self.topology
        ch = self._confirm_channel
        self._exchanges["tasks"] = await ch.declare_exchange(
            topo.tasks_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._exchanges["results"] = await ch.declare_exchange(
            topo.results_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._exchanges["dead"] = await ch.declare_exchange(
            topo.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        self._exchanges["events"] = await self._event_channel.declare_exchange(
            topo.events_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead = await ch.declare_queue(
            topo.dead_queue, durable=True, arguments={"x-queue-type": topo.queue_type}
        )
        await dead.bind(self._exchanges["dead"])
        results = await ch.declare_queue(
            topo.results_queue, durable=True, arguments=topo.durable_queue_arguments()
        )
        await results.bind(self._exchanges["results"], routing_key="result")

    def is_connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed and conn.connected.is_set()

    def close(self) -> None:
        if self._conn is not None and self._thread.is_alive():
            try:
                self._call(self._conn.close(), timeout=10)
            except Exception as exc:  # closing a dead connection is fine
                log.debug("closing broker connection: %s", exc)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    # -- publishing --------------------------------------------------------------------------

    def _retrying(self, make: Callable[[], Coroutine[Any, Any, None]], what: str) -> None:
        """Run a publish, retrying recoverable failures with backoff until the confirm timeout."""
        deadline = time.monotonic() + self._settings.publish_confirm_timeout
        delay = 0.1
        while True:
            try:
                self._call(make(), timeout=max(0.5, deadline - time.monotonic()))
                return
            except (BrokerUnavailable, *_RECOVERABLE) as exc:
                if time.monotonic() + delay > deadline:
                    raise BrokerUnavailable(f"{what}: broker at {mask_url(self._url)}: {exc}") from None
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def declare_queues(self, queues: Sequence[str]) -> None:
        missing = [q for q in queues if q not in self._declared]
        if missing:
            self._retrying(lambda: self._declare_task_queues(missing), "declare queues")

    async def _declare_task_queues(self, queues: Sequence[str]) -> None:
        assert self._confirm_channel is not None
        for name in queues:
            queue = await self._confirm_channel.declare_queue(
                self.topology.task_queue(name), durable=True, arguments=self.topology.task_queue_arguments()
            )
            await queue.bind(self._exchanges["tasks"], routing_key=name)
            self._declared.add(name)

    def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        if not messages:
            return
        self.declare_queues(sorted({m.queue for m in messages}))
        bodies = [(m.queue, m.encode(), m.key.label()) for m in messages]
        self._retrying(lambda: self._publish_many("tasks", bodies, persistent=True), "publish tasks")

    async def _publish_many(
        self, exchange: str, items: Sequence[tuple[str, bytes, str]], *, persistent: bool
    ) -> None:
        ex = self._exchanges[exchange]
        mode = aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
        await asyncio.gather(
            *(
                ex.publish(
                    aio_pika.Message(
                        body, delivery_mode=mode, content_type="application/json", message_id=msg_id
                    ),
                    routing_key=key,
                )
                for key, body, msg_id in items
            )
        )

    def publish_results(self, messages: Sequence[ResultLike], *, confirm: bool = True) -> None:
        if not messages:
            return
        items = [("result", m.encode(), m.type) for m in messages]
        if confirm:
            self._retrying(lambda: self._publish_many("results", items, persistent=True), "publish results")
        else:
            asyncio.run_coroutine_threadsafe(self._best_effort("results", items), self._loop)

    async def _best_effort(self, exchange: str, items: Sequence[tuple[str, bytes, str]]) -> None:
        try:
            await self._publish_many(exchange, items, persistent=exchange != "events")
        except Exception as exc:
            log.debug("best-effort publish to %s failed: %s", exchange, exc)

    def publish_events(self, events: Sequence[StateEvent]) -> None:
        if not events or not self._thread.is_alive():
            return
        # One message per batch: a transaction's changes travel together (and cost one publish).
        items = [("", EventBatch(events=list(events)).encode(), "events")]
        asyncio.run_coroutine_threadsafe(self._best_effort("events", items), self._loop)

    # -- consuming ---------------------------------------------------------------------------

    def consume_tasks(self, queues: Sequence[str], prefetch: int, handler: DeliveryHandler) -> ConsumerHandle:
        self.declare_queues(queues)
        return self._call(self._consume_tasks(queues, prefetch, handler), timeout=30)

    async def _consume_tasks(
        self, queues: Sequence[str], prefetch: int, handler: DeliveryHandler
    ) -> list[tuple[AbstractQueue, str]]:
        assert self._conn is not None
        # One channel for all task queues: prefetch = concurrency bounds what this worker holds.
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=prefetch)
        self._task_channel = channel
        handle: list[tuple[AbstractQueue, str]] = []
        for name in queues:
            queue = await channel.declare_queue(
                self.topology.task_queue(name), durable=True, arguments=self.topology.task_queue_arguments()
            )

            async def on_message(message: AbstractIncomingMessage, queue_name: str = queue.name) -> None:
                await self._on_task_message(message, handler, queue_name)

            tag = await queue.consume(on_message)
            handle.append((queue, tag))
        self._task_consumers.append(handle)
        return handle

    def _delivery_count(self, message: AbstractIncomingMessage) -> int:
        """Our own count (carried across re-publishes) plus the quorum queue's redeliveries."""
        headers = message.headers or {}
        own = int(headers.get(DELIVERIES_HEADER, 1))  # type: ignore[call-overload]
        return own + int(headers.get("x-delivery-count", 0))  # type: ignore[call-overload]

    async def _republish_task(self, message: AbstractIncomingMessage, count: int) -> None:
        headers = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
        headers[DELIVERIES_HEADER] = count
        await self._exchanges["tasks"].publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                message_id=message.message_id,
            ),
            routing_key=message.routing_key or "",
        )

    async def _on_task_message(
        self, message: AbstractIncomingMessage, handler: DeliveryHandler, queue_name: str
    ) -> None:
        count = self._delivery_count(message)
        if message.redelivered and self.topology.queue_type == "classic":
            try:
                await self._republish_task(message, count + 1)
                await message.ack()
                return
            except Exception as exc:
                log.warning("could not re-publish a redelivered task (%s); handling it as is", exc)
        handler(RabbitDelivery(message, count, self._loop, self._republish_task, queue_name))

    def stop_consuming_tasks(self, handle: ConsumerHandle | None = None) -> None:
        handles = [h for h in self._task_consumers if handle is None or h is handle]
        if handles:
            self._call(self._cancel_task_consumers(handles), timeout=10)

    async def _cancel_task_consumers(self, handles: list[list[tuple[AbstractQueue, str]]]) -> None:
        for handle in handles:
            for queue, tag in handle:
                try:
                    await queue.cancel(tag)
                except Exception as exc:
                    log.debug("cancel consumer: %s", exc)
            self._task_consumers.remove(handle)

    def consume_trigger(
        self, source: TriggerSource, prefetch: int, handler: DeliveryHandler
    ) -> ConsumerHandle:
        try:
            return self._call(self._consume_trigger(source, prefetch, handler), timeout=30)
        except aio_pika.exceptions.ChannelClosed as exc:  # a missing queue, a mismatched declaration
            raise BrokerError(f"cannot consume {source.queue!r}: {exc}") from None

    async def _consume_trigger(
        self, source: TriggerSource, prefetch: int, handler: DeliveryHandler
    ) -> tuple[AbstractChannel, str]:
        assert self._conn is not None
        # A channel of its own: its prefetch bounds how many events wait in this process for the
        # next batch insert, and closing it hands every unacked one back to the broker.
        async with self._channel_lock:
            return await self._open_trigger_consumer(source, prefetch, handler)

    async def _open_trigger_consumer(
        self, source: TriggerSource, prefetch: int, handler: DeliveryHandler
    ) -> tuple[AbstractChannel, str]:
        assert self._conn is not None
        channel = await self._conn.channel()
        try:
            await channel.set_qos(prefetch_count=prefetch)
            if source.exchange is not None:
                exchange = await channel.declare_exchange(
                    source.exchange, aio_pika.ExchangeType(source.exchange_type), durable=True
                )
                queue = await channel.declare_queue(
                    source.queue, durable=True, arguments={"x-queue-type": self.topology.queue_type}
                )
                await queue.bind(exchange, routing_key=source.routing_key)
            else:
                queue = await channel.declare_queue(source.queue, passive=True)

            async def on_message(message: AbstractIncomingMessage) -> None:
                handler(RabbitDelivery(message, self._delivery_count(message), self._loop, queue=queue.name))

            tag = await queue.consume(on_message)
        except BaseException:
            if not channel.is_closed:
                await channel.close()
            raise
        return channel, tag

    def stop_consuming_trigger(self, handle: ConsumerHandle) -> None:
        channel, _tag = handle  # type: ignore[misc]
        if self._thread.is_alive():
            self._call(self._close_channel(channel), timeout=10)

    async def _close_channel(self, channel: AbstractChannel) -> None:
        try:
            if not channel.is_closed:
                await channel.close()
        except Exception as exc:
            log.debug("closing a trigger channel: %s", exc)

    def consume_results(self, prefetch: int, handler: DeliveryHandler) -> None:
        self._call(self._consume_results(prefetch, handler), timeout=30)

    async def _consume_results(self, prefetch: int, handler: DeliveryHandler) -> None:
        assert self._conn is not None
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(
            self.topology.results_queue, durable=True, arguments=self.topology.durable_queue_arguments()
        )

        async def on_message(message: AbstractIncomingMessage) -> None:
            handler(RabbitDelivery(message, self._delivery_count(message), self._loop, queue=queue.name))

        await queue.consume(on_message)

    def subscribe_events(self, handler: Callable[[StateEvent], None]) -> None:
        self._call(self._subscribe_events(handler), timeout=30)

    async def _subscribe_events(self, handler: Callable[[StateEvent], None]) -> None:
        assert self._conn is not None
        channel = await self._conn.channel()
        name = f"{self.topology.events_exchange}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        queue = await channel.declare_queue(name, exclusive=True, auto_delete=True, durable=False)
        await queue.bind(self.topology.events_exchange)

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                decoded = decode(message.body)
            except MessageError as exc:
                log.warning("ignoring a malformed event: %s", exc)
                return
            events = decoded.events if isinstance(decoded, EventBatch) else [decoded]
            for event in events:
                if not isinstance(event, StateEvent):
                    continue
                try:
                    handler(event)
                except Exception:
                    log.exception("event handler failed")

        await queue.consume(on_message, no_ack=True)

    # -- lookups (request/reply) ----------------------------------------------------------------
    #
    # Requests name a connection or variable, never a secret: they go to the durable
    # ``<prefix>.lookups`` queue as transient messages that expire when the asker stops waiting.
    # Replies carry secrets, so they use direct reply-to: RabbitMQ hands them straight to the
    # asking channel, never through a queue and never to disk. (TLS, ``amqps://``, keeps them off
    # the wire in plaintext too.)

    REPLY_TO = "amq.rabbitmq.reply-to"

    def serve_lookups(self, handler: Callable[[bytes], bytes]) -> None:
        self._call(self._serve_lookups(handler), timeout=30)

    async def _serve_lookups(self, handler: Callable[[bytes], bytes]) -> None:
        assert self._conn is not None
        channel = await self._conn.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=16)
        queue = await channel.declare_queue(
            self.topology.lookups_queue, durable=True, arguments={"x-queue-type": self.topology.queue_type}
        )
        loop = asyncio.get_running_loop()

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                if message.reply_to:
                    reply = await loop.run_in_executor(None, handler, message.body)
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            reply,
                            correlation_id=message.correlation_id,
                            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                            content_type="application/json",
                        ),
                        routing_key=message.reply_to,
                        mandatory=False,  # direct reply-to routes to no queue: never "returned"
                    )
            except Exception:
                log.exception("answering a lookup failed")
            finally:
                await message.ack()

        await queue.consume(on_message)

    def lookup(self, body: bytes, timeout: float) -> bytes:
        future = asyncio.run_coroutine_threadsafe(self._lookup(body, timeout), self._loop)
        try:
            return future.result(timeout + 1.0)
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
        except concurrent.futures.CancelledError:
            pass
        except _RECOVERABLE as exc:
            raise BrokerUnavailable(f"lookup: broker at {mask_url(self._url)}: {exc}") from None
        raise BrokerUnavailable(
            f"no answer to the lookup within {timeout:g}s: is a scheduler running (it serves lookups)?"
        )

    async def _reply_channel_ready(self) -> AbstractChannel:
        if self._reply_channel is None or self._reply_channel.is_closed:
            assert self._conn is not None
            channel = await self._conn.channel(publisher_confirms=False)
            # Declared here too, so a request waits (until it expires) for a server starting late.
            await channel.declare_queue(
                self.topology.lookups_queue,
                durable=True,
                arguments={"x-queue-type": self.topology.queue_type},
            )
            # The pseudo-queue exists on every broker; it must not be declared, only consumed.
            queue = await channel.get_queue(self.REPLY_TO, ensure=False)

            async def on_reply(message: AbstractIncomingMessage) -> None:
                waiter = self._waiting_replies.pop(message.correlation_id or "", None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message.body)

            await queue.consume(on_reply, no_ack=True)
            self._reply_channel = channel
        return self._reply_channel

    async def _lookup(self, body: bytes, timeout: float) -> bytes:
        channel = await self._reply_channel_ready()
        correlation_id = uuid.uuid4().hex
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting_replies[correlation_id] = waiter
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    correlation_id=correlation_id,
                    reply_to=self.REPLY_TO,
                    delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                    expiration=timeout,
                    content_type="application/json",
                ),
                routing_key=self.topology.lookups_queue,
                mandatory=False,
            )
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiting_replies.pop(correlation_id, None)

    # -- dead letters and inspection ------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        headers = dict(getattr(delivery, "headers", None) or {})
        headers.update(
            {
                REASON_HEADER: reason[:1000],
                DELIVERIES_HEADER: delivery.delivery_count,
                QUEUE_HEADER: delivery.queue,
                # Set once per dead-lettering (the retry below publishes the same id): the recorder
                # keys its row on it, so a redelivered copy is stored once.
                DEAD_ID_HEADER: uuid.uuid4().hex,
            }
        )

        async def publish() -> None:
            await self._exchanges["dead"].publish(
                aio_pika.Message(
                    delivery.body,
                    headers=headers,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=delivery.message_id,
                    content_type=getattr(delivery, "content_type", None),
                ),
                routing_key="",
            )

        self._retrying(publish, "dead-letter")
        delivery.ack()

    def consume_dead_letters(self, prefetch: int, handler: DeliveryHandler) -> None:
        self._call(self._consume_dead_letters(prefetch, handler), timeout=30)

    async def _consume_dead_letters(self, prefetch: int, handler: DeliveryHandler) -> None:
        assert self._conn is not None
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(
            self.topology.dead_queue, durable=True, arguments={"x-queue-type": self.topology.queue_type}
        )

        async def on_message(message: AbstractIncomingMessage) -> None:
            handler(RabbitDelivery(message, self._delivery_count(message), self._loop, queue=queue.name))

        await queue.consume(on_message)

    def requeue_dead_letter(
        self,
        queue: str,
        body: bytes,
        *,
        headers: Mapping[str, Any],
        message_id: str | None,
        content_type: str | None,
    ) -> None:
        async def publish() -> None:
            assert self._conn is not None
            if self._requeue_channel is None or self._requeue_channel.is_closed:
                # Its own channel: only here must a returned message raise (on_return_raises).
                self._requeue_channel = await self._conn.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            exchange_name, routing_key = self._route_to(queue)
            exchange = (
                self._requeue_channel.default_exchange
                if not exchange_name
                else await self._requeue_channel.get_exchange(exchange_name, ensure=False)
            )
            # Mandatory: a queue that no longer exists returns the message instead of dropping it.
            await exchange.publish(
                aio_pika.Message(
                    body,
                    headers=dict(headers),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message_id,
                    content_type=content_type,
                ),
                routing_key=routing_key,
                mandatory=True,
            )

        try:
            self._retrying(publish, f"requeue to {queue}")
        except aiormq.exceptions.DeliveryError:  # returned unroutable (PublishError) or nacked
            raise BrokerError(f"the broker has no queue {queue!r} to requeue to") from None

    def _route_to(self, queue: str) -> tuple[str, str]:
        """The exchange and routing key that reach ``queue`` the way its messages normally do: a
        task message's routing key is its queue's name, and a worker re-publishes a redelivered or
        handed-back task with the routing key it arrived with. Other queues: the default exchange,
        which routes to the queue of that name."""
        topo = self.topology
        if queue.startswith(f"{topo.prefix}.q."):
            return topo.tasks_exchange, queue.removeprefix(f"{topo.prefix}.q.")
        if queue == topo.results_queue:
            return topo.results_exchange, "result"
        return "", queue

    def queue_stats(self, queues: Sequence[str]) -> list[QueueStats]:
        return self._call(self._queue_stats(queues), timeout=30)

    async def _queue_stats(self, queues: Sequence[str]) -> list[QueueStats]:
        assert self._conn is not None
        out = []
        names = [(q, self.topology.task_queue(q)) for q in queues]
        names.append(("(dead letters)", self.topology.dead_queue))
        async with self._channel_lock:
            for label, amqp_name in names:
                channel = await self._conn.channel()
                try:
                    queue = await channel.declare_queue(amqp_name, passive=True)
                    result = queue.declaration_result
                    out.append(QueueStats(label, result.message_count or 0, result.consumer_count or 0))
                except aio_pika.exceptions.ChannelClosed:
                    out.append(QueueStats(label, 0, 0))
                finally:
                    if not channel.is_closed:
                        await channel.close()
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.name,
            "broker_url": mask_url(self._url),
            "queue_type": self.topology.queue_type,
        }
