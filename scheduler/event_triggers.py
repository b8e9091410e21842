"""The event-trigger consumer: BrokerTrigger messages become DAG runs, one run per event key.

    sync_consumers (start/stop a consumer per active, unpaused DAG's trigger) ->
    take_batch (up to event_batch_size deliveries) -> handle_batch (decode, dead-letter the bad,
    insert the runs in one transaction, commit, then ack) -> wake the scheduler

Every scheduler runs one; several consume the same queues and each message goes to one of them.
Exactly one run per key holds whatever the broker does because the run id is derived from the
event's key and ``(dag_id, run_id)`` is unique: a message is acked only after the transaction
holding its run committed (or found the run already there), so a crash anywhere before the ack
gets the message redelivered, and its redelivery finds the run and is acked without a second one.

A paused or removed DAG's consumer is cancelled: its messages wait in the durable queue (nothing is
dropped) and become runs when the DAG is unpaused (or comes back).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hareflow.common import metrics
from hareflow.common.broker import BrokerError, BrokerUnavailable, Delivery, Executor, TriggerSource
from hareflow.common.broker.base import ConsumerHandle, NoBrokerTriggers
from hareflow.common.broker.topology import Topology
from hareflow.common.config import Settings
from hareflow.common.db import Dag
from hareflow.common.event_runs import Event, decode_body, insert_event_runs, make_event
from hareflow.common.messages import StateEvent
from hareflow.common.runs import RunError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

#: How often the consumers are checked against the DAGs when no DAG change was announced.
SYNC_INTERVAL = 5.0
#: How long a partial batch waits for more events: a lone event becomes a run within this.
BATCH_WAIT = 0.02


@dataclass(frozen=True)
class BrokerSpec:
    """One BrokerTrigger of one DAG, as the consumer needs it."""

    dag_id: str
    index: int
    source: TriggerSource
    dedupe_key: str | None


@dataclass
class BatchReport:
    created: int = 0
    duplicates: int = 0
    rejected: int = 0
    requeued: int = 0
    events: list[StateEvent] = field(default_factory=list)


def broker_specs(
    dag_id: str, serialized: dict[str, Any], prefix_queue: Callable[[str, int], str]
) -> list[BrokerSpec]:
    """The BrokerTriggers of a serialized DAG, each with the queue it consumes."""
    out = []
    for index, spec in enumerate(t for t in serialized.get("triggers") or () if t.get("kind") == "broker"):
        if spec.get("queue"):
            source = TriggerSource(queue=spec["queue"])
        else:
            source = TriggerSource(
                queue=prefix_queue(dag_id, index),
                exchange=spec["exchange"],
                routing_key=spec.get("routing_key") or "#",
                exchange_type=spec.get("exchange_type") or "topic",
            )
        out.append(BrokerSpec(dag_id=dag_id, index=index, source=source, dedupe_key=spec.get("dedupe_key")))
    return out


class TriggerConsumer:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        executor: Executor,
        on_created: Callable[[Sequence[StateEvent]], None] | None = None,
        queue_name: Callable[[str, int], str] | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._executor = executor
        self._on_created = on_created
        self._queue_name = queue_name or Topology(prefix=settings.broker_prefix).trigger_queue
        self._inbox: queue.SimpleQueue[tuple[BrokerSpec, Delivery]] = queue.SimpleQueue()
        self._consumers: dict[tuple[str, int], tuple[BrokerSpec, ConsumerHandle]] = {}
        #: dag_id -> (dag_hash, its BrokerTriggers, its params): a DAG is re-read only when it changes
        self._known: dict[str, tuple[str, list[BrokerSpec], dict[str, Any]]] = {}
        self._unsupported_logged: set[str] = set()
        self._resync = threading.Event()
        self._resync.set()
        self._last_sync = 0.0
        #: monotonic time of the last completed cycle (read by tests and health checks)
        self.last_cycle = time.monotonic()

    # -- wiring ------------------------------------------------------------------------------------

    def dags_changed(self) -> None:
        """A DAG was parsed, paused, unpaused or removed: check the consumers on the next cycle."""
        self._resync.set()

    def on_event(self, event: StateEvent) -> None:
        if event.kind == "dag":
            self._resync.set()

    def consuming(self) -> list[str]:
        """The queues consumed now (for tests and logs)."""
        return sorted(spec.source.queue for spec, _ in self._consumers.values())

    def run(self, stop: threading.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                self.run_once()
                delay = 0.5
            except (OperationalError, BrokerUnavailable) as exc:
                log.warning("event triggers: %s; retrying in %.1fs", exc.__class__.__name__, delay)
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
            except Exception:
                log.exception("event-trigger cycle failed")
                stop.wait(1.0)
        self.close()

    def run_once(self, *, wait: float = 0.5) -> BatchReport | None:
        """One cycle: re-check the consumers if due, then turn one batch of events into runs."""
        if self._resync.is_set() or time.monotonic() - self._last_sync >= SYNC_INTERVAL:
            self._resync.clear()
            self.sync_consumers()
        batch = self.take_batch(wait)
        report = self.handle_batch(batch) if batch else None
        self.last_cycle = time.monotonic()
        return report

    def close(self) -> None:
        for key in list(self._consumers):
            self._stop(key)
        # What was taken from the broker and not handled goes back now (the channels are closed,
        # so the broker has them already; this settles them on our side).
        while True:
            try:
                _, delivery = self._inbox.get_nowait()
            except queue.Empty:
                break
            delivery.hand_back()

    # -- step: consumers follow the DAGs -----------------------------------------------------------

    def sync_consumers(self) -> None:
        """Consume the trigger queues of active, unpaused DAGs; cancel the others' consumers."""
        self._last_sync = time.monotonic()
        with self._sessions() as session:
            rows = session.execute(
                select(Dag.dag_id, Dag.dag_hash).where(Dag.is_active.is_(True), Dag.is_paused.is_(False))
            ).all()
            wanted: dict[tuple[str, int], BrokerSpec] = {}
            for dag_id, digest in rows:
                known = self._known.get(dag_id)
                if known is None or known[0] != digest:
                    serialized = session.scalar(select(Dag.serialized).where(Dag.dag_id == dag_id)) or {}
                    specs = broker_specs(dag_id, serialized, self._queue_name)
                    known = (digest, specs, dict(serialized.get("params") or {}))
                    self._known[dag_id] = known
                for spec in known[1]:
                    wanted[(dag_id, spec.index)] = spec
        for key, (spec, _) in list(self._consumers.items()):
            if wanted.get(key) != spec:
                self._stop(key)
        for key, spec in wanted.items():
            if key not in self._consumers:
                self._start(spec)

    def _start(self, spec: BrokerSpec) -> None:
        def on_delivery(delivery: Delivery) -> None:  # the broker's thread: hand over, never block
            self._inbox.put((spec, delivery))

        try:
            handle = self._executor.consume_trigger(spec.source, self._settings.event_prefetch, on_delivery)
        except NoBrokerTriggers as exc:
            if spec.dag_id not in self._unsupported_logged:
                self._unsupported_logged.add(spec.dag_id)
                log.error("DAG %s: %s", spec.dag_id, exc)
            return
        except BrokerError as exc:
            log.error("DAG %s: cannot consume its trigger queue %s: %s", spec.dag_id, spec.source.queue, exc)
            return
        self._consumers[(spec.dag_id, spec.index)] = (spec, handle)
        log.info("DAG %s: consuming events from %s", spec.dag_id, spec.source.queue)

    def _stop(self, key: tuple[str, int]) -> None:
        spec, handle = self._consumers.pop(key)
        try:
            self._executor.stop_consuming_trigger(handle)
        except BrokerError as exc:
            log.debug("cancelling the consumer of %s: %s", spec.source.queue, exc)
        log.info("DAG %s: stopped consuming %s", spec.dag_id, spec.source.queue)

    # -- step: a batch of events becomes runs ------------------------------------------------------

    def take_batch(self, wait: float) -> list[tuple[BrokerSpec, Delivery]]:
        """Up to ``event_batch_size`` deliveries: waits ``wait`` for the first, then briefly for more."""
        try:
            batch = [self._inbox.get(timeout=wait)]
        except queue.Empty:
            return []
        limit = self._settings.event_batch_size
        deadline = time.monotonic() + BATCH_WAIT
        while len(batch) < limit:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._inbox.get(timeout=remaining))
                except queue.Empty:
                    break
        return batch

    def handle_batch(
        self, batch: Sequence[tuple[BrokerSpec, Delivery]], now: datetime | None = None
    ) -> BatchReport:
        """Decode the batch, dead-letter what cannot be a run, insert the runs in one transaction,
        and ack every delivery whose run is committed (new or already there)."""
        now = now or datetime.now(UTC)
        report = BatchReport()
        # Deliveries not yet settled: whatever goes wrong before the commit hands them all back.
        pending = {id(d): d for _, d in batch}
        try:
            by_dag: dict[str, list[tuple[Event, Delivery]]] = {}
            for spec, delivery in batch:
                params = self._known.get(spec.dag_id, ("", [], {}))[2]
                try:
                    ev = make_event(params, decode_body(delivery.body), spec.dedupe_key, delivery.message_id)
                except RunError as exc:  # not a JSON object, fails the params check, lacks its key
                    self._reject(spec, delivery, str(exc), report)
                    pending.pop(id(delivery))
                    continue
                by_dag.setdefault(spec.dag_id, []).append((ev, delivery))
            acks, requeue = self._store(by_dag, now, report) if by_dag else ([], [])
        except BaseException:
            # Nothing committed: every delivery goes back and is redelivered (to us or another
            # scheduler), where the same keys make the same runs.
            for d in pending.values():
                d.requeue()
            raise
        # Committed: only now may the broker forget the messages. A crash before these acks
        # redelivers them, and their keys find the runs committed here.
        self._before_ack()
        for d in acks:
            d.ack()
        for d in requeue:
            d.requeue()
        report.requeued = len(requeue)
        metrics.EVENTS.labels("broker", "run_created").inc(report.created)
        metrics.EVENTS.labels("broker", "duplicate").inc(report.duplicates)
        if report.events and self._on_created is not None:
            self._on_created(report.events)
        return report

    def _store(
        self, by_dag: dict[str, list[tuple[Event, Delivery]]], now: datetime, report: BatchReport
    ) -> tuple[list[Delivery], list[Delivery]]:
        """One transaction for the whole batch; returns (to ack, to hand back) once committed."""
        acks: list[Delivery] = []
        requeue: list[Delivery] = []
        with self._sessions() as session, session.begin():
            for dag_id, items in by_dag.items():
                dag = session.get(Dag, dag_id)
                if dag is None or not dag.is_active or dag.is_paused:
                    # Paused or removed since the message was taken: it waits in its queue.
                    requeue.extend(d for _, d in items)
                    continue
                created = insert_event_runs(
                    session, dag, [ev for ev, _ in items], now, triggered_by="event:broker"
                )
                report.created += created
                report.duplicates += len(items) - created
                acks.extend(d for _, d in items)
                if created:
                    report.events.append(
                        StateEvent(kind="run", dag_id=dag_id, run_id=None, state="queued", at=time.time())
                    )
        return acks, requeue

    def _before_ack(self) -> None:
        """Called between the commit and the acks (a seam for crash tests; does nothing)."""

    def _reject(self, spec: BrokerSpec, delivery: Delivery, reason: str, report: BatchReport) -> None:
        reason = f"DAG {spec.dag_id!r}: no run created: {reason}"
        log.warning(
            "dead-lettering an event from %s (message id %s): %s",
            spec.source.queue,
            delivery.message_id,
            reason,
        )
        self._executor.dead_letter(delivery, reason)
        report.rejected += 1
        metrics.EVENTS.labels("broker", "rejected").inc()
