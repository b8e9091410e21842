"""Pure scheduling decisions: fed with plain data, tested with tables, no session, no clock.

``evaluate_run`` walks a run's tasks in topological order and decides, for each task instance
that is waiting, whether it is scheduled now, waits, is skipped or fails upstream; and whether the
run is finished. ``select_dispatch`` picks which scheduled task instances go to the queues now,
respecting priority, ``max_active_tasks`` and pool slots.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from hareflow.common.dag.retries import retry_delay_seconds
from hareflow.common.dag.trigger_rules import TriggerDecision, evaluate_trigger_rule
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


def next_wakeup(decision: RunDecision) -> datetime | None:
    """The earliest retry or poke time a run waits for (None: it waits for nothing timed)."""
    times = [*decision.retry_at.values(), *decision.retry_at_instances.values()]
    return min(times) if times else None


@dataclass
class RunDecision:
    schedule: list[str] = field(default_factory=list)
    upstream_failed: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    #: up_for_retry -> when it may run; up_for_reschedule -> when the sensor pokes again
    retry_at: dict[str, datetime] = field(default_factory=dict)
    #: up_for_reschedule sensors whose next poke is due: dispatched again, same try
    reschedule: list[str] = field(default_factory=list)
    reschedule_instances: list[tuple[str, int]] = field(default_factory=list)
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
            or self.reschedule
            or self.reschedule_instances
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
    "reschedule": TaskState.UP_FOR_RESCHEDULE,  # stays so until the dispatch takes it
}


def _upstream_states(task: TaskSpec, current: Mapping[str, str], multi: Mapping[str, list[str]]) -> list[str]:
    """The states the task's trigger rule counts: one per upstream instance (all of a mapped one's)."""
    if not multi:
        return [current[u] for u in task.upstream if u in current]
    out: list[str] = []
    for u in task.upstream:
        if u in multi:
            out.extend(multi[u])
        elif u in current:
            out.append(current[u])
    return out


def _next_step(
    task: TaskSpec, ti: TIState, now: datetime, upstream: Callable[[], tuple[list[str], list[str]]]
) -> TriggerDecision | Literal["reschedule"] | datetime | None:
    """What one task instance does next: "run", "upstream_failed" or "skip", "reschedule" (a
    sensor's next poke is due), a retry or poke time not yet reached, or None (it waits, or is past
    deciding). ``upstream`` gives the states its trigger rule
    counts and those of its setup tasks; it is called only for an instance that is still ``none``."""
    if ti.state == TaskState.UP_FOR_RETRY:
        when = retry_time(task, ti, now)
        return "run" if when <= now else when
    if ti.state == TaskState.UP_FOR_RESCHEDULE:
        when = ti.next_retry_at or now  # the results consumer always sets it
        return "reschedule" if when <= now else when
    if ti.state != TaskState.NONE:
        return None
    verdict = evaluate_trigger_rule(task.trigger_rule, *upstream())
    return None if verdict == "wait" else verdict


def _decide_instances(
    task: TaskSpec,
    by_index: Mapping[int, TIState],
    upstream: Callable[[], tuple[list[str], list[str]]],
    states: list[str],
    now: datetime,
    decision: RunDecision,
) -> None:
    """The instances of an expanded mapped task: each waits, retries and follows its rule alone;
    ``states`` (the instances' states in map-index order) follows the decisions."""
    lists = {
        "run": decision.schedule_instances,
        "upstream_failed": decision.upstream_failed_instances,
        "skip": decision.skip_instances,
        "reschedule": decision.reschedule_instances,
    }
    counted = functools.cache(upstream)  # the same for every instance
    for position, map_index in enumerate(sorted(by_index)):
        key = (task.task_id, map_index)
        step = _next_step(task, by_index[map_index], now, counted)
        if isinstance(step, datetime):
            decision.retry_at_instances[key] = step
        elif step is not None:
            lists[step].append(key)
            states[position] = _VERDICT_STATE[step]


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
    current = {task_id: ti.state for task_id, ti in states.items()}
    multi: dict[str, list[str]] = {}
    for task_id, by_index in (instances or {}).items():
        multi[task_id] = [by_index[i].state for i in sorted(by_index)]
    setup_ids = {t.task_id for t in tasks if getattr(t, "is_setup", False)}
    for task in tasks:
        task_id = task.task_id

        def upstream(task: TaskSpec = task) -> tuple[list[str], list[str]]:
            setups = [current[u] for u in task.upstream if u in current and u in setup_ids]
            return _upstream_states(task, current, multi), setups

        if task_id in multi:
            _decide_instances(task, instances[task_id], upstream, multi[task_id], now, decision)  # type: ignore[index]
            continue
        ti = states.get(task_id)
        if ti is None:
            continue
        step = _next_step(task, ti, now, upstream)
        if isinstance(step, datetime):
            decision.retry_at[task_id] = step
            continue
        if step is None:
            continue
        if step == "run":
            expands = ti.state == TaskState.NONE and getattr(task, "is_mapped", False)
            (decision.expand if expands else decision.schedule).append(task_id)
        elif step == "reschedule":
            decision.reschedule.append(task_id)
        elif step == "upstream_failed":
            decision.upstream_failed.append(task_id)
        else:
            decision.skip.append(task_id)
        current[task_id] = _VERDICT_STATE[step]
    decision.run_state = _outcome(tasks, current, multi)
    return decision


def run_outcome(tasks: Sequence[TaskSpec], states: Mapping[str, str | Sequence[str]]) -> RunState | None:
    """A run is finished when every task instance is; it failed if any leaf failed (Airflow's rule:
    a cleanup leaf with ``all_done`` that succeeds after a failure makes the run succeed). A task's
    state is one state, or the states of a mapped task's instances (a mapped leaf failed if one of
    its instances did).

    Teardowns do not count, as in Airflow: the leaves are the tasks with nothing downstream but
    teardowns, unless a teardown is marked ``on_failure_fail_dagrun``, which then counts as a leaf."""
    single = {t: s for t, s in states.items() if isinstance(s, str)}
    multi = {t: list(s) for t, s in states.items() if not isinstance(s, str)}
    return _outcome(tasks, single, multi)


def _outcome(
    tasks: Sequence[TaskSpec], current: Mapping[str, str], multi: Mapping[str, list[str]]
) -> RunState | None:
    if any(state not in TASK_FINISHED for state in current.values()):
        return None
    if any(state not in TASK_FINISHED for group in multi.values() for state in group):
        return None
    bad = (TaskState.FAILED, TaskState.UPSTREAM_FAILED)
    for task in _effective_leaves(tasks):
        leaf = task.task_id
        if leaf in multi:
            if any(state in bad for state in multi[leaf]):
                return RunState.FAILED
        elif current.get(leaf) in bad:
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
