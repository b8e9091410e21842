"""The results consumer: worker reports -> metastore, in batched transactions, acked after commit.

Every report is checked against the state machine (``common.states.accepts_report``): a report
for another try, or a second final report for the same try, changes nothing, so redelivered and
duplicated messages are harmless. The write itself is a compare-and-set on the state and try read
(``hareflow.common.db.cas``), so several results consumers in any arrival order record each
transition once: a batch that read a row before another consumer committed it changes nothing for
that row, stores no result for it and announces nothing. Log chunks are keyed by (task instance,
try, seq) and stored once. After each commit the batch's deliveries are acked and one state event
per change is published. If the database is unreachable the batch is retried with backoff and
nothing is acked meanwhile.

A branch or short-circuit success names the downstream task ids it skips; those task instances of
the same run are skipped in the transaction that records the success, and only if that success
write took effect (a duplicate result skips nothing), each by a compare-and-set from ``none``
(nothing already scheduled or running is skipped).

A success of a task with outlets carries one ``{"uri", "extra"}`` per outlet; they are recorded as
asset events in the same transaction, again only if the success write took effect
(``hareflow.common.assets``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from hareflow.common import metrics
from hareflow.common.assets import NewEvent, asset_event_notice, record_events
from hareflow.common.broker import Delivery, Executor
from hareflow.common.config import Settings
from hareflow.common.db import TaskInstance, TaskLog, TaskRendered, TaskResult, Worker
from hareflow.common.db.cas import set_each_task_state, set_task_states
from hareflow.common.events import task_event
from hareflow.common.messages import (
    HeartbeatMessage,
    LogMessage,
    Message,
    MessageError,
    ResultMessage,
    StateEvent,
    decode,
)
from hareflow.common.states import TaskState, TaskTransition, WorkerOutcome, accepts_report, outcome_state
from sqlalchemy import insert, select, tuple_
from sqlalchemy.exc import DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

OnChange = Callable[[Sequence[StateEvent]], None]


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


#: A worker clock further than this from the consumer's is not taken for a log chunk's time.
MAX_CLOCK_SKEW = 3600.0


def _sent_at(value: float, now: datetime) -> datetime:
    try:
        sent = _ts(value)
    except (OverflowError, OSError, ValueError):
        return now
    return sent if abs((sent - now).total_seconds()) <= MAX_CLOCK_SKEW else now


@dataclass
class _TI:
    """The columns of a task instance a report can change, plus the changes (``dirty``)."""

    id: int
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str
    try_number: int
    max_tries: int
    start_date: datetime | None
    reschedules: int
    first_poke_at: datetime | None
    dirty: dict[str, Any] = field(default_factory=dict)

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            if name in ("state", "start_date"):
                setattr(self, name, value)
            self.dirty[name] = value


_TI_COLUMNS = [getattr(TaskInstance, f.name) for f in fields(_TI) if f.name != "dirty"]


@dataclass
class ReportBatch:
    """A batch of worker reports and the task instances they name, as read (nothing written yet)."""

    results: list[ResultMessage]
    logs: list[LogMessage]
    beats: list[HeartbeatMessage]
    tis: dict[int, _TI]


def read_reports(session: Session, messages: Sequence[Message]) -> ReportBatch:
    """Sort a batch by kind and read the task instances it names (one SELECT, no lock)."""
    results = [m for m in messages if isinstance(m, ResultMessage)]
    logs = [m for m in messages if isinstance(m, LogMessage)]
    beats = [m for m in messages if isinstance(m, HeartbeatMessage)]
    ti_ids = {m.key.ti_id for m in results} | {m.key.ti_id for m in logs}
    tis: dict[int, _TI] = {}
    if ti_ids:
        tis = {
            row[0]: _TI(*row)
            for row in session.execute(select(*_TI_COLUMNS).where(TaskInstance.id.in_(ti_ids)))
        }
    return ReportBatch(results, logs, beats, tis)


def write_reports(session: Session, batch: ReportBatch, now: datetime) -> list[StateEvent]:
    """Decide each task instance's change from the rows read and write it as a compare-and-set
    (``hareflow.common.db.cas``): a row another consumer, a scheduler or an operator moved on
    since :func:`read_reports` keeps their state, and this batch's events, results and changes
    for it are dropped. Return the state events of the writes that took effect."""
    stored: dict[int, dict[str, Any]] = {}
    rendered: dict[int, dict[str, Any]] = {}
    events: list[tuple[int, StateEvent]] = []
    skips: list[tuple[_TI, ResultMessage]] = []
    outlets: list[tuple[_TI, ResultMessage]] = []
    for m in batch.results:
        ti = batch.tis.get(m.key.ti_id)
        if ti is None or ti.task_id != m.key.task_id or ti.run_id != m.key.run_id:
            log.warning("ignoring a result for an unknown task instance: %s", m.key.label())
            continue
        if _apply_result(ti, m, now, stored):
            events.append((ti.id, task_event(ti)))  # type: ignore[arg-type]
            if m.skip_task_ids and ti.state == TaskState.SUCCESS:
                skips.append((ti, m))
            if m.outlet_events and ti.state == TaskState.SUCCESS:
                outlets.append((ti, m))
            # Stored once per try: a rescheduled sensor's later deliveries render the same fields.
            if m.rendered_json is not None and m.outcome != WorkerOutcome.RUNNING.value and not m.reschedules:
                rendered[ti.id] = _rendered_row(ti.id, ti.try_number, m.rendered_json, now)
    dirty = [ti for ti in batch.tis.values() if ti.dirty]
    # The compare-and-set is on the reschedules number read too (a reschedule report changes it).
    read = {ti.id: ti.dirty.pop("_reschedules_read", ti.reschedules) for ti in dirty}
    by_transition: dict[TaskTransition, list[tuple[int, int, dict[str, Any]]]] = {}
    for ti in dirty:
        transition = _REPORT_TRANSITION.get(TaskState(ti.state), TaskTransition.REPORT_FINAL)
        by_transition.setdefault(transition, []).append((ti.id, ti.try_number, ti.dirty))
    changed: set[int] = set()
    for transition, rows_ in by_transition.items():
        changed |= set_each_task_state(session, transition, rows_, reschedules=read)
    rows = [row for ti_id, row in stored.items() if ti_id in changed]
    if rows:
        session.execute(insert(TaskResult), rows)
    rendered_rows = [row for ti_id, row in rendered.items() if ti_id in changed]
    if rendered_rows:
        session.execute(insert(TaskRendered), rendered_rows)
    out = [event for ti_id, event in events if ti_id in changed]
    for ti, m in skips:
        if ti.id in changed:
            out.extend(_skip_downstream(session, ti, m, now))
    out.extend(_record_asset_events(session, [(ti, m) for ti, m in outlets if ti.id in changed], now))
    out.extend(_store_logs(session, batch.logs, batch.tis, now))
    _record_heartbeats(session, batch.beats, now)
    return out


_REPORT_TRANSITION = {
    TaskState.RUNNING: TaskTransition.REPORT_RUNNING,
    TaskState.UP_FOR_RESCHEDULE: TaskTransition.REPORT_RESCHEDULE,
}


def apply_results(session: Session, messages: Sequence[Message], now: datetime) -> list[StateEvent]:
    """Apply a batch of worker reports inside the caller's transaction; return the state events.

    Column rows in, bulk statements out: one SELECT, then per kind of change one locking SELECT
    and one executemany UPDATE, and one INSERT per table, for the whole batch, whatever its size.
    """
    return write_reports(session, read_reports(session, messages), now)


def _skip_downstream(session: Session, ti: _TI, m: ResultMessage, now: datetime) -> list[StateEvent]:
    """Skip the task instances of ``ti``'s run that its branch or short-circuit decision names."""
    rows = [
        _TI(*row)
        for row in session.execute(
            select(*_TI_COLUMNS).where(
                TaskInstance.dag_id == ti.dag_id,
                TaskInstance.run_id == ti.run_id,
                TaskInstance.task_id.in_(sorted(set(m.skip_task_ids or ()))),
                TaskInstance.state == TaskState.NONE,
            )
        )
    ]
    reason = m.skip_reason or f"skipped by '{ti.task_id}'"
    values = {"state": TaskState.SKIPPED, "error": reason, "end_date": now, "updated_at": now}
    changed = set_task_states(
        session, TaskTransition.SKIP_DOWNSTREAM, [(r.id, r.try_number) for r in rows], values
    )
    events = []
    for row in rows:
        if row.id in changed:
            row.state = TaskState.SKIPPED
            events.append(task_event(row))  # type: ignore[arg-type]
    return events


def _record_asset_events(
    session: Session, successes: Sequence[tuple[_TI, ResultMessage]], now: datetime
) -> list[StateEvent]:
    """One asset event per outlet of each success whose write took effect (so a duplicate or
    redelivered result records none), in the transaction that records the success."""
    new = [
        NewEvent(
            uri=str(e["uri"]),
            extra=dict(e.get("extra") or {}),
            source_ti_id=ti.id,
            source_dag_id=ti.dag_id,
            source_run_id=ti.run_id,
            source_task_id=ti.task_id,
            source_map_index=ti.map_index,
            source_try_number=ti.try_number,
        )
        for ti, m in successes
        for e in m.outlet_events or ()
    ]
    return [asset_event_notice(row) for row in record_events(session, new, now)]


def _apply_result(ti: _TI, m: ResultMessage, now: datetime, stored: dict[int, dict[str, Any]]) -> bool:
    outcome = WorkerOutcome(m.outcome)
    accepted = accepts_report(
        TaskState(ti.state),
        ti.try_number,
        outcome,
        m.key.try_number,
        current_reschedules=ti.reschedules or 0,
        reported_reschedules=m.reschedules,
    )
    if not accepted:
        return False
    at = _ts(m.at)
    if "_reschedules_read" not in ti.dirty:
        ti.dirty["_reschedules_read"] = ti.reschedules or 0
    ti.set(worker=m.worker, hostname=m.hostname, pid=m.pid, updated_at=now)
    if outcome is WorkerOutcome.UP_FOR_RESCHEDULE:
        # A sensor's poke found nothing: no retry is used, the try number stays; the scheduler
        # dispatches it again at next_retry_at as delivery ``reschedules`` + 1 of this try.
        first = ti.first_poke_at or _ts(m.first_poke_at or m.started_at or m.at)
        start = ti.start_date or (_ts(m.started_at) if m.started_at else at)  # this delivery's
        ti.set(
            state=TaskState.UP_FOR_RESCHEDULE,
            start_date=start,
            end_date=at,
            duration=max(0.0, (at - start).total_seconds()),
            next_retry_at=_ts(m.reschedule_at or m.at),
            reschedules=(ti.reschedules or 0) + 1,
            first_poke_at=first,
            error=None,
        )
        ti.first_poke_at = first
        ti.reschedules = (ti.reschedules or 0) + 1
        return True
    if outcome is WorkerOutcome.RUNNING:
        if ti.state == TaskState.RUNNING:  # a redelivered message started the same try elsewhere
            log.info("%s restarted on %s", m.key.label(), m.worker)
        ti.set(state=TaskState.RUNNING, start_date=at)
        return True
    start = ti.start_date or (_ts(m.started_at) if m.started_at else at)
    ti.set(
        state=outcome_state(outcome, ti.try_number, ti.max_tries, no_retry=m.no_retry),
        start_date=start,
        end_date=at,
        duration=max(0.0, (at - start).total_seconds()),
    )
    if outcome is WorkerOutcome.SUCCESS:
        ti.set(error=None)
        if m.result_json is not None and m.result_json != "null":  # None needs no row
            stored[ti.id] = {
                "ti_id": ti.id,
                "try_number": ti.try_number,
                "value_json": m.result_json,
                "created_at": now,
            }
    elif outcome is WorkerOutcome.SKIPPED:
        ti.set(error=m.error or "skipped")  # the reason the task gave, shown where errors are
    else:
        # next_retry_at is left to the scheduler, which knows the task's retry policy
        ti.set(error=m.error or "failed", next_retry_at=None)
    return True


def _rendered_row(ti_id: int, try_number: int, fields_json: str, now: datetime) -> dict[str, Any]:
    return {"ti_id": ti_id, "try_number": try_number, "fields_json": fields_json, "created_at": now}


def _store_logs(
    session: Session, logs: Sequence[LogMessage], tis: dict[int, _TI], now: datetime
) -> list[StateEvent]:
    if not logs:
        return []
    wanted = {(m.key.ti_id, m.key.try_number, m.seq) for m in logs if m.key.ti_id in tis}
    if not wanted:
        return []
    existing = set(
        session.execute(
            select(TaskLog.ti_id, TaskLog.try_number, TaskLog.seq).where(
                tuple_(TaskLog.ti_id, TaskLog.try_number, TaskLog.seq).in_(list(wanted))
            )
        ).tuples()
    )
    events = []
    rows: list[dict[str, Any]] = []
    for m in logs:
        ident = (m.key.ti_id, m.key.try_number, m.seq)
        if ident not in wanted or ident in existing:
            continue
        existing.add(ident)
        rows.append(
            {
                "ti_id": m.key.ti_id,
                "try_number": m.key.try_number,
                "seq": m.seq,
                "text": m.text,
                # When the worker sent it (the page's line timestamps); a clock far off is not believed.
                "created_at": _sent_at(m.at, now),
            }
        )
        ti = tis[m.key.ti_id]
        events.append(task_event(ti, kind="log", try_number=m.key.try_number))  # type: ignore[arg-type]
    if rows:
        session.execute(insert(TaskLog), rows)
    return events


def _record_heartbeats(session: Session, beats: Sequence[HeartbeatMessage], now: datetime) -> None:
    latest: dict[str, HeartbeatMessage] = {}
    for b in beats:
        if b.worker not in latest or b.at >= latest[b.worker].at:
            latest[b.worker] = b
    if not latest:
        return
    rows = {w.name: w for w in session.scalars(select(Worker).where(Worker.name.in_(latest)))}
    for name, b in latest.items():
        w = rows.get(name)
        if w is None:
            w = Worker(name=name, first_seen=now)
            session.add(w)
        elif w.last_heartbeat is not None and w.last_heartbeat > _ts(b.at):
            continue
        w.hostname, w.pid, w.queues = b.hostname, b.pid, list(b.queues)
        w.concurrency, w.running = b.concurrency, len(b.running)
        w.state = b.state
        w.last_heartbeat = _ts(b.at)


class ResultsConsumer:
    """Consumes ``<prefix>.results`` and records it; run it in a thread or as its own process."""

    def __init__(
        self,
        *,
        executor: Executor,
        session_factory: sessionmaker[Session],
        settings: Settings,
        on_change: OnChange | None = None,
    ) -> None:
        self._executor = executor
        self._sessions = session_factory
        self._settings = settings
        self._on_change = on_change
        self._buffer: queue.Queue[Delivery] = queue.Queue()
        self.processed = 0
        #: monotonic time of the last cycle that completed (read by the health probe)
        self.last_cycle = time.monotonic()

    def start(self) -> None:
        self._executor.consume_results(self._settings.results_prefetch, self._buffer.put)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once(timeout=0.5, stop=stop)
                self.last_cycle = time.monotonic()
            except Exception:
                log.exception("results consumer iteration failed; continuing")
                stop.wait(1.0)

    def run_once(self, timeout: float = 0.5, stop: threading.Event | None = None) -> int:
        """Take one batch (waiting up to ``timeout`` for the first message); return its size."""
        batch = self._take_batch(timeout)
        if not batch:
            return 0
        parsed: list[tuple[Delivery, Message]] = []
        for delivery in batch:
            try:
                parsed.append((delivery, decode(delivery.body)))
            except MessageError as exc:
                log.error("dead-lettering a malformed result message: %s", exc)
                self._executor.dead_letter(delivery, f"malformed result: {exc}")
                metrics.DEAD_LETTERED.labels("malformed_result").inc()
        try:
            events = self._commit_with_retry([m for _, m in parsed], stop)
        except Exception:
            log.exception("a batch of %d results could not be applied; isolating the bad one", len(parsed))
            parsed, events = self._apply_one_by_one(parsed, stop)
        if events is None:  # stopping while the database is down: leave them unacked
            return 0
        for delivery, _ in parsed:
            delivery.ack()
        self.processed += len(parsed)
        metrics.RESULTS_BATCH_SIZE.observe(len(parsed))
        metrics.count_state_changes(events)
        if events:
            # In-process first: the scheduler then knows these events before their broadcast copies
            # arrive, and ignores the copies.
            if self._on_change is not None:
                self._on_change(events)
            self._executor.publish_events(events)
        return len(parsed)

    def _apply_one_by_one(
        self, parsed: list[tuple[Delivery, Message]], stop: threading.Event | None
    ) -> tuple[list[tuple[Delivery, Message]], list[StateEvent] | None]:
        """Apply each message in its own transaction; dead-letter any that cannot be applied."""
        kept: list[tuple[Delivery, Message]] = []
        events: list[StateEvent] = []
        for delivery, message in parsed:
            try:
                applied = self._commit_with_retry([message], stop)
            except Exception as exc:
                log.exception("dead-lettering a result that cannot be applied")
                self._executor.dead_letter(delivery, f"result could not be applied: {exc!r}")
                metrics.DEAD_LETTERED.labels("unappliable_result").inc()
                continue
            if applied is None:
                return kept, None
            kept.append((delivery, message))
            events.extend(applied)
        return kept, events

    def _take_batch(self, timeout: float) -> list[Delivery]:
        try:
            first = self._buffer.get(timeout=timeout)
        except queue.Empty:
            return []
        batch = [first]
        limit = self._settings.results_batch_size
        while len(batch) < limit:
            try:
                batch.append(self._buffer.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, messages: Sequence[Message]) -> list[StateEvent]:
        now = datetime.now(UTC)
        try:
            with self._sessions() as session, session.begin():
                return apply_results(session, messages, now)
        except IntegrityError:
            # Another results consumer stored the same result or chunk first: redo one by one,
            # so only the duplicate is dropped.
            events: list[StateEvent] = []
            for m in messages:
                try:
                    with self._sessions() as session, session.begin():
                        events.extend(apply_results(session, [m], now))
                except IntegrityError:
                    log.info("dropping a duplicate report")
            return events

    def _commit_with_retry(
        self, messages: Sequence[Message], stop: threading.Event | None
    ) -> list[StateEvent] | None:
        delay = 0.2
        while True:
            started = time.monotonic()
            try:
                events = self._commit(messages)
                metrics.RESULTS_COMMIT.observe(time.monotonic() - started)
                return events
            except (OperationalError, InterfaceError, DisconnectionError) as exc:
                metrics.RESULTS_COMMIT_ERRORS.inc()
                log.warning(
                    "metastore unavailable (%s); retrying the batch in %.1fs", exc.__class__.__name__, delay
                )
                if stop is not None and stop.wait(delay):
                    return None
                if stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, 5.0)
