"""The scheduler loop: a list of named steps, each with its own transaction.

    create_due_runs -> schedule_runs (start runs, evaluate trigger rules, dispatch) ->
    republish_stale -> handle_lost_workers -> heartbeat -> wait

``run_once(now)`` is one iteration and takes the clock as a parameter, so tests drive it without
sleeping. The wait ends early whenever a state event says a task finished or a run was triggered:
no fixed sleep sits between one task's end and the next task's start.

Commit, then publish: task instances are marked queued and committed before their messages are
published. If publishing fails they are re-published on the next iteration; if the scheduler dies
first, ``queued_timeout`` re-publishes them (delivery guarantee 1).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from common.broker import BrokerUnavailable, Executor
from common.config import Settings
from common.dag.serialize import SerializedDag
from common.db import Dag, DagRun, Pool, SchedulerHeartbeat, TaskInstance, Worker
from common.events import run_event, task_event
from common.messages import StateEvent
from common.runs import active_run_count, create_scheduled_run, refresh_next_run
from common.states import (
    RUN_ACTIVE,
    TASK_FINISHED,
    RunState,
    TaskState,
    WorkerOutcome,
    outcome_state,
)
from scheduler.decisions import Candidate, Occupant, TIView, evaluate_run, select_dispatch
from scheduler.dispatch import build_messages

log = logging.getLogger(__name__)

#: Events that mean there may be new work for the scheduler.
WAKING_TASK_STATES = frozenset({"success", "failed", "up_for_retry", "skipped", "upstream_failed", "removed"})


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
        self._last_heartbeat = 0.0
        self.ident = f"{socket.gethostname()}:{os.getpid()}"
        self._started_at = clock()

    # -- waking --------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def on_events(self, events: Sequence[StateEvent]) -> None:
        """Wake on events that may make work: a task finished, a run or DAG changed."""
        for e in events:
            if e.kind == "task" and e.state in WAKING_TASK_STATES or e.kind in ("run", "dag"):
                self._wake.set()
                return

    # -- the loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("scheduler %s started", self.ident)
        delay = 0.5
        while not stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
                delay = 0.5
            except (OperationalError, BrokerUnavailable) as exc:
                log.warning(
                    "scheduler iteration failed (%s); retrying in %.1fs", exc.__class__.__name__, delay
                )
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            except Exception:
                log.exception("scheduler iteration failed")
                stop.wait(1.0)
                continue
            self._wake.wait(self._settings.scheduler_idle_wait)
        log.info("scheduler %s stopped", self.ident)

    def run_once(self, now: datetime | None = None) -> LoopReport:
        now = now or self._clock()
        report = LoopReport()
        self.create_due_runs(now, report)
        self.schedule_runs(now, report)
        self.republish_stale(now, report)
        self.handle_lost_workers(now, report)
        self.heartbeat(now)
        if report.events:
            self._executor.publish_events(report.events)
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
                    dag = session.get(Dag, dag_id)
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

    # -- step: evaluate runs and dispatch ----------------------------------------------------------------

    def _serialized_dag(self, dag: Dag) -> SerializedDag:
        key = (dag.dag_id, dag.dag_hash)
        sdag = self._serialized.get(key)
        if sdag is None:
            sdag = SerializedDag.from_dict(dag.serialized)
            self._serialized = {k: v for k, v in self._serialized.items() if k[0] != dag.dag_id}
            self._serialized[key] = sdag
        return sdag

    def schedule_runs(self, now: datetime, report: LoopReport) -> None:
        with self._sessions() as session:
            with session.begin():
                messages_for, runs, sdags = self._schedule_in_transaction(session, now, report)
            self._publish(session, messages_for, runs, sdags, report)

    def _schedule_in_transaction(
        self, session: Session, now: datetime, report: LoopReport
    ) -> tuple[list[TaskInstance], dict[int, DagRun], dict[str, SerializedDag]]:
        query = select(DagRun).where(DagRun.state.in_(RUN_ACTIVE)).order_by(DagRun.logical_date, DagRun.id)
        if session.get_bind().dialect.name != "sqlite":
            query = query.with_for_update(skip_locked=True)
        active = list(session.scalars(query))
        if not active:
            return [], {}, {}
        dags = {
            d.dag_id: d
            for d in session.scalars(select(Dag).where(Dag.dag_id.in_({r.dag_id for r in active})))
        }
        self._start_queued_runs(active, dags, now, report)
        running = [r for r in active if r.state == RunState.RUNNING and r.dag_id in dags]
        tis_by_run: dict[int, list[TaskInstance]] = defaultdict(list)
        if running:
            for ti in session.scalars(
                select(TaskInstance).where(TaskInstance.run_pk.in_([r.id for r in running]))
            ):
                tis_by_run[ti.run_pk].append(ti)
        sdags: dict[str, SerializedDag] = {}
        schedulable: list[DagRun] = []
        for run in running:
            dag = dags[run.dag_id]
            sdag = sdags[run.dag_id] = self._serialized_dag(dag)
            tis_by_run[run.id] = self._verify_integrity(session, run, sdag, tis_by_run[run.id], now, report)
            if dag.is_paused:
                continue
            schedulable.append(run)
            self._evaluate(run, sdag, tis_by_run[run.id], now, report)
        chosen = self._choose_dispatch(session, schedulable, dags, sdags, tis_by_run, now, report)
        runs = {r.id: r for r in running}
        return chosen, runs, sdags

    def _start_queued_runs(
        self, active: list[DagRun], dags: dict[str, Dag], now: datetime, report: LoopReport
    ) -> None:
        running_count: dict[str, int] = defaultdict(int)
        for run in active:
            if run.state == RunState.RUNNING:
                running_count[run.dag_id] += 1
        for run in active:
            dag = dags.get(run.dag_id)
            if run.state != RunState.QUEUED or dag is None or dag.is_paused:
                continue
            if running_count[run.dag_id] >= dag.max_active_runs:
                continue
            run.state = RunState.RUNNING
            run.start_date = now
            running_count[run.dag_id] += 1
            report.events.append(run_event(run))

    def _verify_integrity(
        self,
        session: Session,
        run: DagRun,
        sdag: SerializedDag,
        tis: list[TaskInstance],
        now: datetime,
        report: LoopReport,
    ) -> list[TaskInstance]:
        """Create task instances for new tasks; mark those whose task left the DAG as removed."""
        have = {ti.task_id for ti in tis}
        wanted = {t.task_id for t in sdag.tasks}
        created = []
        for task in sdag.tasks:
            if task.task_id in have:
                continue
            ti = TaskInstance(
                run_pk=run.id,
                dag_id=run.dag_id,
                run_id=run.run_id,
                task_id=task.task_id,
                map_index=-1,
                state=TaskState.NONE,
                try_number=0,
                max_tries=task.retries + 1,
                queue=task.queue,
                priority=task.priority,
                pool=task.pool,
                pool_slots=task.pool_slots,
                updated_at=now,
            )
            session.add(ti)
            created.append(ti)
        for ti in tis:
            if ti.task_id not in wanted and ti.state not in TASK_FINISHED:
                ti.state = TaskState.REMOVED
                ti.updated_at = now
                report.events.append(task_event(ti))
        if created:
            session.flush()
        return tis + created

    def _evaluate(
        self, run: DagRun, sdag: SerializedDag, tis: list[TaskInstance], now: datetime, report: LoopReport
    ) -> None:
        by_task = {ti.task_id: ti for ti in tis}
        views = {ti.task_id: TIView(ti.state, ti.try_number, ti.end_date, ti.next_retry_at) for ti in tis}
        decision = evaluate_run(sdag.tasks, views, now)
        for task_id in decision.schedule:
            ti = by_task[task_id]
            ti.state = TaskState.SCHEDULED
            ti.next_retry_at = None
            ti.updated_at = now
            report.events.append(task_event(ti))
        for task_id, state in [(t, TaskState.UPSTREAM_FAILED) for t in decision.upstream_failed] + [
            (t, TaskState.SKIPPED) for t in decision.skip
        ]:
            ti = by_task[task_id]
            ti.state = state
            ti.end_date = now
            ti.updated_at = now
            report.events.append(task_event(ti))
        for task_id, when in decision.retry_at.items():
            if by_task[task_id].next_retry_at != when:
                by_task[task_id].next_retry_at = when
        if decision.run_state is not None:
            run.state = decision.run_state
            run.end_date = now
            report.runs_finished += 1
            report.events.append(run_event(run))

    def _choose_dispatch(
        self,
        session: Session,
        runs: list[DagRun],
        dags: dict[str, Dag],
        sdags: dict[str, SerializedDag],
        tis_by_run: dict[int, list[TaskInstance]],
        now: datetime,
        report: LoopReport,
    ) -> list[TaskInstance]:
        candidates: dict[int, TaskInstance] = {}
        cands: list[Candidate] = []
        occupants: list[Occupant] = []
        position: dict[str, dict[str, int]] = {
            dag_id: {t.task_id: i for i, t in enumerate(s.tasks)} for dag_id, s in sdags.items()
        }
        for tis in tis_by_run.values():
            for ti in tis:
                if ti.state in (TaskState.QUEUED, TaskState.RUNNING):
                    occupants.append(Occupant(ti.dag_id, ti.pool, ti.pool_slots, ti.state))
        order_of_run = {r.id: i for i, r in enumerate(runs)}
        for run in runs:
            for ti in tis_by_run[run.id]:
                if ti.state != TaskState.SCHEDULED:
                    continue
                candidates[ti.id] = ti
                cands.append(
                    Candidate(
                        ti_id=ti.id,
                        dag_id=ti.dag_id,
                        priority=ti.priority,
                        order=(order_of_run[run.id], position[run.dag_id].get(ti.task_id, 0)),
                        pool=ti.pool,
                        pool_slots=ti.pool_slots,
                    )
                )
        if not cands:
            return []
        pools = {p.name: p.slots for p in session.scalars(select(Pool))}
        for c in cands:
            if c.pool is not None and c.pool not in pools:
                ti = candidates[c.ti_id]
                ti.state = outcome_state(WorkerOutcome.FAILED, ti.max_tries, ti.max_tries)
                ti.error = (
                    f"pool {c.pool!r} does not exist; create it with `hareflow pools set {c.pool} SLOTS`"
                )
                ti.end_date = now
                report.events.append(task_event(ti))
        chosen = select_dispatch(
            cands,
            occupants,
            max_active_tasks={d: dags[d].max_active_tasks for d in dags},
            pool_slots=pools,
        )
        out = []
        for c in chosen:
            ti = candidates[c.ti_id]
            ti.state = TaskState.QUEUED
            ti.try_number += 1
            ti.queued_at = now
            ti.start_date = ti.end_date = ti.duration = None
            ti.worker = ti.hostname = ti.pid = None
            ti.error = None
            ti.updated_at = now
            report.events.append(task_event(ti))
            out.append(ti)
        return out

    def _publish(
        self,
        session: Session,
        tis: list[TaskInstance],
        runs: dict[int, DagRun],
        sdags: dict[str, SerializedDag],
        report: LoopReport,
    ) -> None:
        if not tis:
            return
        ids = [ti.id for ti in tis]  # read now: a failed transaction expires the objects
        try:
            with session.begin():
                messages = build_messages(session, tis, runs, sdags)
        except Exception:
            # They are committed as queued: without this they would wait for queued_timeout.
            self._unpublished.update(ids)
            raise
        try:
            self._executor.publish_tasks(messages)
            report.dispatched += len(messages)
        except BrokerUnavailable as exc:
            log.warning("could not publish %d task(s), will retry: %s", len(messages), exc)
            self._unpublished.update(ti.id for ti in tis)

    # -- step: re-publish stale queued tasks ---------------------------------------------------------------

    def republish_stale(self, now: datetime, report: LoopReport) -> None:
        cutoff = now - timedelta(seconds=self._settings.queued_timeout)
        pending = set(self._unpublished)
        with self._sessions() as session:
            with session.begin():
                query = select(TaskInstance).where(TaskInstance.state == TaskState.QUEUED)
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
                sdags = {dag_id: self._serialized_dag(d) for dag_id, d in dags.items()}
                stale = [
                    ti
                    for ti in stale
                    if ti.dag_id in sdags and any(t.task_id == ti.task_id for t in sdags[ti.dag_id].tasks)
                ]
                for ti in stale:
                    if ti.id not in pending:
                        log.warning(
                            "%s queued for over %ss with no worker reporting it; re-publishing",
                            ti.label(),
                            self._settings.queued_timeout,
                        )
                    ti.queued_at = now
                messages = build_messages(session, stale, runs, sdags)
        try:
            self._executor.publish_tasks(messages)
            self._unpublished -= pending
            report.republished += len(messages)
        except BrokerUnavailable as exc:
            log.warning("re-publishing failed, will retry: %s", exc)
            self._unpublished |= {ti.id for ti in stale}

    # -- step: lost workers ----------------------------------------------------------------------------------

    def handle_lost_workers(self, now: datetime, report: LoopReport) -> None:
        cutoff = now - timedelta(seconds=self._settings.worker_timeout)
        with self._sessions() as session, session.begin():
            lost = list(
                session.scalars(
                    select(Worker).where(
                        Worker.state.in_(("active", "stopping")), Worker.last_heartbeat < cutoff
                    )
                )
            )
            for w in lost:
                w.state = "lost"
                report.lost_workers += 1
                age = (now - w.last_heartbeat).total_seconds()
                log.warning("worker %s on %s lost (no heartbeat for %.0fs)", w.name, w.hostname, age)
                held = session.scalars(
                    select(TaskInstance).where(
                        TaskInstance.worker == w.name, TaskInstance.state == TaskState.RUNNING
                    )
                )
                for ti in held:
                    ti.state = outcome_state(WorkerOutcome.FAILED, ti.try_number, ti.max_tries)
                    ti.error = f"worker {w.name} on {w.hostname} was lost (no heartbeat for {age:.0f}s)"
                    ti.end_date = now
                    ti.updated_at = now
                    report.events.append(task_event(ti))

    # -- step: heartbeat -------------------------------------------------------------------------------------

    def heartbeat(self, now: datetime) -> None:
        if time.monotonic() - self._last_heartbeat < 5.0:
            return
        self._last_heartbeat = time.monotonic()
        with self._sessions() as session, session.begin():
            row = session.get(SchedulerHeartbeat, self.ident)
            if row is None:
                host, _, pid = self.ident.rpartition(":")
                row = SchedulerHeartbeat(
                    id=self.ident, hostname=host, pid=int(pid), started_at=self._started_at
                )
                session.add(row)
            row.last_heartbeat = now
