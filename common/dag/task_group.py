"""Task groups: named boxes of tasks, for ids, shared settings, dependencies and the UI.

``with TaskGroup("extract"):`` prefixes the ids of the tasks created inside (``extract.fetch``) unless
``prefix_group_id=False``; groups nest (``outer.inner.t``). A group's ``default_args`` are merged over
its parent group's and the DAG's. In ``>>`` a group stands for its leaf tasks when upstream and its
root tasks when downstream, as in Airflow. Group ids may not contain '.', so a task's id always
reads as its group path followed by its own name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hareflow.common.dag.dag import DAG, current_dag
from hareflow.common.dag.dependencies import DependencyMixin
from hareflow.common.dag.errors import DagDefinitionError, user_location
from hareflow.common.dag.settings import check_id, normalize_settings

if TYPE_CHECKING:
    from hareflow.common.dag.task import BaseTask

GROUP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,200}$")

_current_groups: ContextVar[tuple[TaskGroup, ...]] = ContextVar("hareflow_current_groups", default=())


def current_group(dag: DAG | None = None) -> TaskGroup | None:
    """The innermost active ``with TaskGroup(...)`` block (of ``dag``, when given), if any."""
    stack = _current_groups.get()
    if not stack or (dag is not None and stack[-1].dag is not dag):
        return None
    return stack[-1]


def active_dag() -> DAG | None:
    """The DAG a task created now belongs to: the innermost group's, else the innermost DAG block's."""
    stack = _current_groups.get()
    return stack[-1].dag if stack else current_dag()


def task_groups_of(dag: DAG) -> dict[str, TaskGroup]:
    """The DAG's groups by id, in creation order (parents before their children)."""
    return dag.task_groups


def enter_group(dag: DAG, label: str) -> tuple[TaskGroup | None, str]:
    """The group a task created now joins, and its full id (``label`` prefixed by the group)."""
    group = current_group(dag)
    task_id = group.child_id(label) if group is not None else label
    if task_id != label:
        check_id(task_id, "task_id")
    if task_id in task_groups_of(dag):
        raise DagDefinitionError.here(f"task id '{task_id}' is already a task group id in DAG '{dag.dag_id}'")
    return group, task_id


def unique_label(dag: DAG, base: str, *, groups: bool = False) -> str:
    """``base`` if its prefixed id is free in ``dag``, else ``base__1``, ``base__2``, ...

    Repeated ``@task`` (or ``@task_group``, with ``groups=True``) calls get numbered ids this way."""
    parent = current_group(dag)
    taken = task_groups_of(dag) if groups else dag.task_dict

    def full(label: str) -> str:
        return parent.child_id(label) if parent is not None else label

    if full(base) not in taken:
        return base
    n = 1
    while full(f"{base}__{n}") in taken:
        n += 1
    return f"{base}__{n}"


class TaskGroup(DependencyMixin):
    """A named group of tasks; use it as a context manager so tasks created inside join it."""

    _hareflow_authoring_object = True

    def __init__(
        self,
        group_id: str,
        *,
        prefix_group_id: bool = True,
        default_args: Mapping[str, Any] | None = None,
        tooltip: str = "",
        dag: DAG | None = None,
        parent_group: TaskGroup | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise DagDefinitionError.here(
                f"unknown TaskGroup argument {', '.join(repr(n) for n in sorted(unknown))} for group "
                f"{group_id!r}; valid: default_args, dag, group_id, parent_group, prefix_group_id, tooltip"
            )
        if not isinstance(group_id, str) or not GROUP_ID_PATTERN.match(group_id):
            raise DagDefinitionError.here(
                f"invalid group_id {group_id!r}: use 1-200 characters among letters, digits, '_' and '-'"
            )
        if parent_group is not None and not isinstance(parent_group, TaskGroup):
            raise DagDefinitionError.here(f"parent_group of task group '{group_id}' must be a TaskGroup")
        dag = dag if dag is not None else (parent_group.dag if parent_group else active_dag())
        if dag is None:
            raise DagDefinitionError.here(
                f"task group '{group_id}' was created outside a DAG: "
                f"create it inside 'with DAG(...):' or pass dag="
            )
        if not isinstance(dag, DAG):
            raise DagDefinitionError.here(
                f"dag= of task group '{group_id}' must be a DAG, not {type(dag).__name__}"
            )
        parent = parent_group if parent_group is not None else current_group(dag)
        if parent is not None and parent.dag is not dag:
            raise DagDefinitionError.here(
                f"task group '{group_id}' and its parent group are in different DAGs"
            )
        for name, flag in (("prefix_group_id", prefix_group_id),):
            if not isinstance(flag, bool):
                raise DagDefinitionError.here(f"{name} of task group '{group_id}' must be True or False")
        if not isinstance(tooltip, str):
            raise DagDefinitionError.here(f"tooltip of task group '{group_id}' must be a string")
        self.label = group_id
        self.dag = dag
        self.parent_group = parent
        self.prefix_group_id = prefix_group_id
        self.group_id = parent.child_id(group_id) if parent is not None else group_id
        self.tooltip = tooltip
        self.default_args = normalize_settings(
            dict(default_args or {}), f"default_args of task group '{self.group_id}'"
        )
        self.task_ids: list[str] = []
        self.children: list[TaskGroup] = []
        _, self.lineno = user_location()
        self._tokens: list[Token[tuple[TaskGroup, ...]]] = []
        self._register()

    def _register(self) -> None:
        groups = task_groups_of(self.dag)
        if self.group_id in groups:
            raise DagDefinitionError.here(
                f"duplicate task group id '{self.group_id}' in DAG '{self.dag.dag_id}'"
            )
        if self.group_id in self.dag.task_dict:
            raise DagDefinitionError.here(
                f"task group id '{self.group_id}' is already a task id in DAG '{self.dag.dag_id}'"
            )
        groups[self.group_id] = self
        if self.parent_group is not None:
            self.parent_group.children.append(self)

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> TaskGroup:
        self._tokens.append(_current_groups.set((*_current_groups.get(), self)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _current_groups.reset(self._tokens.pop())

    # -- members --------------------------------------------------------------------------------

    def child_id(self, label: str) -> str:
        """The id of a task or group called ``label`` directly inside this group."""
        return f"{self.group_id}.{label}" if self.prefix_group_id else label

    def merged_default_args(self) -> dict[str, Any]:
        """This group's ``default_args`` over its parent groups' (the DAG's come below these)."""
        inherited = self.parent_group.merged_default_args() if self.parent_group is not None else {}
        return {**inherited, **self.default_args}

    def add_task(self, task: BaseTask) -> None:
        """Record ``task`` as a direct member (done by the task's constructor)."""
        self.task_ids.append(task.task_id)

    @property
    def path(self) -> list[TaskGroup]:
        """This group and its parents, outermost first."""
        chain = [self]
        while (parent := chain[-1].parent_group) is not None:
            chain.append(parent)
        return chain[::-1]

    def all_task_ids(self) -> list[str]:
        """Ids of the tasks in this group and in its nested groups, in creation order."""
        ids = set(self.task_ids)
        for child in self.children:
            ids.update(child.all_task_ids())
        return [tid for tid in self.dag.task_dict if tid in ids]

    @property
    def roots(self) -> list[BaseTask]:
        """Member tasks with no upstream task inside the group."""
        ids = set(self.all_task_ids())
        return [
            self.dag.task_dict[t]
            for t in self.all_task_ids()
            if not self.dag.task_dict[t].upstream_task_ids & ids
        ]

    @property
    def leaves(self) -> list[BaseTask]:
        """Member tasks with no downstream task inside the group."""
        ids = set(self.all_task_ids())
        tasks = self.dag.task_dict
        return [tasks[t] for t in self.all_task_ids() if not tasks[t].downstream_task_ids & ids]

    def dependency_endpoints(self, *, as_upstream: bool) -> list[BaseTask]:
        """Leaves when the group is upstream, roots when it is downstream."""
        tasks = self.leaves if as_upstream else self.roots
        if not tasks:
            raise DagDefinitionError.here(f"task group '{self.group_id}' has no tasks to link with '>>'")
        return tasks

    def __repr__(self) -> str:
        return f"<TaskGroup {self.dag.dag_id}.{self.group_id} tasks={len(self.all_task_ids())}>"
