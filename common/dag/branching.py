"""Branching and short-circuiting: tasks whose return value decides which downstream tasks run.

A ``BranchTask`` returns a task id, a list of them, or None: the chosen direct downstream tasks
(and everything downstream of them) run, every other direct downstream task is skipped. A
task-group id chooses the group's root tasks. A
``ShortCircuitTask`` returns a value: truthy, everything runs; falsy, its downstream tasks are
skipped, all of them transitively (``ignore_downstream_trigger_rules=True``, the default, as in
Airflow) or only the direct ones, leaving the rest to their trigger rules.

The decision is made where the task runs (a worker has the DAG but no database): the worker turns
the return value into the ids to skip with :func:`downstream_skips` and reports them with the
task's success; the results consumer writes the skips in the same transaction. Teardown tasks are
never skipped this way, as in Airflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hareflow.common.dag.dag import DAG
from hareflow.common.dag.errors import DagDefinitionError
from hareflow.common.dag.exceptions import BranchError
from hareflow.common.dag.python_task import PythonTask

if TYPE_CHECKING:
    from hareflow.common.dag.task import BaseTask


@dataclass(frozen=True)
class SkipDecision:
    """The downstream task ids a finished task skips, and the reason recorded on each."""

    task_ids: tuple[str, ...]
    reason: str


class BranchTask(PythonTask):
    """Runs a callable that returns the id(s) of the direct downstream task(s) to follow.

    Airflow's ``BranchPythonOperator``: ``BranchTask("pick", python_callable=f)`` or
    ``BranchTask("pick", f)``.
    """

    def decide(self, value: Any) -> SkipDecision:
        chosen = _chosen_ids(self, value)
        follow = set(chosen)
        for task_id in chosen:
            follow |= _descendants(self.dag, task_id)
        skip = sorted(
            t for t in self.downstream_task_ids if t not in follow and not _is_teardown(self.dag, t)
        )
        names = sorted({value} if isinstance(value, str) else set(value or ()))
        followed = ", ".join(repr(t) for t in names) or "nothing"
        return SkipDecision(tuple(skip), f"skipped by branch '{self.task_id}' (it followed {followed})")


class ShortCircuitTask(PythonTask):
    """Runs a callable; a falsy return value skips the tasks downstream of it.

    Airflow's ``ShortCircuitOperator``, with its ``ignore_downstream_trigger_rules`` (default True:
    skip every downstream task; False: skip the direct ones and let trigger rules decide the rest).
    """

    def __init__(
        self,
        task_id: str,
        python_callable: Callable[..., Any],
        *,
        ignore_downstream_trigger_rules: bool = True,
        **arguments: Any,
    ) -> None:
        """``arguments`` are ``PythonTask``'s (``op_args``, ``op_kwargs``, ``dag``, settings)."""
        if not isinstance(ignore_downstream_trigger_rules, bool):
            raise DagDefinitionError.here(
                f"ignore_downstream_trigger_rules of task '{task_id}' must be True or False, "
                f"not {ignore_downstream_trigger_rules!r}"
            )
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules
        super().__init__(task_id, python_callable, **arguments)

    def decide(self, value: Any) -> SkipDecision:
        if value:
            return SkipDecision((), "")
        if self.ignore_downstream_trigger_rules:
            targets = _descendants(self.dag, self.task_id)
        else:
            targets = set(self.downstream_task_ids)
        skip = sorted(t for t in targets if not _is_teardown(self.dag, t))
        return SkipDecision(tuple(skip), f"skipped by short-circuit '{self.task_id}' (it returned {value!r})")


def downstream_skips(task: BaseTask, value: Any) -> SkipDecision | None:
    """The skips ``task``'s return ``value`` decides, or None for a task that decides none.

    Raises :class:`BranchError` when a branch names something that is not a direct downstream task.
    """
    decide = getattr(task, "decide", None)
    if not isinstance(task, BranchTask | ShortCircuitTask) or decide is None:
        return None
    decision: SkipDecision = decide(value)
    return decision if decision.task_ids else None


def _chosen_ids(task: BranchTask, value: Any) -> list[str]:
    """The direct downstream task ids ``value`` chooses. A task-group id stands for the group's
    roots (its tasks with no upstream inside it), as in Airflow; only those downstream of the
    branch matter, and a group none of whose roots is is not a valid choice."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    direct = task.downstream_task_ids
    groups = {
        group_id: roots
        for group_id, group in task.dag.task_groups.items()
        if (roots := {r.task_id for r in group.roots} & direct)
    }
    valid = ", ".join(sorted(direct)) or "none: it has no downstream tasks"
    if groups:
        valid += "; task groups: " + ", ".join(sorted(groups))
    if not isinstance(items, list | tuple | set | frozenset) or not all(isinstance(i, str) for i in items):
        raise BranchError(
            f"branch '{task.task_id}' returned {value!r}; return a task id, a list of task ids or "
            f"None (its direct downstream tasks: {valid})"
        )
    unknown = sorted(i for i in set(items) if i not in direct and i not in groups)
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        groups_too = " or a task group starting among them" if groups else ""
        raise BranchError(
            f"branch '{task.task_id}' chose {names}, which is not one of its direct downstream "
            f"tasks{groups_too}; the valid ones are: {valid}"
        )
    chosen: set[str] = set()
    for item in items:
        chosen |= groups[item] if item not in direct else {item}
    return sorted(chosen)


def _descendants(dag: DAG, task_id: str) -> set[str]:
    seen: set[str] = set()
    todo = list(dag.get_task(task_id).downstream_task_ids)
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(dag.get_task(current).downstream_task_ids)
    return seen


def _is_teardown(dag: DAG, task_id: str) -> bool:
    return bool(getattr(dag.get_task(task_id), "is_teardown", False))
