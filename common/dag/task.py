"""``BaseTask``: the unit of work in a DAG, its settings, and the ``>>`` / ``<<`` dependency operators.

Custom task types subclass ``BaseTask`` and implement ``execute(ctx)``; the return value is the task's
result, which must be JSON-serialisable because it travels to the metastore and to downstream tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Unpack

from hareflow.common.dag.context import Context
from hareflow.common.dag.dag import DAG
from hareflow.common.dag.dependencies import endpoints
from hareflow.common.dag.errors import DagDefinitionError, user_location
from hareflow.common.dag.outputs import RefusesXComArgMethods, TaskOutput
from hareflow.common.dag.settings import (
    DEFAULT_SETTINGS,
    Callback,
    TaskSettings,
    check_id,
    normalize_settings,
)
from hareflow.common.dag.setup_teardown import SetupTeardownMixin
from hareflow.common.dag.task_group import TaskGroup, active_dag, enter_group
from hareflow.common.dag.trigger_rules import TriggerRule


class BaseTask(SetupTeardownMixin, RefusesXComArgMethods):
    """Base class of every task type; subclasses implement ``execute(ctx)``.

    The constructor takes the task id and keyword-only settings (see ``TaskSettings``); settings not
    given come from the DAG's ``default_args``, then from the defaults.
    """

    _hareflow_authoring_object = True
    # Attributes rendered as Jinja2 templates just before each try (see ``templating``).
    template_fields: tuple[str, ...] = ()
    task_id: str
    dag: DAG
    retries: int
    retry_delay: timedelta
    retry_exponential_backoff: bool
    max_retry_delay: timedelta | None
    execution_timeout: timedelta | None
    queue: str
    priority: int
    pool: str | None
    pool_slots: int
    trigger_rule: TriggerRule
    on_success_callback: Callback | None
    on_failure_callback: Callback | None
    on_retry_callback: Callback | None
    doc: str | None
    doc_md: str | None
    lineno: int | None

    def __init__(self, task_id: str, *, dag: DAG | None = None, **settings: Unpack[TaskSettings]) -> None:
        check_id(task_id, "task_id")
        dag = dag if dag is not None else active_dag()
        if dag is None:
            raise DagDefinitionError.here(
                f"task '{task_id}' was created outside a DAG: create it inside 'with DAG(...):' or pass dag="
            )
        if not isinstance(dag, DAG):
            raise DagDefinitionError.here(f"dag= of task '{task_id}' must be a DAG, not {type(dag).__name__}")
        group, task_id = enter_group(dag, task_id)
        given = normalize_settings(dict(settings), f"task '{task_id}'")
        group_args = group.merged_default_args() if group is not None else {}
        for name, value in {**DEFAULT_SETTINGS, **dag.default_args, **group_args, **given}.items():
            setattr(self, name, value)
        self.task_id = task_id
        self.dag = dag
        self.task_group: TaskGroup | None = group
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        _, self.lineno = user_location()
        dag.add_task(self)
        if group is not None:
            group.add_task(self)

    # -- behaviour ------------------------------------------------------------------------------

    def execute(self, ctx: Context) -> Any:
        """Do the work of one try; the return value becomes the task's (JSON) result."""
        raise NotImplementedError(f"{type(self).__name__} must implement execute(self, ctx)")

    @property
    def task_type(self) -> str:
        return type(self).__name__

    @property
    def max_tries(self) -> int:
        return self.retries + 1

    @property
    def input_task_ids(self) -> frozenset[str]:
        """Upstream tasks whose return values this task consumes (none for most task types)."""
        return frozenset()

    def serialize_extra(self) -> dict[str, Any]:
        """Type-specific fields for the serialized form (e.g. a BashTask's command)."""
        return {}

    # -- mapping: Airflow spellings that fail clearly (see hareflow.common.dag.mapping) -----------

    @classmethod
    def partial(cls, *_: Any, **__: Any) -> Any:
        raise DagDefinitionError.here(
            f"{cls.__name__}.partial() is not supported: only @task functions are mapped; wrap the "
            f"work in a @task and write fn.partial(...).expand(...)"
        )

    def expand(self, *_: Any, **__: Any) -> Any:
        raise DagDefinitionError.here(
            f"expand() belongs on the @task function, not on task '{self.task_id}': write fn.expand(x=...)"
        )

    # -- dependencies ---------------------------------------------------------------------------

    @property
    def upstream_list(self) -> list[BaseTask]:
        return [self.dag.task_dict[t] for t in sorted(self.upstream_task_ids)]

    @property
    def downstream_list(self) -> list[BaseTask]:
        return [self.dag.task_dict[t] for t in sorted(self.downstream_task_ids)]

    def dependency_endpoints(self, *, as_upstream: bool) -> list[BaseTask]:
        """A task stands for itself on either side of ``>>`` (see ``dependencies``)."""
        return [self]

    def set_upstream(self, other: BaseTask | Iterable[BaseTask]) -> None:
        """Make ``other`` (tasks, task groups or task outputs) run before this task."""
        for task in endpoints(other, "set_upstream", as_upstream=True):
            self.dag.add_dependency(task, self)

    def set_downstream(self, other: BaseTask | Iterable[BaseTask]) -> None:
        """Make ``other`` (tasks, task groups or task outputs) run after this task."""
        for task in endpoints(other, "set_downstream", as_upstream=False):
            self.dag.add_dependency(self, task)

    def __rshift__(self, other: BaseTask | Iterable[BaseTask]) -> Any:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: BaseTask | Iterable[BaseTask]) -> Any:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: BaseTask | Iterable[BaseTask]) -> BaseTask:
        # [a, b] >> self
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: BaseTask | Iterable[BaseTask]) -> BaseTask:
        # [a, b] << self
        self.set_downstream(other)
        return self

    # -- outputs --------------------------------------------------------------------------------

    @property
    def output(self) -> TaskOutput:
        """A reference to this task's result, usable as a ``@task`` argument (Airflow's ``op.output``)."""
        return TaskOutput(self)

    def __getitem__(self, key: str | int) -> TaskOutput:
        """``task["rows"]``: a reference to one value inside this task's result."""
        return TaskOutput(self)[key]

    # ``__getitem__`` would otherwise make a task look iterable (0, 1, 2, ... for ever).
    __iter__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{self.task_type} {self.dag.dag_id}.{self.task_id}>"
