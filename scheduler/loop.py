"""The scheduler loop: a list of named steps, each with its own transaction.

    create_due_runs -> create_asset_runs -> schedule_runs (start runs, evaluate trigger rules,
    dispatch) ->
    republish_stale -> handle_lost_workers -> prune_workers -> clean_history -> finish_backfills ->
    heartbeat -> refresh_gauges -> wait

``run_once(now)`` is one iteration and takes the clock as a parameter, so tests drive it without
sleeping. The wait ends early whenever a state event says a task finished or a run was triggered:
no fixed sleep sits between one task's end and the next task's start.

Commit, then publish, then mark: task instances are marked queued and committed before their
messages are published; once the broker has confirmed the messages, one batched ``UPDATE`` records
it (``confirmed_at``). A message the broker confirmed is never published again, however long it
waits in a deep queue. If publishing fails the messages are re-published on the next iteration; if
the scheduler dies between the commit and the mark, any scheduler re-publishes the unmarked ones
after ``queued_timeout``, claiming each with a compare-and-set so that only one of them does
(delivery guarantee 1). A scheduler that dies after the broker confirmed but before the mark was
committed leaves those tasks to be published twice: the one crash window of this design.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hareflow.common import metrics
from hareflow.common.assets import consume_if_ready, waiting_dag_ids
from hareflow.common.backfill import finish_backfills
from hareflow.common.broker import BrokerUnavailable, Executor
from hareflow.common.config import Settings
from hareflow.common.dag.serialize import SerializedDag
from hareflow.common.db import Dag, DagRun, SchedulerHeartbeat, TaskInstance, Worker, cas
from hareflow.common.db.upsert import insert_if_absent
from hareflow.common.dead_letters import depth_by_queue
from hareflow.common.events import run_event, task_event
from hareflow.common.messages import StateEvent
from hareflow.common.retention import audit_clean, clean_history, cutoff_for
from hareflow.common.runs import active_run_count, create_scheduled_run, refresh_next_run
from hareflow.common.states import (
    RUN_ACTIVE,
    TaskState,
    TaskTransition,
    WorkerOutcome,
    outcome_state,
)
from hareflow.common.workers import prune_workers
from hareflow.scheduler.dag_callbacks import DagCallbacks
from hareflow.scheduler.dispatch import build_messages, claim_for_republish, mark_confirmed
from hareflow.scheduler.scheduling import RowCache, schedule_pass
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

log = logging.getLogger(__name__)

#: Events that mean there may be new work for the scheduler.
WAKING_TASK_STATES = frozenset(
    {"success", "failed", "up_for_retry", "up_for_reschedule", "skipped", "upstream_failed", "removed"}
)
#: How many in-process events to remember until their broadcast copy arrives (oldest dropped).
HEARD_LIMIT = 50_000
#: The name ``Executor.queue_stats`` gives the dead-letter queue (part of the executor contract).
DEAD_LETTERS = "(dead letters)"
#: How often workers long stopped or lost are pruned (``worker_retention_days``).
PRUNE_WORKERS_EVERY = timedelta(hours=1)
#: How often history older than ``retention_days`` is deleted, and how long one housekeeping pass
#: may spend on it: a backlog (retention just turned on) is worked off a slice per pass, about once
#: a second, so scheduling is never held up for more than about this long.
CLEAN_HISTORY_EVERY = timedelta(hours=1)
CLEAN_HISTORY_BUDGET = 0.2
#: Runs, task instances and other rows per clean-up transaction (``clean_history``'s batch sizes).
CLEAN_HISTORY_BATCH = (20, 500, 500)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class LoopReport:
    runs_created: int = 0
    runs_finished: int = 0
    dispatched: int = 0
    republished: int = 0
    lost_workers: int = 0
    events: list[StateEvent] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        executor: Executor,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._executor = executor
        self._clock = clock
        self._wake = threading.Event()
        self._serialized: dict[tuple[str, str], SerializedDag] = {}
        self._unpublished: set[int] = set()
        #: Published and confirmed, the mark not yet committed (the metastore failed): queued_at ->
        #: task instance ids, marked by the next iteration.
        self._unmarked: dict[datetime, list[int]] = {}
        #: With an executor whose queues die with this process (local), marks left by an earlier
        #: process vouch for nothing: the first iteration forgets them.
        self._volatile_checked = self._executor.durable
        self._rows = RowCache()
        #: The earliest retry or sensor poke time the last pass saw runs wait for: the idle wait
        #: ends then (the times come from rows the pass read anyway; no query of their own).
        self._next_wakeup: datetime | None = None
        self._changed: set[int] = set()  # task instances named in state events since the last pass
        self._changed_lock = threading.Lock()
        self._assets_changed = threading.Event()  # an asset event was announced since the last look
        self._heard: dict[StateEvent, None] = {}  # handed over in-process, not yet seen broadcast
        self._last_heartbeat = 0.0
        self._last_housekeeping: datetime | None = None
        self._housekeeping_every = timedelta(seconds=min(1.0, settings.scheduler_idle_wait))
        self._last_gauges: datetime | None = None
        self._dead_queues_seen: set[str] = set()
        self._queues_seen: set[str] = {settings.default_queue}
        self.ident = f"{socket.gethostname()}:{os.getpid()}"
        self._started_at = clock()
        self._dag_callbacks = DagCallbacks(
            dags_folder=str(settings.effective_dags_folder()),
            timeout=settings.dag_file_processor_timeout,
            env=settings.as_environment(),
        )
        #: Since when this scheduler has watched workers with the metastore reachable (None: not
        #: yet, or the metastore went away): a worker is lost only after a worker_timeout of silence
        #: *watched*, never because its heartbeats waited in the results queue during an outage.
        self._watching_since: datetime | None = None
        self._last_prune: datetime | None = None
        self._last_clean: datetime | None = None
        self._clean_pending = False  # the last clean-up ran out of its budget: go on next pass
        self._clean_counts: dict[str, int] = {}  # rows deleted so far in this round
        #: monotonic time of the last pass that completed (read by the health probe)
        self.last_pass = time.monotonic()

    # -- waking --------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def on_events(self, events: Sequence[StateEvent], *, echoed: bool = True) -> None:
        """Note which task instances changed (for the incremental pass); wake on events that may
        make work: a task finished, a run or DAG changed. ``echoed``: the events were also
        published to the events exchange, so their copies will come back to :meth:`on_broadcast`."""
        ids = [e.ti_id for e in events if e.kind == "task" and e.ti_id is not None]
        with self._changed_lock:
            self._changed.update(ids)
            if echoed:
                for e in events:
                    self._heard[e] = None
                while len(self._heard) > HEARD_LIMIT:
                    del self._heard[next(iter(self._heard))]
        if any(e.kind in ("asset", "dag") for e in events):
            self._assets_changed.set()
        for e in events:
            if e.kind == "task" and e.state in WAKING_TASK_STATES or e.kind in ("run", "dag", "asset"):
                self._wake.set()
                return

    def on_broadcast(self, events: Sequence[StateEvent]) -> None:
        """Events from the events exchange. The ones this process's results consumer or DAG
        processor already handed to :meth:`on_events` come back this way too; they are dropped,
        so one finished task does not wake the scheduler twice (a second pass that would only
        delay the reaction to the next result)."""
        with self._changed_lock:
            fresh = [e for e in events if self._heard.pop(e, False) is False]
        if fresh:
            self.on_events(fresh, echoed=False)

    def _take_changed(self) -> set[int]:
        with self._changed_lock:
            changed, self._changed = self._changed, set()
        return changed

    # -- the loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("scheduler %s started", self.ident)
        delay = 0.5
        while not stop.is_set():
            self._wake.clear()
            started = time.monotonic()
            try:
                report = self.run_once(incremental=True)
                self.last_pass = time.monotonic()
                delay = 0.5
            except (OperationalError, BrokerUnavailable) as exc:
                metrics.SCHEDULER_LOOP_ERRORS.inc()
                if isinstance(exc, OperationalError):
                    self._watching_since = None
                log.warning(
                    "scheduler iteration failed (%s); retrying in %.1fs", exc.__class__.__name__, delay
                )
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            except Exception:
                metrics.SCHEDULER_LOOP_ERRORS.inc()
                log.exception("scheduler iteration failed")
                stop.wait(1.0)
                continue
            took = time.monotonic() - started
            self._wait_for_work(stop)
            # Duty cycle at most one half: a pass over a large run takes tens of milliseconds of
            # CPU, and back-to-back passes would starve the results consumer that feeds them.
            # Small passes (a chain's few milliseconds) are not slowed noticeably. A pass that
            # changed something is exempt: what it dispatched or decided is what the next wake-up
            # reacts to (a fan-out's first task ending after the pass that created the run's task
            # instances), and a pass that decides nothing follows it before long, then rests.
            rest = took - (time.monotonic() - started - took)
            if rest > 0.002 and not report.events:
                stop.wait(rest)
        log.info("scheduler %s stopped", self.ident)

    def _wait_for_work(self, stop: threading.Event) -> None:
        """Until an event wakes us, the idle wait passes, or ``stop`` is set (checked twice a
        second, so a long idle wait never delays shutdown)."""
        wait = self._settings.scheduler_idle_wait
        if self._next_wakeup is not None:
            wait = min(wait, max(0.0, (self._next_wakeup - self._clock()).total_seconds()))
        deadline = time.monotonic() + wait
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._wake.wait(min(remaining, 0.5)):
                return

    def run_once(self, now: datetime | None = None, *, incremental: bool = False) -> LoopReport:
        """One iteration. ``incremental`` (the loop's own passes): between timer passes, a pass
        may rely on state events to learn which task instances changed (see ``schedule_pass``);
        a change that no event announced is then seen by the next timer pass, at most
        ``min(1 s, scheduler_idle_wait)`` later. Without it every pass reads every row."""
        started = time.monotonic()
        now = now or self._clock()
        report = LoopReport()
        # Timers (schedules, stale tasks, lost workers) are checked at most once per interval;
        # a wake-up for finished tasks only needs the scheduling pass.
        housekeeping = (
            self._last_housekeeping is None or now - self._last_housekeeping >= self._housekeeping_every
        )
        if not self._volatile_checked:
            self.forget_volatile_confirms()
        if housekeeping:
            self._last_housekeeping = now
            self.create_due_runs(now, report)
        if housekeeping or self._assets_changed.is_set():
            self._assets_changed.clear()
            self.create_asset_runs(now, report)
        self.schedule_runs(now, report, incremental=incremental and not housekeeping)
        if housekeeping or self._unpublished or self._unmarked:
            self.republish_stale(now, report)
        if housekeeping:
            self.handle_lost_workers(now, report)
            self.prune_workers(now)
            self.clean_history(now)
            self.finish_backfills(now)
            self.heartbeat(now)
            self.refresh_gauges(now)
        if report.events:
            self._executor.publish_events(report.events)
        _record_pass(report, time.monotonic() - started)
        return report

    # -- step: scheduled runs ------------------------------------------------------------------------

    def create_due_runs(self, now: datetime, report: LoopReport) -> None:
        with self._sessions() as session:
            due = session.scalars(
                select(Dag.dag_id).where(
                    Dag.is_active.is_(True), Dag.is_paused.is_(False), Dag.next_run_after <= now
                )
            ).all()
        for dag_id in due:
            try:
                with self._sessions() as session, session.begin():
                    # One scheduler creates a DAG's runs at a time: the others skip the locked row
                    # (SQLite has one writer anyway) and find the runs made when they look again.
                    sqlite = session.get_bind().dialect.name == "sqlite"
                    dag = session.get(Dag, dag_id, with_for_update=None if sqlite else {"skip_locked": True})
                    if dag is None or dag.next_logical_date is None or dag.next_run_after is None:
                        continue
                    created = 0
                    while dag.next_run_after is not None and dag.next_run_after <= now and created < 100:
                        if active_run_count(session, dag_id) >= dag.max_active_runs:
                            break
                        info = refresh_next_run(session, dag, now)
                        if info is None or info.run_after > now:
                            break
                        run = create_scheduled_run(session, dag, info, now)
                        report.events.append(run_event(run))
                        created += 1
                        refresh_next_run(session, dag, now)
                    report.runs_created += created
            except IntegrityError:
                log.info("another scheduler created the run for %s first", dag_id)

    # -- step: asset-triggered runs ------------------------------------------------------------------

    def create_asset_runs(self, now: datetime, report: LoopReport) -> None:
        """One run per DAG whose unconsumed asset events meet its asset schedule, each DAG in its
        own transaction with its row locked (another scheduler skips it and, once this commits,
        finds the events consumed)."""
        with self._sessions() as session:
            waiting = waiting_dag_ids(session)
        for dag_id in waiting:
            try:
                with self._sessions() as session, session.begin():
                    sqlite = session.get_bind().dialect.name == "sqlite"
                    dag = session.get(Dag, dag_id, with_for_update=None if sqlite else {"skip_locked": True})
                    if dag is None or not dag.is_active or dag.is_paused:
                        continue
                    sdag = self._serialized_dag(session, dag)
                    run = consume_if_ready(session, dag, sdag.asset_schedule, now)
                    if run is not None:
                        report.events.append(run_event(run))
                        report.runs_created += 1
            except IntegrityError:
                log.info("another scheduler created the asset-triggered run of %s first", dag_id)

    # -- step: evaluate runs and dispatch ----------------------------------------------------------------

    def _serialized_dag(self, session: Session, dag: Dag) -> SerializedDag:
        """The parsed serialized DAG, reloaded only when its hash changes (it can be large)."""
        key = (dag.dag_id, dag.dag_hash)
        sdag = self._serialized.get(key)
        if sdag is None:
            data = session.scalar(select(Dag.serialized).where(Dag.dag_id == dag.dag_id))
            sdag = SerializedDag.from_dict(data)
            self._serialized = {k: v for k, v in self._serialized.items() if k[0] != dag.dag_id}
            self._serialized[key] = sdag
        return sdag

    def schedule_runs(self, now: datetime, report: LoopReport, *, incremental: bool = False) -> None:
        """One transaction: evaluate the active runs and mark what to dispatch; then publish."""
        # Taken before the transaction begins: a change announced later is read by the next pass.
        changed = self._take_changed()
        with self._sessions() as session, session.begin():
            result = schedule_pass(
                session,
                now,
                self._serialized_dag,
                cache=self._rows,
                changed=changed if incremental else None,
                max_map_length=self._settings.max_map_length,
            )
        report.runs_finished += result.runs_finished
        report.events.extend(result.events)
        self._next_wakeup = result.next_wakeup
        for outcome, count in result.expansions.items():
            metrics.MAPPED_EXPANSIONS.labels(outcome).inc(count)
        if result.mapped_instances:
            metrics.MAPPED_INSTANCES.inc(result.mapped_instances)
        for request in result.callbacks:  # committed: the runs have finished
            self._dag_callbacks.submit(request)
        if not result.messages:
            return
        try:
            self._executor.publish_tasks(result.messages)
            report.dispatched += len(result.messages)
        except BrokerUnavailable as exc:
            # Committed as queued: re-published by the next iteration, not left to queued_timeout.
            log.warning("could not publish %d task(s), will retry: %s", len(result.messages), exc)
            self._unpublished.update(result.dispatched_ids)
            return
        self._unmarked.setdefault(now, []).extend(result.dispatched_ids)
        self.record_confirms(now)

    # -- step: record what the broker confirmed --------------------------------------------------------

    def record_confirms(self, now: datetime) -> None:
        """Mark the task instances whose messages the broker confirmed, in one transaction. If the
        metastore fails they stay in memory and the next iteration marks them: only a crash of this
        process leaves a confirmed message unmarked (and so published twice)."""
        if not self._unmarked:
            return
        pending, self._unmarked = self._unmarked, {}
        try:
            with self._sessions() as session, session.begin():
                for queued_at, ids in pending.items():
                    mark_confirmed(session, ids, queued_at, now)
        except OperationalError as exc:
            for queued_at, ids in pending.items():
                self._unmarked.setdefault(queued_at, []).extend(ids)
            count = sum(len(ids) for ids in pending.values())
            log.warning("could not record %d confirmed publish(es), will retry: %s", count, exc)

    def forget_volatile_confirms(self) -> None:
        """With an executor whose queues live in this process (local), a message an earlier process
        confirmed died with it: forget those marks and re-publish every queued task instance now."""
        with self._sessions() as session, session.begin():
            queued = TaskInstance.state == TaskState.QUEUED
            ids = list(session.scalars(select(TaskInstance.id).where(queued)))
            session.execute(
                update(TaskInstance)
                .where(queued, TaskInstance.confirmed_at.is_not(None))
                .values(confirmed_at=None)
                .execution_options(synchronize_session=False)
            )
        self._unpublished.update(ids)
        self._volatile_checked = True
        if ids:
            log.info("re-publishing %d task(s) left queued by an earlier process", len(ids))

    # -- step: re-publish stale queued tasks ---------------------------------------------------------------

    def republish_stale(self, now: datetime, report: LoopReport) -> None:
        """Re-publish queued task instances whose message the broker never confirmed: at once
        those this process failed to publish, after ``queued_timeout`` any other (a scheduler died
        between committing them as queued and publishing them). Each row is claimed with a
        compare-and-set first, so of several schedulers only one re-publishes it. A confirmed
        message is never re-published: it waits in a durable queue for a worker."""
        self.record_confirms(now)
        cutoff = now - timedelta(seconds=self._settings.queued_timeout)
        pending = set(self._unpublished)
        with self._sessions() as session:
            with session.begin():
                query = select(TaskInstance).where(
                    TaskInstance.state == TaskState.QUEUED, TaskInstance.confirmed_at.is_(None)
                )
                stale = [ti for ti in session.scalars(query.where(TaskInstance.queued_at < cutoff))]
                if pending:
                    stale += list(session.scalars(query.where(TaskInstance.id.in_(pending))))
                stale = list({ti.id: ti for ti in stale}.values())
                if not stale:
                    self._unpublished -= pending
                    return
                runs = {
                    r.id: r
                    for r in session.scalars(select(DagRun).where(DagRun.id.in_({t.run_pk for t in stale})))
                }
                dags = {
                    d.dag_id: d
                    for d in session.scalars(select(Dag).where(Dag.dag_id.in_({t.dag_id for t in stale})))
                }
                sdags = {dag_id: self._serialized_dag(session, d) for dag_id, d in dags.items()}
                stale = [
                    ti
                    for ti in stale
                    if ti.dag_id in sdags and any(t.task_id == ti.task_id for t in sdags[ti.dag_id].tasks)
                ]
                won = set(claim_for_republish(session, [(ti.id, ti.queued_at) for ti in stale], now))
                stale = [ti for ti in stale if ti.id in won]
                for ti in stale:
                    if ti.id not in pending:
                        log.warning(
                            "%s queued for over %ss and its message was never confirmed; re-publishing",
                            ti.label(),
                            self._settings.queued_timeout,
                        )
                messages = build_messages(session, stale, runs, sdags)
        try:
            self._executor.publish_tasks(messages)
            self._unpublished -= pending
            report.republished += len(messages)
        except BrokerUnavailable as exc:
            log.warning("re-publishing failed, will retry: %s", exc)
            self._unpublished |= {ti.id for ti in stale}
            return
        if stale:
            self._unmarked.setdefault(now, []).extend(ti.id for ti in stale)
            self.record_confirms(now)

    # -- step: lost workers ----------------------------------------------------------------------------------

    def handle_lost_workers(self, now: datetime, report: LoopReport) -> None:
        cutoff = now - timedelta(seconds=self._settings.worker_timeout)
        if self._watching_since is None:
            self._watching_since = now
        if self._watching_since > cutoff:
            # Just started, or the metastore just came back: the workers' heartbeats of the gap may
            # still be waiting in the results queue. Judge only a silence watched for worker_timeout.
            return
        with self._sessions() as session, session.begin():
            query = select(Worker).where(
                Worker.state.in_(("active", "stopping")), Worker.last_heartbeat < cutoff
            )
            if session.get_bind().dialect.name != "sqlite":
                query = query.with_for_update(skip_locked=True)  # one scheduler handles each worker
            lost = list(session.scalars(query))
            for w in lost:
                w.state = "lost"
                w.running = 0  # its running tries are failed or retried just below
                report.lost_workers += 1
                age = (now - w.last_heartbeat).total_seconds()
                log.warning("worker %s on %s lost (no heartbeat for %.0fs)", w.name, w.hostname, age)
                held = session.scalars(
                    select(TaskInstance).where(
                        TaskInstance.worker == w.name, TaskInstance.state == TaskState.RUNNING
                    )
                ).all()
                error = f"worker {w.name} on {w.hostname} was lost (no heartbeat for {age:.0f}s)"
                report.events.extend(_fail_lost_tries(session, held, error, now))

    def prune_workers(self, now: datetime) -> None:
        """Hourly: delete workers stopped or lost for longer than ``worker_retention_days``."""
        if self._last_prune is not None and now - self._last_prune < PRUNE_WORKERS_EVERY:
            return
        self._last_prune = now
        with self._sessions() as session, session.begin():
            pruned = prune_workers(session, self._settings.worker_retention_days, now=now)
        if pruned:
            log.info(
                "pruned %d worker(s) stopped or lost for over %g day(s)",
                pruned,
                self._settings.worker_retention_days,
            )

    def clean_history(self, now: datetime) -> None:
        """Hourly: delete history older than ``retention_days`` (``hareflow.common.retention``),
        at most ``CLEAN_HISTORY_BUDGET`` seconds per pass, in batches small enough that the results
        consumer's writes never wait long behind them."""
        days = self._settings.retention_days
        if days <= 0:
            return
        if (
            not self._clean_pending
            and self._last_clean is not None
            and now - self._last_clean < CLEAN_HISTORY_EVERY
        ):
            return
        if not self._clean_pending:
            self._last_clean = now
        try:
            self._clean_round(days, now)
        except Exception:  # noqa: BLE001 - history can wait an hour; scheduling must go on
            log.warning("history clean-up failed; trying again in an hour", exc_info=True)
            self._clean_pending, self._clean_counts = False, {}

    def _clean_round(self, days: float, now: datetime) -> None:
        runs, tis, rows = CLEAN_HISTORY_BATCH
        report = clean_history(
            self._sessions,
            cutoff=cutoff_for(days, now),
            runs_per_batch=runs,
            tis_per_batch=tis,
            rows_per_batch=rows,
            budget=CLEAN_HISTORY_BUDGET,
        )
        self._clean_pending = not report.done
        for table, n in report.counts.items():
            self._clean_counts[table] = self._clean_counts.get(table, 0) + n
        if self._clean_pending:
            return
        # One audit row and one log line per round, however many passes a backlog took.
        counts, self._clean_counts = self._clean_counts, {}
        if any(counts.values()):
            audit_clean(
                self._sessions,
                counts,
                cutoff=report.cutoff,
                username="scheduler",
                origin=f"scheduler@{self.ident}",
            )
            log.info(
                "deleted %d row(s) of history older than %g day(s): %s",
                sum(counts.values()),
                days,
                ", ".join(f"{t} {n}" for t, n in counts.items() if n),
            )

    # -- step: backfills ------------------------------------------------------------------------------------

    def finish_backfills(self, now: datetime) -> None:
        with self._sessions() as session, session.begin():
            for backfill in finish_backfills(session, now):
                log.info("backfill %d of %s finished: %s", backfill.id, backfill.dag_id, backfill.state)

    # -- step: heartbeat -------------------------------------------------------------------------------------

    def heartbeat(self, now: datetime) -> None:
        if time.monotonic() - self._last_heartbeat < 5.0:
            return
        self._last_heartbeat = time.monotonic()
        host, _, pid = self.ident.rpartition(":")
        with self._sessions() as session, session.begin():
            # Insert-if-absent: two processes with one identity (the same pid in two containers
            # with one hostname) share the row rather than fail on it.
            values = {
                "hostname": host,
                "pid": int(pid),
                "started_at": self._started_at,
                "last_heartbeat": now,
            }
            insert_if_absent(session, SchedulerHeartbeat.__table__, {"id": self.ident, **values})
            session.execute(
                update(SchedulerHeartbeat)
                .where(SchedulerHeartbeat.id == self.ident)
                .values(last_heartbeat=now)
            )

    # -- step: gauges ----------------------------------------------------------------------------------------

    def refresh_gauges(self, now: datetime) -> None:
        """Recount task instances of active runs by state and dead letters waiting by queue, and
        read the task queues' depths, at most every ``metrics_refresh_interval``: two GROUP BYs and
        one broker round trip per queue, never on the path between a task's end and the next one's
        start."""
        every = timedelta(seconds=self._settings.metrics_refresh_interval)
        if self._last_gauges is not None and now - self._last_gauges < every:
            return
        self._last_gauges = now
        counts: dict[str, int] = {}
        with self._sessions() as session:
            rows = session.execute(
                select(TaskInstance.queue, TaskInstance.state, func.count())
                .join(DagRun, DagRun.id == TaskInstance.run_pk)
                .where(DagRun.state.in_(RUN_ACTIVE))
                .group_by(TaskInstance.queue, TaskInstance.state)
            ).all()
            consumed = session.scalars(select(Worker.queues).where(Worker.state.in_(("active", "stopping"))))
            for queues in consumed:
                self._queues_seen.update(queues or ())
            dead = depth_by_queue(session)
        for queue, state, n in rows:
            counts[state] = counts.get(state, 0) + int(n)
            self._queues_seen.add(queue)
        metrics.set_task_instance_counts(counts, [s.value for s in TaskState])
        # A queue whose dead letters were all requeued or discarded reads 0, not its last count.
        for queue in self._dead_queues_seen - set(dead):
            metrics.DEAD_LETTERS.labels(queue).set(0)
        for queue, n in dead.items():
            metrics.DEAD_LETTERS.labels(queue).set(n)
        self._dead_queues_seen |= set(dead)
        try:
            stats = self._executor.queue_stats(sorted(self._queues_seen))
        except Exception as exc:  # noqa: BLE001 - the gauges keep their last values
            log.warning("queue depths not refreshed: %s", exc)
            return
        for q in stats:
            if q.name == DEAD_LETTERS:
                metrics.DEAD_LETTER_MESSAGES.set(q.messages)
            else:
                metrics.QUEUE_MESSAGES.labels(q.name).set(q.messages)
                metrics.QUEUE_CONSUMERS.labels(q.name).set(q.consumers)


def _fail_lost_tries(
    session: Session, held: Sequence[TaskInstance], error: str, now: datetime
) -> list[StateEvent]:
    """Fail (or send to retry) the running tries of a lost worker, each a compare-and-set from
    ``running`` on the try read: a result that a results consumer committed meanwhile stands."""
    by_state: dict[str, list[TaskInstance]] = {}
    for ti in held:
        by_state.setdefault(outcome_state(WorkerOutcome.FAILED, ti.try_number, ti.max_tries), []).append(ti)
    events = []
    for state, tis in by_state.items():
        values = {"state": state, "error": error, "end_date": now, "updated_at": now}
        changed = cas.set_task_states(
            session, TaskTransition.WORKER_LOST, [(ti.id, ti.try_number) for ti in tis], values
        )
        for ti in tis:
            if ti.id in changed:
                for name, value in values.items():
                    set_committed_value(ti, name, value)
                events.append(task_event(ti))
    return events


def _record_pass(report: LoopReport, seconds: float) -> None:
    """Metrics of one finished pass, from what the pass already counted."""
    metrics.SCHEDULER_LOOP.observe(seconds)
    metrics.count_state_changes(report.events)
    if report.dispatched:
        metrics.TASKS_DISPATCHED.inc(report.dispatched)
    if report.republished:
        metrics.TASKS_REPUBLISHED.inc(report.republished)
    if report.lost_workers:
        metrics.LOST_WORKERS.inc(report.lost_workers)
