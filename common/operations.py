"""Operator actions shared by the CLI and the web UI: pause, clear, mark, pools, lookups.

Each function takes the caller's session; the caller owns the transaction (``with session.begin():``)
and, after committing, wakes the scheduler. Every state-changing action writes an ``audit_log`` row
naming who did what. User mistakes raise :class:`OperationError` (a ``ValueError``) with a message
that says what is wrong and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hareflow.common.audit import audit
from hareflow.common.dag.schedule import DagRunInfo, next_dagrun_info
from hareflow.common.dag.serialize import SerializedDag
from hareflow.common.db import Dag, DagRun, Pool, TaskInstance, cas
from hareflow.common.runs import last_scheduled_logical_date, schedule_args
from hareflow.common.states import (
    RUN_FINISHED,
    TASK_CLEARABLE,
    TASK_DISPATCHED,
    RunState,
    RunTransition,
    TaskState,
    TaskTransition,
)
from hareflow.common.tries import keep_tries
from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value


class OperationError(ValueError):
    """A user mistake (unknown DAG, run or task, bad pattern...): the message says how to fix it."""


class AmbiguousRunError(OperationError):
    """A run id exists in several DAGs and no DAG was named."""


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


# -- lookups ----------------------------------------------------------------------------------------


def get_dag(session: Session, dag_id: str, *, active_only: bool = True) -> Dag:
    """The DAG row ``dag_id``; raise OperationError if there is none (or it left its file)."""
    dag = session.get(Dag, dag_id)
    if dag is None or (active_only and not dag.is_active):
        raise OperationError(f"no DAG named {dag_id!r} (see `hareflow dags list`)")
    return dag


def serialized_dag(dag: Dag) -> SerializedDag:
    return SerializedDag.from_dict(dag.serialized)


def find_run(session: Session, run_id: str, dag_id: str | None = None) -> DagRun:
    """The run ``run_id`` (of ``dag_id`` if given). Run ids are unique per DAG only, so an id found
    in several DAGs without ``dag_id`` raises AmbiguousRunError naming them."""
    query = select(DagRun).where(DagRun.run_id == run_id)
    if dag_id is not None:
        query = query.where(DagRun.dag_id == dag_id)
    runs = list(session.scalars(query.order_by(DagRun.dag_id)))
    if not runs:
        where = f" of DAG {dag_id!r}" if dag_id else ""
        raise OperationError(f"no run {run_id!r}{where} (see `hareflow runs list`)")
    if len(runs) > 1:
        dags = ", ".join(r.dag_id for r in runs)
        raise AmbiguousRunError(f"run id {run_id!r} exists in several DAGs ({dags}): pass --dag DAG_ID")
    return runs[0]


def find_task_instance(
    session: Session, run: DagRun, task_id: str, map_index: int | None = None
) -> TaskInstance:
    """The task instance of ``task_id`` in ``run``: its one instance, or with ``map_index`` one
    instance of a mapped task. A mapped task asked for without a map index raises OperationError
    saying which map indexes it has."""
    ti = session.scalar(
        select(TaskInstance).where(
            TaskInstance.run_pk == run.id,
            TaskInstance.task_id == task_id,
            TaskInstance.map_index == (-1 if map_index is None else map_index),
        )
    )
    if ti is None:
        indexes = session.scalars(
            select(TaskInstance.map_index)
            .where(TaskInstance.run_pk == run.id, TaskInstance.task_id == task_id)
            .order_by(TaskInstance.map_index)
        ).all()
        if indexes:
            where = f"task {task_id!r} of run {run.run_id!r}"
            span = f"{indexes[0]}..{indexes[-1]}" if indexes[0] >= 0 else "-1 (not mapped)"
            if map_index is None:
                raise OperationError(
                    f"{where} is mapped into {len(indexes)} instances: pass a map index ({span})"
                )
            raise OperationError(f"{where} has no map index {map_index}; its map indexes: {span}")
        known = session.scalars(
            select(TaskInstance.task_id).where(TaskInstance.run_pk == run.id).order_by(TaskInstance.task_id)
        ).all()
        hint = f"; its tasks: {', '.join(known)}" if known else " (it has no task instances yet)"
        raise OperationError(f"run {run.run_id!r} of DAG {run.dag_id!r} has no task {task_id!r}{hint}")
    return ti


# -- pause ------------------------------------------------------------------------------------------


def set_paused(
    session: Session, dag_id: str, paused: bool, *, username: str | None = None, now: datetime | None = None
) -> bool:
    """Pause or unpause a DAG; return False when it already was in that state (no audit row then).

    A paused DAG gets no new scheduled runs and its running runs dispatch no new tasks; tasks
    already queued or running finish.
    """
    dag = get_dag(session, dag_id)
    if dag.is_paused == paused:
        return False
    dag.is_paused = paused
    audit(session, "pause" if paused else "unpause", username=username, dag_id=dag_id, now=now)
    return True


# -- next runs --------------------------------------------------------------------------------------


def next_runs(session: Session, dag: Dag, n: int, *, now: datetime | None = None) -> list[DagRunInfo]:
    """The next ``n`` runs the scheduler would create for ``dag`` (fewer if its schedule ends)."""
    args = schedule_args(dag)
    infos: list[DagRunInfo] = []
    last = last_scheduled_logical_date(session, dag.dag_id)
    current = _now(now)
    while len(infos) < n:
        info = next_dagrun_info(**args, last_logical_date=last, now=current)
        if info is None or (last is not None and info.logical_date <= last):
            break
        infos.append(info)
        last = info.logical_date
    return infos


# -- clear ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRef:
    dag_id: str
    run_id: str
    task_id: str
    state: str
    try_number: int
    map_index: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "state": self.state,
            "try_number": self.try_number,
        }


@dataclass
class ClearResult:
    """What a clear did (or, with ``dry_run``, would do)."""

    cleared: list[TaskRef] = field(default_factory=list)
    #: Queued or running task instances that matched: left alone, a worker may hold them.
    skipped: list[TaskRef] = field(default_factory=list)
    #: Finished runs put back to ``queued`` so the scheduler runs the cleared tasks.
    runs_requeued: list[str] = field(default_factory=list)
    #: Every run with a cleared task instance (the ones to wake the scheduler for).
    runs_touched: list[str] = field(default_factory=list)


def select_task_ids(
    sdag: SerializedDag,
    pattern: str | None,
    *,
    upstream: bool = False,
    downstream: bool = False,
    setups_and_teardowns: bool = True,
) -> set[str]:
    """Task ids matching ``pattern`` (``re.search``; every task when None), plus, if asked, all
    their upstream and/or downstream tasks (transitively), plus (unless told not to) the setups
    and teardowns that go with them (:func:`setup_teardown_scope`)."""
    if pattern is None:
        matched = set(sdag.task_ids)
    else:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise OperationError(f"--task {pattern!r} is not a valid regular expression: {exc}") from None
        matched = {t for t in sdag.task_ids if regex.search(t)}
        if not matched:
            raise OperationError(
                f"no task of DAG {sdag.dag_id!r} matches {pattern!r}; its tasks: {', '.join(sdag.task_ids)}"
            )
    selected = set(matched)
    if upstream:
        selected |= _closure(matched, sdag.upstream_map())
    if downstream:
        selected |= _closure(matched, sdag.downstream_map())
    if setups_and_teardowns:
        selected |= setup_teardown_scope(sdag, matched, upstream=upstream, downstream=downstream)
    return selected


def setup_teardown_scope(
    sdag: SerializedDag, task_ids: Iterable[str], *, upstream: bool = False, downstream: bool = False
) -> set[str]:
    """The setups and teardowns clearing ``task_ids`` clears with them, as Airflow's clear does.

    For a work task: the setups upstream of it that are *relevant* (a setup with no teardown, or
    one of whose teardowns is downstream of the task), and their teardowns, so the resource is
    created again before the work and removed after it. With ``upstream``: every setup upstream
    and its teardowns. A setup cleared (without ``downstream``) takes its teardowns along.
    """
    tasks = sdag.task_dict
    ups, downs = sdag.upstream_map(), sdag.downstream_map()

    def teardowns_of(setup: str, but: str) -> set[str]:
        return {t for t in downs.get(setup, ()) if tasks[t].is_teardown and t != but}

    scope: set[str] = set()
    for task_id in task_ids:
        above = _closure([task_id], ups)
        if upstream:
            for setup in (t for t in above if tasks[t].is_setup):
                scope |= teardowns_of(setup, task_id)
        elif not tasks[task_id].is_setup:
            below = {t for t in _closure([task_id], downs) if tasks[t].is_teardown}
            for setup in (t for t in above if tasks[t].is_setup):
                its = teardowns_of(setup, "")
                if not its or its & below:
                    scope |= {setup} | (its - {task_id})
        if tasks[task_id].is_setup and not downstream:
            scope |= teardowns_of(task_id, "")
    return scope


def _closure(start: Iterable[str], edges: Mapping[str, Iterable[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


CLEARABLE = TASK_CLEARABLE
FAILED_STATES = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED})


def clear_task_instances(
    session: Session,
    dag_id: str,
    *,
    run_id: str | None = None,
    task_regex: str | None = None,
    upstream: bool = False,
    downstream: bool = False,
    only_failed: bool = False,
    map_index: int | None = None,
    dry_run: bool = False,
    username: str | None = None,
    now: datetime | None = None,
) -> ClearResult:
    """Reset finished (or up_for_retry) task instances to ``none`` so the scheduler runs them again.

    Scope: one run (``run_id``) or every run of the DAG; tasks matching ``task_regex`` plus their
    upstream/downstream if asked, and their setups and teardowns (``setup_teardown_scope``); with
    ``only_failed``, only failed and upstream_failed ones; with ``map_index``, only that instance
    of each matched (mapped) task, their upstream and downstream tasks whole. A mapped task's
    instances are cleared one by one and keep their map indexes: the expansion is not redone.
    Each cleared instance gets ``max_tries = try_number + retries + 1`` so its retries are
    available again; a finished run goes back to ``queued``. Queued and running instances are left
    alone (a worker may hold them) and reported in ``skipped``. One audit row per touched run.

    The runs are locked first (see ``_locked``), so a clear and a scheduler finishing the same run
    never interleave; every write is a compare-and-set (``hareflow.common.db.cas``).
    """
    now = _now(now)
    dag = get_dag(session, dag_id)
    sdag = serialized_dag(dag)
    task_ids = select_task_ids(sdag, task_regex, upstream=upstream, downstream=downstream)
    runs_query = select(DagRun).where(DagRun.dag_id == dag_id)
    if run_id is not None:
        runs_query = runs_query.where(DagRun.run_id == run_id)
    runs = {r.id: r for r in session.scalars(_locked(session, runs_query.order_by(DagRun.id)))}
    if run_id is not None and not runs:
        raise OperationError(f"DAG {dag_id!r} has no run {run_id!r} (see `hareflow runs list {dag_id}`)")
    result = ClearResult()
    if not runs:
        return result
    query = select(TaskInstance).where(
        TaskInstance.run_pk.in_(list(runs)), TaskInstance.task_id.in_(sorted(task_ids))
    )
    if map_index is not None:  # the one instance of the matched tasks; their upstream/downstream whole
        matched = select_task_ids(sdag, task_regex, setups_and_teardowns=False)
        query = query.where(
            TaskInstance.task_id.not_in(sorted(matched)) | (TaskInstance.map_index == map_index)
        )
    tis = session.scalars(
        query.order_by(TaskInstance.run_pk, TaskInstance.id).execution_options(populate_existing=True)
    ).all()
    wanted: list[tuple[TaskInstance, TaskRef]] = []
    for ti in tis:
        ref = TaskRef(ti.dag_id, ti.run_id, ti.task_id, ti.state, ti.try_number, ti.map_index)
        if only_failed and ti.state not in FAILED_STATES:
            continue
        if ti.state in TASK_DISPATCHED:
            result.skipped.append(ref)
            continue
        if ti.state not in CLEARABLE:
            continue  # none / scheduled: it will run anyway
        wanted.append((ti, ref))
    if not dry_run:
        values = {}
        for ti, _ in wanted:
            task = sdag.task_dict.get(ti.task_id)
            values[ti.id] = _cleared_values(ti, task.retries if task else 0, now)
        rows = [(ti.id, ti.try_number, values[ti.id]) for ti, _ in wanted]
        keep_tries(session, [(ti.id, ti.try_number) for ti, _ in wanted])  # before its end is blanked
        done = cas.set_each_task_state(session, TaskTransition.CLEAR, rows)
        wanted = [(ti, ref) for ti, ref in wanted if ti.id in done]
        for ti, _ in wanted:
            for name, value in values[ti.id].items():
                set_committed_value(ti, name, value)
    cleared_by_run: dict[int, list[str]] = {}
    for ti, ref in wanted:
        result.cleared.append(ref)
        cleared_by_run.setdefault(ti.run_pk, []).append(
            ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        )
    for run_pk, cleared in cleared_by_run.items():
        run = runs[run_pk]
        result.runs_touched.append(run.run_id)
        if run.state in RUN_FINISHED:
            requeue = {"state": RunState.QUEUED, "end_date": None}
            if dry_run or cas.set_run_state(session, run, RunTransition.REQUEUE, **requeue):
                result.runs_requeued.append(run.run_id)
        if not dry_run:
            audit(
                session,
                "clear",
                username=username,
                dag_id=dag_id,
                run_id=run.run_id,
                details={"task_ids": cleared, "only_failed": only_failed},
                now=now,
            )
    if not dry_run:
        session.flush()
    return result


def _locked(session: Session, query: Select[tuple[DagRun]]) -> Select[tuple[DagRun]]:
    """``query`` reading its runs as they are now and locking them until the caller commits
    (PostgreSQL, MariaDB: ``FOR UPDATE``; SQLite: the transaction's ``BEGIN IMMEDIATE`` already
    holds the database's write lock). A scheduler deciding a run's end holds the same lock, so a
    clear or a mark waits for it and then sees the run finished, or the scheduler skips the run
    until the clear or mark is committed."""
    query = query.execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "sqlite":
        return query
    return query.with_for_update()


def _cleared_values(ti: TaskInstance, retries: int, now: datetime) -> dict[str, Any]:
    """A cleared task instance: waiting again, with its retries available again."""
    return {
        "state": TaskState.NONE,
        "max_tries": ti.try_number + retries + 1,
        "next_retry_at": None,
        "end_date": None,
        "duration": None,
        "error": None,
        "updated_at": now,
    }


# -- mark success / failed --------------------------------------------------------------------------


def mark_task_instance(
    session: Session,
    dag_id: str,
    run_id: str,
    task_id: str,
    state: str,
    *,
    map_index: int | None = None,
    username: str | None = None,
    now: datetime | None = None,
) -> TaskInstance:
    """Set one task instance to ``success`` or ``failed`` by hand.

    A report a worker sends later for the same try changes nothing (the state machine accepts
    reports only while a try is queued or running). A finished run goes back to ``queued`` so the
    scheduler re-evaluates its downstream tasks and its outcome.
    """
    if state not in (TaskState.SUCCESS, TaskState.FAILED):
        raise OperationError(f"a task instance can be marked success or failed, not {state!r}")
    now = _now(now)
    run = find_run(session, run_id, dag_id)
    session.scalars(_locked(session, select(DagRun).where(DagRun.id == run.id))).one()
    ti = find_task_instance(session, run, task_id, map_index)
    session.refresh(ti)
    previous = ti.state
    values = {"state": state, "end_date": now, "next_retry_at": None, "updated_at": now}
    if not cas.set_task_states(session, TaskTransition.MARK, [(ti.id, ti.try_number)], values):
        raise OperationError(
            f"task {task_id!r} of run {run_id!r} changed while it was being marked; look at it again"
        )
    for name, value in values.items():
        set_committed_value(ti, name, value)
    if run.state in RUN_FINISHED:
        cas.set_run_state(session, run, RunTransition.REQUEUE, state=RunState.QUEUED, end_date=None)
    audit(
        session,
        f"mark_{state}",
        username=username,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        details={"previous_state": previous, **({} if ti.map_index < 0 else {"map_index": ti.map_index})},
        now=now,
    )
    session.flush()
    return ti


# -- pools ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolInfo:
    name: str
    slots: int
    used: int  # slots held by queued and running task instances
    description: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "slots": self.slots, "used": self.used, "description": self.description}


def list_pools(session: Session) -> list[PoolInfo]:
    used = dict(
        session.execute(
            select(TaskInstance.pool, func.sum(TaskInstance.pool_slots))
            .where(TaskInstance.pool.is_not(None), TaskInstance.state.in_(TASK_DISPATCHED))
            .group_by(TaskInstance.pool)
        ).all()
    )
    return [
        PoolInfo(p.name, p.slots, int(used.get(p.name) or 0), p.description)
        for p in session.scalars(select(Pool).order_by(Pool.name))
    ]


_POOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def set_pool(
    session: Session,
    name: str,
    slots: int,
    *,
    description: str | None = None,
    username: str | None = None,
    now: datetime | None = None,
) -> tuple[Pool, bool]:
    """Create pool ``name`` or change its slots (and description if given); return (pool, created)."""
    if not _POOL_NAME.match(name):
        raise OperationError(f"pool name {name!r}: use 1-100 letters, digits, '_', '.' or '-'")
    if slots < 0:
        raise OperationError(f"a pool needs 0 or more slots, not {slots}")
    pool = session.get(Pool, name)
    created = pool is None
    if pool is None:
        pool = Pool(name=name, slots=slots, description=description)
        session.add(pool)
    else:
        pool.slots = slots
        if description is not None:
            pool.description = description
    audit(
        session,
        "pool_set",
        username=username,
        details={"pool": name, "slots": slots, "description": description, "created": created},
        now=now,
    )
    session.flush()
    return pool, created


def delete_pool(
    session: Session, name: str, *, username: str | None = None, now: datetime | None = None
) -> None:
    """Delete pool ``name``. Tasks that name it fail when next scheduled, saying how to recreate it."""
    if session.get(Pool, name) is None:
        raise OperationError(f"no pool named {name!r} (see `hareflow pools list`)")
    session.execute(delete(Pool).where(Pool.name == name))
    audit(session, "pool_delete", username=username, details={"pool": name}, now=now)
