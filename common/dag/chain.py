"""``chain``, ``chain_linear`` and ``cross_downstream``: many dependencies in one statement.

Elements are tasks, task groups, task outputs, or lists of those, with Airflow's semantics:
``chain(a, [b, c], d)`` fans out then in; two adjacent lists of equal length are linked pairwise
(``chain([a, b], [c, d])`` is ``a >> c`` and ``b >> d``); adjacent lists of different lengths are
an error. ``chain_linear`` links every element of one list to every element of the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hareflow.common.dag.dependencies import is_dependency_node, link
from hareflow.common.dag.errors import DagDefinitionError


def _as_list(value: Any, where: str) -> list[Any] | None:
    """``value`` as a list of nodes if it is a list (or tuple), None if it is a single node."""
    if is_dependency_node(value):
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            raise DagDefinitionError.here(f"{where} is an empty list")
        for i, item in enumerate(value):
            if not is_dependency_node(item):
                raise DagDefinitionError.here(
                    f"{where}[{i}] is a {type(item).__name__}; lists hold tasks, task groups or task outputs"
                )
        return list(value)
    raise DagDefinitionError.here(
        f"{where} is a {type(value).__name__}; pass tasks, task groups, task outputs or lists of them"
    )


def chain(*elements: Any) -> None:
    """Link each element to the next: single to single, fan in or out, equal-length lists pairwise."""
    shapes = [_as_list(e, f"chain() argument {i + 1}") for i, e in enumerate(elements)]
    for i in range(len(elements) - 1):
        up, down = shapes[i], shapes[i + 1]
        if up is not None and down is not None:
            if len(up) != len(down):
                raise DagDefinitionError.here(
                    f"chain() arguments {i + 1} and {i + 2} are lists of different lengths "
                    f"({len(up)} and {len(down)}); adjacent lists are linked pairwise, so they must be "
                    f"of equal length (use chain_linear or cross_downstream to link every pair)"
                )
            for one, other in zip(up, down, strict=True):
                link(one, other, "chain")
        else:
            link(elements[i], elements[i + 1], "chain")


def chain_linear(*elements: Any) -> None:
    """Link every task of each element to every task of the next (lists of any length)."""
    for i, element in enumerate(elements):
        _as_list(element, f"chain_linear() argument {i + 1}")
    for i in range(len(elements) - 1):
        link(elements[i], elements[i + 1], "chain_linear")


def cross_downstream(from_tasks: Sequence[Any], to_tasks: Sequence[Any]) -> None:
    """Make every element of ``to_tasks`` wait for every element of ``from_tasks``."""
    for name, value in (("from_tasks", from_tasks), ("to_tasks", to_tasks)):
        if _as_list(value, f"cross_downstream() {name}") is None:
            raise DagDefinitionError.here(
                f"cross_downstream() {name} must be a list of tasks, task groups or task outputs"
            )
    for up in from_tasks:
        link(up, list(to_tasks), "cross_downstream")
