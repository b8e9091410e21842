"""Effective task priorities under Airflow's weight rules, computed once when a DAG is serialized.

- ``absolute`` (hareflow's default, and what it always did): a task's own ``priority``.
- ``downstream`` (Airflow's default): its own plus that of every task downstream of it, so the
  tasks that unblock the most work go first.
- ``upstream``: its own plus that of every task upstream of it, so runs that are further along
  finish first.

Each related task counts once, however many paths lead to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hareflow.common.dag.dag import DAG


def _reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(edges[start])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(edges[node] - seen)
    return seen


def priority_weights(dag: DAG) -> dict[str, int]:
    """Task id -> the priority the scheduler orders it by."""
    tasks = dag.task_dict
    down = {tid: set(t.downstream_task_ids) for tid, t in tasks.items()}
    up = {tid: set(t.upstream_task_ids) for tid, t in tasks.items()}
    weights: dict[str, int] = {}
    for tid, task in tasks.items():
        rule = getattr(task, "weight_rule", "absolute")
        if rule == "downstream":
            related = _reachable(tid, down)
        elif rule == "upstream":
            related = _reachable(tid, up)
        else:
            related = set()
        weights[tid] = task.priority + sum(tasks[r].priority for r in related)
    return weights
