"""What may stand on either side of ``>>``: tasks, task groups, task outputs, and lists of them.

Each such object answers ``dependency_endpoints(as_upstream=...)`` with the tasks it stands for on that
side of an edge: a task is itself, a task output is the task producing it, a task group is its leaf
tasks when upstream and its root tasks when downstream (as in Airflow). ``link(up, down)`` then adds
an edge from every upstream endpoint to every downstream endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from hareflow.common.dag.errors import DagDefinitionError

if TYPE_CHECKING:
    from hareflow.common.dag.task import BaseTask

ENDPOINTS = "dependency_endpoints"


def is_dependency_node(value: object) -> bool:
    """True for a task, task group or task output (anything ``>>`` accepts on its own)."""
    return callable(getattr(value, ENDPOINTS, None))


def endpoints(value: object, op: str, *, as_upstream: bool) -> list[BaseTask]:
    """The tasks ``value`` (a node or an iterable of nodes) stands for on one side of an edge."""
    if is_dependency_node(value):
        items: list[Any] = [value]
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict)):
        items = list(value)
        if not all(is_dependency_node(item) for item in items):
            raise DagDefinitionError.here(f"'{op}' needs tasks, task groups, task outputs or lists of them")
    else:
        raise DagDefinitionError.here(
            f"'{op}' needs tasks, task groups, task outputs or lists of them, not {type(value).__name__}"
        )
    tasks: list[BaseTask] = []
    for item in items:
        tasks.extend(getattr(item, ENDPOINTS)(as_upstream=as_upstream))
    return tasks


def link(upstream: object, downstream: object, op: str = ">>") -> None:
    """Make every task ``downstream`` stands for wait for every task ``upstream`` stands for."""
    ups = endpoints(upstream, op, as_upstream=True)
    downs = endpoints(downstream, op, as_upstream=False)
    for up in ups:
        for down in downs:
            up.dag.add_dependency(up, down)


class DependencyMixin:
    """``>>`` and ``<<`` for objects that are not tasks (task groups, task outputs)."""

    def dependency_endpoints(self, *, as_upstream: bool) -> list[BaseTask]:
        raise NotImplementedError

    def set_upstream(self, other: object) -> None:
        """Make ``other`` run before this."""
        link(other, self, "set_upstream")

    def set_downstream(self, other: object) -> None:
        """Make ``other`` run after this."""
        link(self, other, "set_downstream")

    def __rshift__(self, other: Any) -> Any:
        link(self, other)
        return other

    def __lshift__(self, other: Any) -> Any:
        link(other, self, "<<")
        return other

    def __rrshift__(self, other: Any) -> Any:
        # [a, b] >> self
        link(other, self)
        return self

    def __rlshift__(self, other: Any) -> Any:
        # [a, b] << self
        link(self, other, "<<")
        return self
