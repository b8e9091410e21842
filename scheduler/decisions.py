"""Pure scheduling decisions: fed with plain data, tested with tables, no session, no clock.

``evaluate_run`` walks a run's tasks in topological order and decides, for each task instance
that is waiting, whether it is scheduled now, waits, is skipped or fails upstream; and whether the
run is finished. ``select_dispatch`` picks which scheduled task instances go to the queues now,
respecting priority, ``max_active_tasks`` and pool slots.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from hareflow.common.dag.retries import retry_delay_seconds
from hareflow.common.dag.trigger_rules import evaluate_trigger_rule
from hareflow.common.states import TASK_FINISHED, TASK_OCCUPYING, RunState, TaskState


class TaskSpec(Protocol):
    task_id: str
    upstream: Sequence[str]
    trigger_rule: str
    retry_delay: float
    retry_exponential_backoff: bool
    max_retry_delay: float | None


class TIState(Protocol):
    """What the decisions read of a task instance (a TIRow, a TIView, an ORM row)."""

    state: str
    try_number: int
    end_date: datetime | None
    next_retry_at: datetime | None


@dataclass(frozen=True)
class TIView:
    state: str
    try_number: int = 0
    end_date: datetime | None = None
    next_retry_at: datetime | None = None


@dataclass
class RunDecision:
    schedule: list[str] = field(default_factory=list)
    upstream_failed: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    retry_at: dict[str, datetime] = field(default_factory=dict)  # up_for_retry -> when it may run
    run_state: RunState | None = None  # set when every task instance has finished


def retry_time(task: TaskSpec, ti: TIState, now: datetime) -> datetime:
    """When an ``up_for_retry`` try may be scheduled again."""
    if ti.next_retry_at is not None:
        return ti.next_retry_at
    delay = retry_delay_seconds(
        task.retry_delay, max(1, ti.try_number), task.retry_exponential_backoff, task.max_retry_delay
    )
    return (ti.end_date or now) + timedelta(seconds=delay)


def evaluate_run(tasks: Sequence[TaskSpec], states: Mapping[str, TIState], now: datetime) -> RunDecision:
    """Decide what happens next in one run. ``tasks`` must be in topological order."""
    decision = RunDecision()
    current = {task_id: ti.state for task_id, ti in states.items()}
    setup_ids = {t.task_id for t in tasks if getattr(t, "is_setup", False)}
    for task in tasks:
        ti = states.get(task.task_id)
        if ti is None:
            continue
        state = current[task.task_id]
        if state == TaskState.UP_FOR_RETRY:
            when = retry_time(task, ti, now)
            if when <= now:
                decision.schedule.append(task.task_id)
                current[task.task_id] = TaskState.SCHEDULED
            else:
                decision.retry_at[task.task_id] = when
            continue
        if state != TaskState.NONE:
            continue
        verdict = evaluate_trigger_rule(
            task.trigger_rule,
            [current[u] for u in task.upstream if u in current],
            [current[u] for u in task.upstream if u in current and u in setup_ids],
        )
        if verdict == "run":
            decision.schedule.append(task.task_id)
            current[task.task_id] = TaskState.SCHEDULED
        elif verdict == "upstream_failed":
            decision.upstream_failed.append(task.task_id)
            current[task.task_id] = TaskState.UPSTREAM_FAILED
        elif verdict == "skip":
            decision.skip.append(task.task_id)
            current[task.task_id] = TaskState.SKIPPED
    decision.run_state = run_outcome(tasks, current)
    return decision


def run_outcome(tasks: Sequence[TaskSpec], states: Mapping[str, str]) -> RunState | None:
    """A run is finished when every task instance is; it failed if any leaf failed (Airflow's rule:
    a cleanup leaf with ``all_done`` that succeeds after a failure makes the run succeed).

    Teardowns do not count, as in Airflow: the leaves are the tasks with nothing downstream but
    teardowns, unless a teardown is marked ``on_failure_fail_dagrun``, which then counts as a leaf."""
    if any(state not in TASK_FINISHED for state in states.values()):
        return None
    leaves = [t.task_id for t in _effective_leaves(tasks) if t.task_id in states]
    bad = (TaskState.FAILED, TaskState.UPSTREAM_FAILED)
    if any(states[leaf] in bad for leaf in leaves):
        return RunState.FAILED
    return RunState.SUCCESS


def _ignorable(task: TaskSpec) -> bool:
    return bool(getattr(task, "is_teardown", False)) and not getattr(task, "on_failure_fail_dagrun", False)


def _effective_leaves(tasks: Sequence[TaskSpec]) -> list[TaskSpec]:
    """Tasks whose downstream tasks are all ignorable teardowns, and which are not one themselves."""
    downstream: dict[str, list[TaskSpec]] = {t.task_id: [] for t in tasks}
    for t in tasks:
        for u in t.upstream:
            if u in downstream:
                downstream[u].append(t)
    leaves = [t for t in tasks if not _ignorable(t) and all(_ignorable(d) for d in downstream[t.task_id])]
    return leaves or [t for t in tasks if not downstream[t.task_id]]  # a DAG of teardowns only


@dataclass(frozen=True)
class Candidate:
    """A scheduled task instance that may be dispatched."""

    ti_id: int
    dag_id: str
    priority: int
    order: tuple[object, ...]  # tie-breaker: older runs first, then topological position
    pool: str | None
    pool_slots: int


@dataclass(frozen=True)
class Occupant:
    dag_id: str
    pool: str | None
    pool_slots: int
    state: str


def select_dispatch(
    candidates: Iterable[Candidate],
    occupants: Iterable[Occupant],
    *,
    max_active_tasks: Mapping[str, int],
    pool_slots: Mapping[str, int],
) -> list[Candidate]:
    """Pick candidates by priority (highest first) within per-DAG and per-pool limits.

    Candidates whose pool does not exist are left out here (the caller fails them with a clear
    error). A task needing more slots than its pool has would never run: it is left out too.
    """
    active: dict[str, int] = {}
    used: dict[str, int] = {}
    for o in occupants:
        if o.state in TASK_OCCUPYING:
            active[o.dag_id] = active.get(o.dag_id, 0) + 1
            if o.pool is not None:
                used[o.pool] = used.get(o.pool, 0) + o.pool_slots
    chosen = []
    for c in sorted(candidates, key=lambda c: (-c.priority, c.order)):
        if active.get(c.dag_id, 0) >= max_active_tasks.get(c.dag_id, 16):
            continue
        if c.pool is not None:
            if c.pool not in pool_slots:
                continue
            if used.get(c.pool, 0) + c.pool_slots > pool_slots[c.pool]:
                continue
            used[c.pool] = used.get(c.pool, 0) + c.pool_slots
        active[c.dag_id] = active.get(c.dag_id, 0) + 1
        chosen.append(c)
    return chosen
