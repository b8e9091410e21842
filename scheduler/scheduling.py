"""One scheduling pass over the active runs, in the caller's transaction.

The pass is the scheduler's hot path: it runs after every batch of results. It reads task
instances as plain column rows (not ORM objects) and writes its decisions as a handful of bulk
``UPDATE ... WHERE id IN (...)`` statements, so its cost is a few queries per pass whatever the
number of task instances that changed.

Between the passes that change something, a wide run wakes the scheduler after every batch of
results without anything to decide (the fan-in waits for all its upstream tasks). For those wake-ups
an incremental pass (``RowCache`` plus the ids named in state events) re-reads only the rows that
changed and evaluates the runs on the cached rows; only if nothing at all is to be decided does it
stop there. Anything to decide, and anything the cache cannot vouch for, takes the full path, so
every write is still decided on rows read in the same transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hareflow.common.dag.serialize import SerializedDag, SerializedTask
from hareflow.common.db import Backfill, Dag, DagRun, Pool, TaskInstance, cas
from hareflow.common.events import run_event, task_event
from hareflow.common.messages import STOP_EVENT, StateEvent, TaskMessage
from hareflow.common.states import (
    RUN_ACTIVE,
    TASK_DISPATCHED,
    TASK_FINISHED,
    RunState,
    RunTransition,
    TaskState,
    TaskTransition,
    WorkerOutcome,
    outcome_state,
)
from hareflow.common.tries import keep_tries
from hareflow.scheduler import expansion
from hareflow.scheduler.dag_callbacks import callback_request
from hareflow.scheduler.decisions import (
    Candidate,
    Occupant,
    RunDecision,
    evaluate_run,
    next_wakeup,
    select_dispatch,
)
from hareflow.scheduler.dispatch import build_messages
from hareflow.scheduler.past import past_blockers
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, defer


@dataclass
class TIRow:
    """The columns of a task instance the pass needs (duck-typed like a TaskInstance)."""

    id: int
    run_pk: int
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str
    try_number: int
    max_tries: int
    queue: str
    priority: int
    pool: str | None
    pool_slots: int
    end_date: datetime | None
    next_retry_at: datetime | None
    reschedules: int
    first_poke_at: datetime | None


_COLUMNS = [TaskInstance.__table__.c[f] for f in TIRow.__dataclass_fields__]


@dataclass
class PassResult:
    messages: list[TaskMessage] = field(default_factory=list)
    events: list[StateEvent] = field(default_factory=list)
    dispatched_ids: list[int] = field(default_factory=list)
    runs_finished: int = 0
    #: mapped tasks expanded in this pass, by outcome (expanded, empty, failed), and instances made
    expansions: dict[str, int] = field(default_factory=dict)
    mapped_instances: int = 0
    #: the incremental check found nothing to decide, so no task instance was loaded in full
    incremental: bool = False
    #: DAG callbacks to run once this pass has committed (``scheduler.dag_callbacks``)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    #: the earliest retry or sensor poke time the evaluated runs wait for (the loop wakes then)
    next_wakeup: datetime | None = None


class RowCache:
    """The task-instance rows of the running runs, as read by the last full pass that decided
    nothing (so they are still what the metastore holds, but for the changes named since)."""

    def __init__(self) -> None:
        self.runs: dict[int, tuple[str | None, dict[int, TIRow]]] = {}  # run_pk -> (dag_hash, rows)

    def clear(self) -> None:
        self.runs = {}

    def store(
        self, runs: Iterable[DagRun], dags: dict[str, Dag], rows_by_run: dict[int, list[TIRow]]
    ) -> None:
        self.runs = {
            run.id: (dags[run.dag_id].dag_hash, {r.id: r for r in rows_by_run[run.id]}) for run in runs
        }


class _Writes:
    """Decisions collected during the pass, flushed as bulk compare-and-set updates: each write
    applies only to a row still in its transition's allowed previous states with the try number
    read, and only the writes that took effect make state events (or get dispatched)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        #: (row, the try number read): a row scheduled in this pass may be queued (try + 1) too
        self.by_state: dict[str, list[tuple[TIRow, int]]] = defaultdict(list)
        self.retry_at: list[tuple[TIRow, datetime]] = []
        self.failed: list[tuple[TIRow, str]] = []
        self.expand_failed: list[tuple[TIRow, str]] = []
        self.queued: list[TIRow] = []
        #: up_for_reschedule sensors whose next poke is due (ids), and those dispatched again
        self.due_pokes: set[int] = set()
        self.requeued: list[TIRow] = []
        self.next_wakeup: datetime | None = None
        self.finished: list[tuple[DagRun, str]] = []
        self.timed_out: list[tuple[TIRow, int]] = []
        #: timed-out rows a worker may be running (queued or running), with the reason to record
        self.stopped: list[tuple[TIRow, int, str]] = []
        self.timed_out_runs: set[int] = set()
        self.events: list[StateEvent] = []
        self.created = 0
        self.expansions: dict[str, int] = defaultdict(int)
        self.mapped_instances = 0

    def decided(self) -> bool:
        """Whether the pass decided any write (taken or lost: either way the rows read are stale)."""
        return bool(
            self.by_state
            or self.retry_at
            or self.failed
            or self.expand_failed
            or self.queued
            or self.requeued
            or self.finished
            or self.created
            or self.timed_out
            or self.stopped
        )

    def set_state(self, row: TIRow, state: str) -> None:
        row.state = state
        self.by_state[state].append((row, row.try_number))

    def flush(self, session: Session) -> set[int]:
        """Write the task-instance decisions; return the ids of those dispatched (queued)."""
        now = self.now
        for state, rows in self.by_state.items():
            values: dict[str, Any] = {"state": state, "updated_at": now}
            if state == TaskState.SCHEDULED:
                values["next_retry_at"] = None
            elif state in (TaskState.UPSTREAM_FAILED, TaskState.SKIPPED):
                values["end_date"] = now
            self._write(session, _BY_STATE[state], rows, values)
        if self.timed_out:
            values = {"state": TaskState.SKIPPED, "end_date": now, "updated_at": now}
            self._write(session, TaskTransition.RUN_TIMEOUT, self.timed_out, values)
        for row, try_number, reason in self.stopped:
            values = {"state": TaskState.SKIPPED, "error": reason, "end_date": now, "updated_at": now}
            if self._write(session, TaskTransition.RUN_TIMEOUT, [(row, try_number)], values):
                # Published after the commit with the other events: the worker running it kills it.
                stop = replace(task_event(row), kind=STOP_EVENT, state=str(TaskState.SKIPPED))  # type: ignore[arg-type]
                self.events.append(replace(stop, try_number=try_number))
        for row, when in self.retry_at:
            keys = [(row.id, row.try_number)]
            cas.set_task_states(
                session, TaskTransition.RETRY_DELAY, keys, {"state": row.state, "next_retry_at": when}
            )
        for row, error in self.failed:
            values = {"state": row.state, "error": error, "end_date": now, "updated_at": now}
            self._write(session, TaskTransition.FAIL_UNSCHEDULABLE, [(row, row.try_number)], values)
        for row, error in self.expand_failed:
            values = {"state": row.state, "error": error, "end_date": now, "updated_at": now}
            self._write(session, TaskTransition.FAIL_EXPANSION, [(row, row.try_number)], values)
        requeued = self._requeue(session)
        if not self.queued:
            return requeued
        # The rows carry the new try number; the compare-and-set is on the one read.
        keys = [(r.id, r.try_number - 1) for r in self.queued]
        # A retry: its ended try is kept first (a cleared instance's was kept by the clear).
        keep_tries(session, keys, ended_as=TaskState.UP_FOR_RETRY)
        values = {
            "state": TaskState.QUEUED,
            "try_number": TaskInstance.try_number + 1,
            "queued_at": now,
            "confirmed_at": None,  # a new try: its message is not confirmed yet
            "start_date": None,
            "end_date": None,
            "duration": None,
            "worker": None,
            "hostname": None,
            "pid": None,
            "error": None,
            "reschedules": 0,  # a new try: a sensor starts its wait (and its timeout) afresh
            "first_poke_at": None,
            "updated_at": now,
        }
        queued = cas.set_task_states(session, TaskTransition.QUEUE, keys, values)
        self.events.extend(task_event(r) for r in self.queued if r.id in queued)  # type: ignore[arg-type]
        return queued | requeued

    def _requeue(self, session: Session) -> set[int]:
        """Dispatch the due sensors again: the same try (its number unchanged), a new delivery of
        it (``reschedules``, already counted when the reschedule was recorded)."""
        if not self.requeued:
            return set()
        now = self.now
        values = {
            "state": TaskState.QUEUED,
            "queued_at": now,
            "confirmed_at": None,  # a new message: not confirmed yet
            "next_retry_at": None,
            "start_date": None,  # start, end and duration are each delivery's; first_poke_at spans them
            "end_date": None,
            "duration": None,
            "worker": None,
            "hostname": None,
            "pid": None,
            "updated_at": now,
        }
        keys = [(r.id, r.try_number) for r in self.requeued]
        done = cas.set_task_states(session, TaskTransition.REQUEUE_RESCHEDULED, keys, values)
        self.events.extend(task_event(r) for r in self.requeued if r.id in done)  # type: ignore[arg-type]
        return done

    def _write(
        self,
        session: Session,
        transition: TaskTransition,
        rows: list[tuple[TIRow, int]],
        values: dict[str, Any],
    ) -> set[int]:
        """Write ``values`` over ``rows`` (compare-and-set); return the ids changed."""
        changed = cas.set_task_states(session, transition, [(r.id, t) for r, t in rows], values)
        # The event says the state written, even if the row has moved on in this pass (queued).
        self.events.extend(
            replace(task_event(r), state=values["state"], try_number=t)  # type: ignore[arg-type]
            for r, t in rows
            if r.id in changed
        )
        return changed

    def finish_runs(self, session: Session) -> list[DagRun]:
        """Finish the runs decided finished, each re-checked in its UPDATE (no task instance of it
        unfinished, as a clear committed meanwhile would leave one); return those finished."""
        return [
            run
            for run, state in self.finished
            if cas.set_run_state(session, run, RunTransition.FINISH, state=state, end_date=self.now)
        ]


#: The transition each state the pass decides (other than queued and failed) is written with.
_BY_STATE = {
    TaskState.SCHEDULED: TaskTransition.SCHEDULE,
    TaskState.UPSTREAM_FAILED: TaskTransition.UPSTREAM_FAILED,
    TaskState.SKIPPED: TaskTransition.SKIP,
    TaskState.REMOVED: TaskTransition.REMOVE,
}


def schedule_pass(
    session: Session,
    now: datetime,
    serialized: Callable[[Session, Dag], SerializedDag],
    *,
    cache: RowCache | None = None,
    changed: Collection[int] | None = None,
    max_map_length: int = 1024,
) -> PassResult:
    """Start queued runs, evaluate the running ones, pick and mark what to dispatch, build the
    messages. The caller commits, then publishes ``messages``.

    With ``cache``, a pass that reads every row and decides nothing keeps the rows there. With
    ``changed`` as well (the ids of every task instance changed since the caller's previous pass,
    taken before this transaction began), the pass first refreshes only those rows and returns
    early if, on the cached rows, a full pass would decide nothing. ``max_map_length``: the most
    instances a mapped task may expand to (``hareflow.scheduler.expansion``).
    """
    result = PassResult()
    active = _active_runs(session)
    if not active:
        return result
    dag_ids = {r.dag_id for r in active}
    dags = {
        d.dag_id: d
        for d in session.scalars(select(Dag).options(defer(Dag.serialized)).where(Dag.dag_id.in_(dag_ids)))
    }
    backfill_ids = {r.backfill_id for r in active if r.backfill_id is not None}
    backfill_limits = (
        dict(
            session.execute(
                select(Backfill.id, Backfill.max_active_runs).where(Backfill.id.in_(backfill_ids))
            )
            .tuples()
            .all()
        )
        if backfill_ids
        else {}
    )
    elsewhere = _running_elsewhere(session, active) if any(r.state == RunState.QUEUED for r in active) else {}
    result.events.extend(_start_queued_runs(session, active, dags, backfill_limits, now, elsewhere))
    running = [r for r in active if r.state == RunState.RUNNING and r.dag_id in dags]
    if not running:
        if cache is not None:
            cache.clear()
        return result
    sdags = {dag_id: serialized(session, dags[dag_id]) for dag_id in {r.dag_id for r in running}}
    held = past_blockers(session, running, sdags)
    if (
        cache is not None
        and changed is not None
        and not result.events
        and _nothing_to_decide(session, running, dags, sdags, cache, changed, now, held, wakeups := [])
    ):
        result.incremental = True
        result.next_wakeup = min(wakeups) if wakeups else None
        return result
    rows_by_run: dict[int, list[TIRow]] = defaultdict(list)
    # Core, not ORM loading: thousands of rows per pass on a wide run.
    query_tis = select(*_COLUMNS).where(TaskInstance.__table__.c.run_pk.in_([r.id for r in running]))
    for values in session.connection().execute(query_tis).all():
        row = TIRow(*values)
        rows_by_run[row.run_pk].append(row)
    writes = _Writes(now)
    schedulable: list[DagRun] = []
    for run in running:
        sdag = sdags[run.dag_id]
        rows_by_run[run.id] = _verify_integrity(session, run, sdag, rows_by_run[run.id], writes)
        if _timed_out(run, sdag, now):
            _time_out(run, sdag, rows_by_run[run.id], writes)
            continue
        if dags[run.dag_id].is_paused and run.backfill_id is None:
            continue  # pausing holds scheduled and manual runs; an explicit backfill goes on
        schedulable.append(run)
        rows_by_run[run.id] = _revise(session, run, sdag, rows_by_run[run.id], writes, max_map_length)
        expand = _evaluate(run, sdag, rows_by_run[run.id], writes, held.get(run.id, set()))
        if expand:
            rows_by_run[run.id] = _expand(
                session, run, sdag, rows_by_run[run.id], expand, writes, max_map_length
            )
    chosen = _choose_dispatch(session, schedulable, dags, sdags, rows_by_run, writes)
    queued = writes.flush(session)
    chosen = [r for r in chosen if r.id in queued]
    result.events.extend(writes.events)
    result.expansions, result.mapped_instances = dict(writes.expansions), writes.mapped_instances
    result.next_wakeup = writes.next_wakeup
    for run in writes.finish_runs(session):
        result.runs_finished += 1
        result.events.append(run_event(run))
        reason = "timed_out" if run.id in writes.timed_out_runs else None
        request = callback_request(run, sdags[run.dag_id], run.state, reason)
        if request is not None:
            result.callbacks.append(request)
    if cache is not None:
        if writes.decided() or result.events:
            cache.clear()  # the rows changed in this pass: the next pass reads them in full
        else:
            cache.store(running, dags, rows_by_run)
    if chosen:
        runs = {r.id: r for r in running}
        result.messages = build_messages(session, chosen, runs, sdags)  # type: ignore[arg-type]
        result.dispatched_ids = [r.id for r in chosen]
    return result


def _active_runs(session: Session) -> list[DagRun]:
    """The running runs, and the queued runs that could start now, oldest first, locked.

    Of each limit's queued runs (a DAG's max_active_runs, a backfill's own) only the oldest
    ``limit`` are read: no more of them can start in one pass, and a burst of event runs or a long
    backlog then costs a pass no more than the runs it can start.
    """
    lock = session.get_bind().dialect.name != "sqlite"  # several schedulers share the runs
    running = select(DagRun).where(DagRun.state == RunState.RUNNING)
    rank = (
        func.row_number()
        .over(partition_by=(DagRun.dag_id, DagRun.backfill_id), order_by=(DagRun.logical_date, DagRun.id))
        .label("rank")
    )
    ranked = (
        select(
            DagRun.id,
            rank,
            func.coalesce(Backfill.max_active_runs, Dag.max_active_runs, 1).label("limit"),
        )
        .join(Dag, Dag.dag_id == DagRun.dag_id, isouter=True)
        .join(Backfill, Backfill.id == DagRun.backfill_id, isouter=True)
        .where(DagRun.state == RunState.QUEUED)
        .subquery()
    )
    startable = select(ranked.c.id).where(ranked.c.rank <= ranked.c.limit)
    queued = select(DagRun).where(DagRun.id.in_(startable))
    if lock:
        running = running.with_for_update(skip_locked=True)
        queued = queued.with_for_update(skip_locked=True)
    runs = list(session.scalars(running)) + list(session.scalars(queued))
    far = datetime.max.replace(tzinfo=UTC)
    runs.sort(key=lambda r: (r.logical_date is None, r.logical_date or far, r.id))
    return runs


def _run_pool(dag_id: str, backfill_id: int | None) -> tuple[str, object]:
    """What a run counts against: its backfill's limit, or its DAG's max_active_runs."""
    return ("backfill", backfill_id) if backfill_id is not None else ("dag", dag_id)


def _running_elsewhere(session: Session, active: list[DagRun]) -> dict[tuple[str, object], int]:
    """Running runs this pass did not lock (another scheduler holds them), by what they count
    against: with several schedulers, a limit counts every running run, not only this pass's."""
    query = (
        select(DagRun.dag_id, DagRun.backfill_id)
        .where(DagRun.state == RunState.RUNNING, DagRun.dag_id.in_({r.dag_id for r in active}))
        .where(DagRun.id.not_in([r.id for r in active]))
    )
    counts: dict[tuple[str, object], int] = defaultdict(int)
    for dag_id, backfill_id in session.execute(query):
        counts[_run_pool(dag_id, backfill_id)] += 1
    return counts


def _start_queued_runs(
    session: Session,
    active: list[DagRun],
    dags: dict[str, Dag],
    backfill_limits: dict[int, int],
    now: datetime,
    elsewhere: dict[tuple[str, object], int],
) -> list[StateEvent]:
    """Start queued runs, oldest first, within their limit: the DAG's max_active_runs for
    scheduled and manual runs, the backfill's own for backfill runs. ``elsewhere``: running runs
    locked by other schedulers, which count too."""

    def pool_of(run: DagRun) -> tuple[str, object]:
        return _run_pool(run.dag_id, run.backfill_id)

    running_count: dict[tuple[str, object], int] = defaultdict(int, elsewhere)
    for run in active:
        if run.state == RunState.RUNNING:
            running_count[pool_of(run)] += 1
    events = []
    for run in active:
        dag = dags.get(run.dag_id)
        if run.state != RunState.QUEUED or dag is None:
            continue
        if run.backfill_id is None:
            if dag.is_paused:
                continue
            limit = dag.max_active_runs
        else:
            limit = backfill_limits.get(run.backfill_id, 1)
        if running_count[pool_of(run)] >= limit:
            continue
        if not cas.set_run_state(session, run, RunTransition.START, state=RunState.RUNNING, start_date=now):
            continue
        running_count[pool_of(run)] += 1
        events.append(run_event(run))
    return events


def _verify_integrity(
    session: Session, run: DagRun, sdag: SerializedDag, rows: list[TIRow], writes: _Writes
) -> list[TIRow]:
    """Create task instances for new tasks; mark those whose task left the DAG as removed."""
    have = {r.task_id for r in rows}
    wanted = {t.task_id for t in sdag.tasks}
    created = [
        expansion.new_instance_row(run, task, -1, writes.now)
        for task in sdag.tasks
        if task.task_id not in have
    ]
    for row in rows:
        if row.task_id not in wanted and row.state not in TASK_FINISHED:
            writes.set_state(row, TaskState.REMOVED)
    if not created:
        return rows
    writes.created += len(created)
    # Core rows, not ORM objects: a wide run's first pass creates thousands of them.
    table = TaskInstance.__table__
    session.execute(insert(table), created)
    new_ids = [c["task_id"] for c in created]
    for start in range(0, len(new_ids), 1000):
        query = select(*_COLUMNS).where(
            table.c.run_pk == run.id, table.c.task_id.in_(new_ids[start : start + 1000])
        )
        rows = rows + [TIRow(*values) for values in session.connection().execute(query).all()]
    return rows


def _nothing_to_decide(
    session: Session,
    running: list[DagRun],
    dags: dict[str, Dag],
    sdags: dict[str, SerializedDag],
    cache: RowCache,
    changed: Collection[int],
    now: datetime,
    held: dict[int, set[str]],
    wakeups: list[datetime],
) -> bool:
    """True when a full pass over the cached rows, refreshed with the ``changed`` ones, would
    create, change and dispatch nothing (``wakeups`` then holds the retry and poke times the runs
    wait for). False whenever the cache does not cover a running run
    (new run, new DAG version, a task instance it has never seen)."""
    for run in running:
        cached = cache.runs.get(run.id)
        if cached is None or cached[0] != dags[run.dag_id].dag_hash:
            return False
    ids = sorted(changed)
    table = TaskInstance.__table__
    for start in range(0, len(ids), 1000):
        query = select(*_COLUMNS).where(table.c.id.in_(ids[start : start + 1000]))
        for values in session.connection().execute(query).all():
            row = TIRow(*values)
            cached = cache.runs.get(row.run_pk)
            if cached is None:
                continue  # a run that is not running (or not ours): not evaluated in this pass
            if row.id not in cached[1]:
                return False
            cached[1][row.id] = row
    for run in running:
        rows = cache.runs[run.id][1].values()
        sdag = sdags[run.dag_id]
        if _timed_out(run, sdag, now):
            return False
        wanted = {t.task_id for t in sdag.tasks}
        have = {r.task_id for r in rows}
        if wanted - have or any(r.task_id not in wanted and r.state not in TASK_FINISHED for r in rows):
            return False  # _verify_integrity would create or remove task instances
        if dags[run.dag_id].is_paused and run.backfill_id is None:
            continue
        if any(r.state == TaskState.SCHEDULED for r in rows):
            return False  # a dispatch candidate: occupancy must be read fresh
        by_task, instances = _group(rows)
        decision = evaluate_run(sdag.tasks, by_task, now, instances)
        _hold(decision, held.get(run.id, ()))
        if decision.decides_anything():
            return False
        if any(by_task[t].next_retry_at != when for t, when in decision.retry_at.items()):
            return False
        if any(instances[t][i].next_retry_at != when for (t, i), when in decision.retry_at_instances.items()):
            return False
        when = next_wakeup(decision)
        if when is not None:
            wakeups.append(when)
    return True


def _group(rows: Iterable[TIRow]) -> tuple[dict[str, TIRow], dict[str, dict[int, TIRow]]]:
    """A run's rows as the decisions read them: task id -> its one instance (a mapped task's
    placeholder until it expands), and task id -> map index -> instance for expanded tasks."""
    single: dict[str, TIRow] = {}
    instances: dict[str, dict[int, TIRow]] = defaultdict(dict)
    for r in rows:
        if r.map_index < 0:
            single[r.task_id] = r
        else:
            instances[r.task_id][r.map_index] = r
    return single, instances


def _timed_out(run: DagRun, sdag: SerializedDag, now: datetime) -> bool:
    """Whether the run has been running longer than its DAG's ``dagrun_timeout``."""
    timeout = sdag.dagrun_timeout
    return (
        timeout is not None
        and run.start_date is not None
        and now - run.start_date > timedelta(seconds=timeout)
    )


def _time_out(run: DagRun, sdag: SerializedDag, rows: list[TIRow], writes: _Writes) -> None:
    """Fail a run past its dagrun_timeout. As in Airflow, its unfinished task instances are skipped,
    and a try a worker may be running (queued or running) is stopped there: a ``stop`` event asks
    its worker to kill it. Its report, if one still comes, changes nothing."""
    reason = f"the run passed its dagrun_timeout of {sdag.dagrun_timeout:g}s; try {{}} was stopped"
    for row in rows:
        if row.state in TASK_DISPATCHED:
            writes.stopped.append((row, row.try_number, reason.format(row.try_number)))
            row.state = TaskState.SKIPPED
        elif row.state not in TASK_FINISHED:
            writes.timed_out.append((row, row.try_number))
            row.state = TaskState.SKIPPED
    writes.finished.append((run, RunState.FAILED))
    writes.timed_out_runs.add(run.id)


def _note_wakeup(writes: _Writes, decision: RunDecision) -> None:
    when = next_wakeup(decision)
    if when is not None and (writes.next_wakeup is None or when < writes.next_wakeup):
        writes.next_wakeup = when


def _hold(decision: RunDecision, held: Iterable[str]) -> None:
    """Keep the tasks ``depends_on_past`` holds (and their mapped instances) from being scheduled."""
    held = set(held)
    if held:
        decision.schedule = [t for t in decision.schedule if t not in held]
        decision.expand = [t for t in decision.expand if t not in held]
        decision.schedule_instances = [k for k in decision.schedule_instances if k[0] not in held]


def _evaluate(
    run: DagRun, sdag: SerializedDag, rows: list[TIRow], writes: _Writes, held: Iterable[str]
) -> list[str]:
    """Apply trigger rules and retry delays; note the run's end when every task finished. Return
    the mapped tasks to expand now.

    ``held`` are the tasks that ``depends_on_past`` keeps waiting for the previous run.
    """
    by_task, instances = _group(rows)
    decision = evaluate_run(sdag.tasks, by_task, writes.now, instances)  # rows have TIView's attributes
    _hold(decision, held)
    for state, task_ids, keys in (
        (TaskState.SCHEDULED, decision.schedule, decision.schedule_instances),
        (TaskState.UPSTREAM_FAILED, decision.upstream_failed, decision.upstream_failed_instances),
        (TaskState.SKIPPED, decision.skip, decision.skip_instances),
    ):
        for task_id in task_ids:
            writes.set_state(by_task[task_id], state)
        for task_id, map_index in keys:
            writes.set_state(instances[task_id][map_index], state)
    writes.due_pokes.update(by_task[t].id for t in decision.reschedule)
    writes.due_pokes.update(instances[t][i].id for t, i in decision.reschedule_instances)
    _note_wakeup(writes, decision)
    retries = [(by_task[t], when) for t, when in decision.retry_at.items()]
    retries += [(instances[t][i], when) for (t, i), when in decision.retry_at_instances.items()]
    for row, when in retries:
        if row.next_retry_at != when:
            row.next_retry_at = when
            writes.retry_at.append((row, when))
    if decision.run_state is not None:
        writes.finished.append((run, decision.run_state))
    return decision.expand


def _expand(
    session: Session,
    run: DagRun,
    sdag: SerializedDag,
    rows: list[TIRow],
    task_ids: list[str],
    writes: _Writes,
    max_map_length: int,
) -> list[TIRow]:
    """Expand mapped tasks whose trigger rule is met (``hareflow.scheduler.expansion``): their
    instances are created and scheduled in this pass; a zero-length expansion skips the task, an
    invalid one fails it. Returns the run's rows with the placeholders replaced."""
    placeholders = {r.task_id: r for r in rows if r.task_id in task_ids and r.map_index < 0}
    sources = sorted({u for t in task_ids for u in sdag.get_task(t).expand_spec.task_ids})  # type: ignore[union-attr]
    mapped = {t.task_id for t in sdag.tasks if t.is_mapped}
    results = expansion.gather_results(session, run.id, sources, mapped)
    replaced: list[str] = []
    for task_id in task_ids:
        row = placeholders[task_id]
        plan = expansion.plan(sdag.get_task(task_id), results, max_map_length)
        if plan.error is not None:
            row.state = TaskState.FAILED
            writes.expand_failed.append((row, plan.error))
            writes.expansions["failed"] += 1
        elif plan.length == 0:
            writes.set_state(row, TaskState.SKIPPED)
            writes.expansions["empty"] += 1
        elif expansion.replace_placeholder(
            session,
            placeholder_id=row.id,
            run=run,
            task=sdag.get_task(task_id),
            length=plan.length,
            now=writes.now,
        ):
            replaced.append(task_id)
            writes.expansions["expanded"] += 1
            writes.mapped_instances += plan.length
    if not replaced:
        return rows
    writes.created += 1
    table = TaskInstance.__table__
    query = select(*_COLUMNS).where(table.c.run_pk == run.id, table.c.task_id.in_(replaced))
    new = [TIRow(*values) for values in session.connection().execute(query).all()]
    for row in new:
        writes.set_state(row, TaskState.SCHEDULED)
    gone = {placeholders[t].id for t in replaced}
    return [r for r in rows if r.id not in gone] + new


def _revise(
    session: Session,
    run: DagRun,
    sdag: SerializedDag,
    rows: list[TIRow],
    writes: _Writes,
    max_map_length: int,
) -> list[TIRow]:
    """Expand again the cleared mapped tasks whose upstream values are back
    (``expansion.revision``); return the run's rows with the instances created."""
    by_task, instances = _group(rows)
    due = [t for t in sdag.tasks if t.task_id in instances and _revisable(t, by_task, instances)]
    if not due:
        return rows
    sources = sorted({u for t in due for u in t.expand_spec.task_ids})  # type: ignore[union-attr]
    mapped = {t.task_id for t in sdag.tasks if t.is_mapped}
    results = expansion.gather_results(session, run.id, sources, mapped)
    created: list[dict[str, Any]] = []
    for task in due:
        mine = instances[task.task_id]
        waiting = [r for r in mine.values() if r.state == TaskState.NONE]
        plan = expansion.plan(task, results, max_map_length)
        if plan.error is not None:
            for row in waiting:
                row.state = TaskState.FAILED
                writes.expand_failed.append((row, plan.error))
            continue
        if plan.length == 0:
            for row in waiting:
                writes.set_state(row, TaskState.SKIPPED)
            continue
        change = expansion.revision(plan.length, {i: r.state for i, r in mine.items()})
        if not change:
            continue
        writes.expansions["revised"] += 1
        for i in change.remove:
            writes.set_state(mine[i], TaskState.REMOVED)
        restore = [mine[i] for i in change.restore]
        values = {
            r.id: {
                "state": TaskState.NONE,
                "max_tries": r.try_number + task.retries + 1,
                "end_date": None,
                "updated_at": writes.now,
            }
            for r in restore
        }
        done = cas.set_each_task_state(
            session, TaskTransition.REEXPAND, [(r.id, r.try_number, values[r.id]) for r in restore]
        )
        for row in restore:
            if row.id in done:
                row.state, row.max_tries, row.end_date = TaskState.NONE, values[row.id]["max_tries"], None
                writes.events.append(replace(task_event(row), state=TaskState.NONE))  # type: ignore[arg-type]
        created += [expansion.new_instance_row(run, task, i, writes.now) for i in change.create]
        writes.mapped_instances += len(change.create)
    if not created:
        return rows
    writes.created += len(created)
    table = TaskInstance.__table__
    for start in range(0, len(created), expansion.INSERT_CHUNK):
        session.execute(insert(table), created[start : start + expansion.INSERT_CHUNK])
    query = select(*_COLUMNS).where(
        table.c.run_pk == run.id,
        table.c.task_id.in_(sorted({c["task_id"] for c in created})),
        table.c.try_number == 0,
        table.c.state == TaskState.NONE,
    )
    known = {r.id for r in rows}
    return rows + [
        row for values in session.connection().execute(query).all() if (row := TIRow(*values)).id not in known
    ]


def _revisable(
    task: SerializedTask, by_task: dict[str, TIRow], instances: dict[str, dict[int, TIRow]]
) -> bool:
    """A mapped task cleared with the upstream tasks it maps over, which have run again and
    succeeded: every instance waits (or was removed), one of them after an earlier try."""
    spec = task.expand_spec
    if spec is None or not spec.task_ids:
        return False
    mine = instances[task.task_id].values()
    if any(r.state not in (TaskState.NONE, TaskState.REMOVED) for r in mine):
        return False
    if not any(r.state == TaskState.NONE and r.try_number > 0 for r in mine):
        return False
    for source in spec.task_ids:
        rows = list(instances[source].values()) if source in instances else []
        if source in by_task:
            rows.append(by_task[source])
        if not rows or any(r.state != TaskState.SUCCESS for r in rows):
            return False
    return True


def _choose_dispatch(
    session: Session,
    runs: list[DagRun],
    dags: dict[str, Dag],
    sdags: dict[str, SerializedDag],
    rows_by_run: dict[int, list[TIRow]],
    writes: _Writes,
) -> list[TIRow]:
    occupants = [
        Occupant(r.dag_id, r.pool, r.pool_slots, r.state)
        for rows in rows_by_run.values()
        for r in rows
        if r.state in (TaskState.QUEUED, TaskState.RUNNING)
    ]
    candidates: dict[int, TIRow] = {}
    cands: list[Candidate] = []
    for order, run in enumerate(runs):
        for r in rows_by_run[run.id]:
            # A due sensor competes for max_active_tasks and pool slots like any scheduled task:
            # waiting, it held none of them.
            if r.state != TaskState.SCHEDULED and r.id not in writes.due_pokes:
                continue
            candidates[r.id] = r
            cands.append(
                Candidate(
                    r.id,
                    r.dag_id,
                    r.priority,
                    (order, sdags[run.dag_id].task_position.get(r.task_id, 0)),
                    r.pool,
                    r.pool_slots,
                )
            )
    if not cands:
        return []
    occupants += _occupants_elsewhere(session, rows_by_run, cands)
    pools = {p.name: p.slots for p in session.scalars(select(Pool))} if _any_pool(cands) else {}
    for c in cands:
        if c.pool is not None and c.pool not in pools:
            row = candidates[c.ti_id]
            row.state = outcome_state(WorkerOutcome.FAILED, row.max_tries, row.max_tries)
            writes.failed.append(
                (row, f"pool {c.pool!r} does not exist; create it with `hareflow pools set {c.pool} SLOTS`")
            )
    chosen = select_dispatch(
        cands, occupants, max_active_tasks={d: dags[d].max_active_tasks for d in dags}, pool_slots=pools
    )
    out = []
    for c in chosen:
        row = candidates[c.ti_id]
        if row.state == TaskState.UP_FOR_RESCHEDULE:
            row.state = TaskState.QUEUED  # the same try, poking again
            writes.requeued.append(row)
        else:
            row.state = TaskState.QUEUED
            row.try_number += 1
            row.reschedules, row.first_poke_at = 0, None
            writes.queued.append(row)
        out.append(row)
    return out


def _occupants_elsewhere(
    session: Session, rows_by_run: dict[int, list[TIRow]], cands: list[Candidate]
) -> list[Occupant]:
    """Queued and running task instances of active runs this pass did not lock (another scheduler
    holds them) that share a DAG or a pool with a candidate: max_active_tasks and pool slots count
    them too. With one scheduler every active run is locked by the pass and this finds nothing."""
    dag_ids = {c.dag_id for c in cands}
    pools = {c.pool for c in cands if c.pool is not None}
    shares = TaskInstance.dag_id.in_(dag_ids)
    if pools:
        shares = shares | TaskInstance.pool.in_(pools)
    query = (
        select(TaskInstance.dag_id, TaskInstance.pool, TaskInstance.pool_slots, TaskInstance.state)
        .join(DagRun, DagRun.id == TaskInstance.run_pk)
        .where(TaskInstance.state.in_((TaskState.QUEUED, TaskState.RUNNING)), shares)
        .where(DagRun.state.in_(RUN_ACTIVE), DagRun.id.not_in(list(rows_by_run)))
    )
    return [Occupant(*row) for row in session.execute(query)]


def _any_pool(cands: Iterable[Candidate]) -> bool:
    return any(c.pool is not None for c in cands)
