"""Pure scheduling decisions: fed with plain data, tested with tables, no session, no clock.

``evaluate_run`` walks a run's tasks in topological order and decides, for each task instance
that is waiting, whether it is scheduled now, waits, is skipped or fails upstream; and whether the
run is finished. ``select_dispatch`` picks which scheduled task instances go to the queues now,
respecting priority, ``max_active_tasks`` and pool slots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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
    #: mapped tasks whose trigger rule is met: expand them (their placeholder is never scheduled)
    expand: list[str] = field(default_factory=list)
    #: the same decisions for the instances of expanded mapped tasks, keyed (task id, map index)
    schedule_instances: list[tuple[str, int]] = field(default_factory=list)
    upstream_failed_instances: list[tuple[str, int]] = field(default_factory=list)
    skip_instances: list[tuple[str, int]] = field(default_factory=list)
    retry_at_instances: dict[tuple[str, int], datetime] = field(default_factory=dict)

    def decides_anything(self) -> bool:
        """Whether applying this decision would write something (retry times aside)."""
        return bool(
            self.schedule
            or self.upstream_failed
            or self.skip
            or self.expand
            or self.schedule_instances
            or self.upstream_failed_instances
            or self.skip_instances
            or self.run_state is not None
        )


def retry_time(task: TaskSpec, ti: TIState, now: datetime) -> datetime:
    """When an ``up_for_retry`` try may be scheduled again."""
    if ti.next_retry_at is not None:
        return ti.next_retry_at
    delay = retry_delay_seconds(
        task.retry_delay, max(1, ti.try_number), task.retry_exponential_backoff, task.max_retry_delay
    )
    return (ti.end_date or now) + timedelta(seconds=delay)


_VERDICT_STATE = {
    "run": TaskState.SCHEDULED,
    "upstream_failed": TaskState.UPSTREAM_FAILED,
    "skip": TaskState.SKIPPED,
}


def _decide(
    task: TaskSpec, ti: TIState, upstream: Callable[[], list[str]], now: datetime
) -> tuple[TaskState | None, datetime | None]:
    """One waiting task instance: the state it moves to now (if any), or when its retry is due."""
    if ti.state == TaskState.UP_FOR_RETRY:
        when = retry_time(task, ti, now)
        return (TaskState.SCHEDULED, None) if when <= now else (None, when)
    if ti.state != TaskState.NONE:
        return None, None
    return _VERDICT_STATE.get(evaluate_trigger_rule(task.trigger_rule, upstream())), None


def evaluate_run(
    tasks: Sequence[TaskSpec],
    states: Mapping[str, TIState],
    now: datetime,
    instances: Mapping[str, Mapping[int, TIState]] | None = None,
) -> RunDecision:
    """Decide what happens next in one run. ``tasks`` must be in topological order.

    ``states``: task id -> its task instance (a mapped task's placeholder until it is expanded);
    ``instances``: task id -> {map index: instance} for the expanded mapped tasks. A mapped task is
    the set of its instances: each instance counts in its downstream tasks' trigger rules and in the
    run's outcome. A mapped task whose placeholder's rule is met goes to ``expand``."""
    decision = RunDecision()
    instances = instances or {}
    current: dict[str, list[str]] = {task_id: [ti.state] for task_id, ti in states.items()}
    for task_id, by_index in instances.items():
        current[task_id] = [by_index[i].state for i in sorted(by_index)]
    for task in tasks:
        task_id = task.task_id
        cached: list[str] | None = None

        def upstream(task: TaskSpec = task) -> list[str]:
            nonlocal cached
            if cached is None:
                cached = [s for u in task.upstream for s in current.get(u, ())]
            return cached

        if task_id in instances:
            by_index = instances[task_id]
            for position, map_index in enumerate(sorted(by_index)):
                state, when = _decide(task, by_index[map_index], upstream, now)
                key = (task_id, map_index)
                if when is not None:
                    decision.retry_at_instances[key] = when
                if state is None:
                    continue
                current[task_id][position] = state
                if state == TaskState.SCHEDULED:
                    decision.schedule_instances.append(key)
                elif state == TaskState.UPSTREAM_FAILED:
                    decision.upstream_failed_instances.append(key)
                else:
                    decision.skip_instances.append(key)
            continue
        ti = states.get(task_id)
        if ti is None:
            continue
        state, when = _decide(task, ti, upstream, now)
        if when is not None:
            decision.retry_at[task_id] = when
        if state is None:
            continue
        current[task_id] = [state]
        if state == TaskState.SCHEDULED:
            if getattr(task, "is_mapped", False) and ti.state == TaskState.NONE:
                decision.expand.append(task_id)
            else:
                decision.schedule.append(task_id)
        elif state == TaskState.UPSTREAM_FAILED:
            decision.upstream_failed.append(task_id)
        else:
            decision.skip.append(task_id)
    decision.run_state = run_outcome(tasks, current)
    return decision


def run_outcome(tasks: Sequence[TaskSpec], states: Mapping[str, str | Sequence[str]]) -> RunState | None:
    """A run is finished when every task instance is; it failed if any leaf failed (Airflow's rule:
    a cleanup leaf with ``all_done`` that succeeds after a failure makes the run succeed). A task's
    state is one state, or the states of a mapped task's instances (a mapped leaf failed if one of
    its instances did)."""
    flat = {tid: [s] if isinstance(s, str) else list(s) for tid, s in states.items()}
    if any(state not in TASK_FINISHED for group in flat.values() for state in group):
        return None
    has_downstream = {u for task in tasks for u in task.upstream}
    leaves = [t.task_id for t in tasks if t.task_id not in has_downstream and t.task_id in flat]
    bad = (TaskState.FAILED, TaskState.UPSTREAM_FAILED)
    if any(state in bad for leaf in leaves for state in flat[leaf]):
        return RunState.FAILED
    return RunState.SUCCESS


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
