"""``PythonTask`` and the ``@task`` decorator: plain functions as tasks, with return-value passing.

Calling a decorated function inside a DAG creates a task instead of running the function. Arguments
are JSON literals, other tasks, or references (``outputs.Reference``: ``t["key"]``, ``op.output``, a
``@dag`` function's params); a task or task output argument becomes an upstream dependency and is
replaced at run time by that task's return value (or the value at its keys), taken from
``ctx.upstream_results``.

``op_args``, ``op_kwargs`` and ``templates_dict`` are template fields, as in Airflow: their strings
(nested in lists and dicts too) are rendered on the worker before the try, and upstream values
substituted for task references afterwards, so those stay data and are never rendered.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Unpack, overload

from hareflow.common.dag.context import Context
from hareflow.common.dag.dag import DAG
from hareflow.common.dag.errors import DagDefinitionError
from hareflow.common.dag.injection import CTX_PARAMETER, call_with_context, check_call, is_ctx
from hareflow.common.dag.outputs import Reference, check_multiple_outputs, infer_multiple_outputs
from hareflow.common.dag.settings import TaskSettings, normalize_settings
from hareflow.common.dag.task import BaseTask
from hareflow.common.dag.task_group import active_dag, unique_label
from hareflow.common.dag.templating import check_template_syntax

if TYPE_CHECKING:
    from hareflow.common.dag.mapping import PartialTask

__all__ = ["CTX_PARAMETER", "PythonTask", "TaskFactory", "task"]


def _signature(function: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


def _scan_argument(value: Any, where: str, refs: dict[str, BaseTask]) -> None:
    """Collect task references in ``value`` and reject anything that is not a JSON literal."""
    if isinstance(value, BaseTask):
        refs.setdefault(value.task_id, value)
    elif isinstance(value, Reference):
        for task in value.tasks:
            refs.setdefault(task.task_id, task)
    elif value is None or isinstance(value, (bool, int, str)):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise DagDefinitionError.here(f"{where} is {value}, which is not JSON-serialisable")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _scan_argument(item, f"{where}[{i}]", refs)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DagDefinitionError.here(f"{where} has a non-string key {key!r}; JSON keys are strings")
            _scan_argument(item, f"{where}[{key!r}]", refs)
    else:
        raise DagDefinitionError.here(
            f"{where} is a {type(value).__name__}, which is not JSON-serialisable; pass JSON literals "
            f"(dict, list, str, number, bool, None) or the output of another task"
        )


def _resolve(value: Any, ctx: Context) -> Any:
    """Replace task references by their results (None when the upstream produced no result)."""
    if isinstance(value, BaseTask):
        return ctx.upstream_results.get(value.task_id)
    if isinstance(value, Reference):
        return value.resolve(ctx)
    if isinstance(value, list):
        return [_resolve(v, ctx) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, ctx) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, ctx) for k, v in value.items()}
    return value


def _holds_string(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_string(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_string(v) for v in value.values())
    return False


#: The template fields every PythonTask has (Airflow's PythonOperator's).
PYTHON_TEMPLATE_FIELDS = ("templates_dict", "op_args", "op_kwargs")


class PythonTask(BaseTask):
    """Runs a Python callable; ``ctx`` and context names (``ds``, ``params``, ``**context``) are filled.

    ``templates_dict`` (Airflow's) is a dict rendered like the arguments and given to the callable
    as the context value ``templates_dict``."""

    template_fields: tuple[str, ...] = PYTHON_TEMPLATE_FIELDS

    def __init__(
        self,
        task_id: str,
        python_callable: Callable[..., Any],
        *,
        op_args: Iterable[Any] = (),
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: Mapping[str, Any] | None = None,
        multiple_outputs: bool = False,
        dag: DAG | None = None,
        **settings: Unpack[TaskSettings],
    ) -> None:
        if not callable(python_callable):
            raise DagDefinitionError.here(f"python_callable of task '{task_id}' is not callable")
        if templates_dict is not None and not isinstance(templates_dict, Mapping):
            raise DagDefinitionError.here(f"templates_dict of task '{task_id}' must be a dict")
        if not isinstance(multiple_outputs, bool):
            raise DagDefinitionError.here(f"multiple_outputs of task '{task_id}' must be True or False")
        self.multiple_outputs = multiple_outputs
        self.python_callable = python_callable
        self.op_args: tuple[Any, ...] = tuple(op_args)
        self.op_kwargs: dict[str, Any] = dict(op_kwargs or {})
        self.templates_dict: dict[str, Any] | None = None if templates_dict is None else dict(templates_dict)
        full = _signature(python_callable)
        self._full_signature = full
        refs = self._check_arguments(task_id)
        if self.templates_dict is not None:
            _scan_argument(self.templates_dict, f"templates_dict of task '{task_id}'", {})
        self._check_templates(task_id)
        super().__init__(task_id, dag=dag, **settings)
        self._input_task_ids = frozenset(refs)
        for ref in refs.values():
            self.set_upstream(ref)

    def _check_arguments(self, task_id: str) -> dict[str, BaseTask]:
        refs: dict[str, BaseTask] = {}
        name = getattr(self.python_callable, "__name__", task_id)
        if self._full_signature is None:
            for i, value in enumerate(self.op_args):
                _scan_argument(value, f"argument {i} of task '{task_id}'", refs)
            for key, value in self.op_kwargs.items():
                _scan_argument(value, f"argument '{key}' of task '{task_id}'", refs)
            return refs
        bound = check_call(self._full_signature, self.op_args, self.op_kwargs, task_id=task_id, name=name)
        for param_name, value in bound.arguments.items():
            _scan_argument(value, f"argument '{param_name}' of task '{task_id}'", refs)
        return refs

    def _check_templates(self, task_id: str) -> None:
        """Refuse a template that cannot be parsed; render only the fields that hold a string (a
        try of a task called with numbers and task outputs renders nothing and stores nothing)."""
        holding = set()
        for name in PYTHON_TEMPLATE_FIELDS:
            value = getattr(self, name)
            check_template_syntax(value, f"{name} of task '{task_id}'")
            if _holds_string(value):
                holding.add(name)
        self.template_fields = tuple(
            f for f in type(self).template_fields if f not in PYTHON_TEMPLATE_FIELDS or f in holding
        )

    @property
    def input_task_ids(self) -> frozenset[str]:
        return self._input_task_ids

    @property
    def takes_ctx(self) -> bool:
        full = self._full_signature
        return full is not None and any(is_ctx(p) for p in full.parameters.values())

    def execute(self, ctx: Context) -> Any:
        """Run the function; a ``multiple_outputs`` task must return a dict (else the try fails)."""
        result = self._call(ctx)
        return check_multiple_outputs(self.task_id, result) if self.multiple_outputs else result

    def _call(self, ctx: Context) -> Any:
        """Call the function with upstream results substituted and the context values it asks for."""
        args = _resolve(self.op_args, ctx)
        kwargs = _resolve(self.op_kwargs, ctx)
        if self._full_signature is None:
            return self.python_callable(*args, **kwargs)
        return call_with_context(self.python_callable, self._full_signature, args, kwargs, ctx, self)


class TaskFactory:
    """What ``@task`` returns: calling it inside a DAG creates a ``PythonTask`` and returns it."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        task_id: str | None = None,
        dag: DAG | None = None,
        settings: Mapping[str, Any] | None = None,
        multiple_outputs: bool | None = None,
    ) -> None:
        self.function = function
        self.task_id = task_id
        self.dag = dag
        self.settings: dict[str, Any] = dict(settings or {})
        self.multiple_outputs = (
            infer_multiple_outputs(function) if multiple_outputs is None else multiple_outputs
        )
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> PythonTask:
        dag = self.dag if self.dag is not None else active_dag()
        name = getattr(self.function, "__name__", "task")
        if dag is None:
            raise DagDefinitionError.here(
                f"task '{self.task_id or name}' was created outside a DAG: call {name}() inside "
                f"'with DAG(...):' or use @task(dag=...)"
            )
        task_id = self.task_id if self.task_id is not None else unique_label(dag, name)
        settings = dict(self.settings)
        if settings.get("doc") is None and self.function.__doc__:
            settings["doc"] = inspect.cleandoc(self.function.__doc__)
        return self._create(
            task_id,
            op_args=args,
            op_kwargs=kwargs,
            multiple_outputs=self.multiple_outputs,
            dag=dag,
            **settings,
        )

    def _create(self, task_id: str, **arguments: Any) -> PythonTask:
        """Create the task (subclasses of the factory create subclasses of ``PythonTask``)."""
        return PythonTask(task_id, self.function, **arguments)

    def partial(self, *args: Any, **fixed: Any) -> PartialTask:
        """Fix some arguments of a mapped task; ``.expand(...)`` or ``.expand_kwargs(...)`` follows."""
        from hareflow.common.dag.mapping import PartialTask

        if args:
            raise DagDefinitionError.here("partial() takes keyword arguments only, e.g. add.partial(y=1)")
        return PartialTask(self, fixed)

    def expand(self, **mapped: Any) -> PythonTask:
        """A mapped task with no fixed arguments: one task instance per element of ``mapped``."""
        return self.partial().expand(**mapped)

    def expand_kwargs(self, kwargs_list: Any) -> PythonTask:
        """A mapped task with one task instance per dict of keyword arguments."""
        return self.partial().expand_kwargs(kwargs_list)

    def override(
        self,
        *,
        task_id: str | None = None,
        multiple_outputs: bool | None = None,
        **settings: Unpack[TaskSettings],
    ) -> TaskFactory:
        """A copy of this factory with some settings (or the task id) replaced."""
        merged = {**self.settings, **normalize_settings(dict(settings), f"task '{task_id or self.task_id}'")}
        clone = copy.copy(self)  # keeps the factory's kind (a branch stays a branch)
        clone.task_id, clone.settings = task_id or self.task_id, merged
        if multiple_outputs is not None:
            clone.multiple_outputs = multiple_outputs
        return clone

    def __repr__(self) -> str:
        return f"<task factory {getattr(self.function, '__qualname__', self.function)!r}>"


@overload
def task(python_callable: Callable[..., Any], /) -> TaskFactory: ...


@overload
def task(
    python_callable: None = None,
    /,
    *,
    task_id: str | None = None,
    dag: DAG | None = None,
    multiple_outputs: bool | None = None,
    **settings: Unpack[TaskSettings],
) -> Callable[[Callable[..., Any]], TaskFactory]: ...


def task(
    python_callable: Callable[..., Any] | None = None,
    /,
    *,
    task_id: str | None = None,
    dag: DAG | None = None,
    multiple_outputs: bool | None = None,
    **settings: Any,
) -> TaskFactory | Callable[[Callable[..., Any]], TaskFactory]:
    """Turn a function into a task factory; use bare (``@task``) or with settings (``@task(queue=...)``).

    ``multiple_outputs=True`` (inferred from a ``-> dict[...]`` return annotation when not given)
    makes the function's result a dict whose keys downstream tasks read as ``t["key"]``."""
    checked = normalize_settings(settings, f"@task({task_id or ''})")
    if multiple_outputs is not None and not isinstance(multiple_outputs, bool):
        raise DagDefinitionError.here(f"multiple_outputs of @task({task_id or ''}) must be True or False")

    def decorate(function: Callable[..., Any]) -> TaskFactory:
        if not callable(function):
            raise DagDefinitionError.here(f"@task decorates functions, not {type(function).__name__}")
        return TaskFactory(
            function, task_id=task_id, dag=dag, settings=checked, multiple_outputs=multiple_outputs
        )

    if python_callable is not None:
        return decorate(python_callable)
    return decorate
