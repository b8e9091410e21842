"""The dead-letter recorder: ``<prefix>.dead`` -> the metastore's ``dead_letter`` table.

It runs beside every results consumer (the scheduler's embedded one and ``hareflow results``), so
dead letters are recorded wherever results are. Each batch is stored in one transaction and acked
after the commit; the insert is idempotent (``hareflow.common.dead_letters.fingerprint``), so a
copy redelivered after a crash between commit and ack, or two recorders at once, store one row.
After the commit one ``deadletter`` state event per row tells the web pages to redraw.

    take_batch (up to 100 deliveries) -> describe each (pure) -> record (one transaction)
    -> ack -> publish events
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hareflow.common import dead_letters
from hareflow.common.broker import Delivery, Executor
from hareflow.common.messages import StateEvent
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

#: Dead letters are rare and small; this bounds what one recorder holds unacked.
PREFETCH = 100


class DeadLetterRecorder:
    """Consumes the dead-letter queue and records it; run it in a thread."""

    def __init__(self, *, executor: Executor, session_factory: sessionmaker[Session]) -> None:
        self._executor = executor
        self._sessions = session_factory
        self._buffer: queue.Queue[Delivery] = queue.Queue()
        self.recorded = 0

    def start(self) -> None:
        self._executor.consume_dead_letters(PREFETCH, self._buffer.put)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once(timeout=0.5, stop=stop)
            except Exception:
                log.exception("dead-letter recorder iteration failed; continuing")
                stop.wait(1.0)

    def run_once(
        self, timeout: float = 0.5, stop: threading.Event | None = None, now: datetime | None = None
    ) -> int:
        """Record one batch (waiting up to ``timeout`` for its first message); return its size."""
        batch = self._take_batch(timeout)
        if not batch:
            return 0
        now = now or datetime.now(UTC)
        rows = [_describe(d, now) for d in batch]
        events = self._commit_with_retry(rows, stop)
        if events is None:  # stopping while the database is down: leave them unacked
            return 0
        for delivery in batch:
            delivery.ack()
        self.recorded += len(batch)
        for row in rows:
            log.warning("dead letter from %s recorded: %s", row["queue"] or "?", row["reason"])
        self._executor.publish_events(events)
        return len(batch)

    def _take_batch(self, timeout: float) -> list[Delivery]:
        try:
            batch = [self._buffer.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(batch) < PREFETCH:
            try:
                batch.append(self._buffer.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, rows: Sequence[dict[str, Any]]) -> list[StateEvent]:
        with self._sessions() as session, session.begin():
            stored = dead_letters.record(session, rows)
            return [dead_letters.dead_letter_event(row) for row in stored]

    def _commit_with_retry(
        self, rows: Sequence[dict[str, Any]], stop: threading.Event | None
    ) -> list[StateEvent] | None:
        delay = 0.2
        while True:
            try:
                return self._commit(rows)
            except (OperationalError, InterfaceError, DisconnectionError) as exc:
                log.warning(
                    "metastore unavailable (%s); retrying %d dead letter(s) in %.1fs",
                    exc.__class__.__name__,
                    len(rows),
                    delay,
                )
                if stop is not None and stop.wait(delay):
                    return None
                if stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, 5.0)


def _describe(delivery: Delivery, now: datetime) -> dict[str, Any]:
    return dead_letters.describe(
        delivery.body,
        delivery.headers,
        message_id=delivery.message_id,
        content_type=delivery.content_type,
        now=now,
    )
