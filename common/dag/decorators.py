"""``@dag`` and ``@task_group``: functions that build a DAG or a task group when called.

``@dag(schedule=..., start_date=...)`` over ``def my_dag(rows=10): ...``: calling ``my_dag()``
(usually once, at module level) creates DAG ``my_dag`` and runs the function inside it. The
function's parameters become the DAG's params (defaults overridable by the call's arguments, then by
a run's conf); inside the function each parameter is a reference that a task argument resolves on
the worker to the run's value. The docstring becomes ``doc_md`` unless one is given.

``@task_group`` over a function: each call inside a DAG creates a ``TaskGroup`` named after the
function (numbered on repeated calls: ``clean``, ``clean__1``) and runs the function in it. The call
returns what the function returns when that is a task, task output or group (so ``>>`` links
against it), else the group, as in Airflow.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from hareflow.common.dag.dag import DAG
from hareflow.common.dag.dependencies import is_dependency_node
from hareflow.common.dag.errors import DagDefinitionError
from hareflow.common.dag.outputs import ParamReference
from hareflow.common.dag.settings import normalize_settings
from hareflow.common.dag.task_group import TaskGroup, active_dag, current_group, unique_label

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _check_function(function: Any, decorator: str) -> Callable[..., Any]:
    if not callable(function):
        raise DagDefinitionError.here(f"{decorator} decorates functions, not {type(function).__name__}")
    return function


class DagFactory:
    """What ``@dag`` returns: calling it creates the DAG and returns it."""

    def __init__(self, function: Callable[..., Any], dag_id: str | None, dag_kwargs: dict[str, Any]) -> None:
        self.function = function
        self.dag_id = dag_id or function.__name__
        self.dag_kwargs = dag_kwargs
        self.signature = inspect.signature(function)
        variadic = [p.name for p in self.signature.parameters.values() if p.kind in _VARIADIC]
        if variadic:
            raise DagDefinitionError.here(
                f"@dag function {function.__name__}() cannot take *args or **kwargs ({', '.join(variadic)}): "
                f"its parameters are the DAG's params"
            )
        try:
            inspect.signature(DAG).bind_partial(self.dag_id, **dag_kwargs)
        except TypeError as exc:
            raise DagDefinitionError.here(f"@dag({self.dag_id}): {exc}") from None
        self.__wrapped__ = function
        self.__doc__ = function.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> DAG:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise DagDefinitionError.here(
                f"cannot call {self.function.__name__}() for DAG '{self.dag_id}': {exc}"
            ) from None
        bound.apply_defaults()
        given = self.dag_kwargs.get("params") or {}
        if not isinstance(given, Mapping):
            raise DagDefinitionError.here(f"DAG '{self.dag_id}': params must be a dict")
        options = {**self.dag_kwargs, "params": {**given, **bound.arguments}}
        if options.get("doc_md") is None and self.function.__doc__:
            options["doc_md"] = inspect.cleandoc(self.function.__doc__)
        with DAG(self.dag_id, **options) as dag:
            self.function(**{name: ParamReference(name, value) for name, value in bound.arguments.items()})
        return dag

    def __repr__(self) -> str:
        return f"<dag factory {self.dag_id!r}>"


def dag(dag_id: Any = None, /, **dag_kwargs: Any) -> Any:
    """Turn a function into a DAG factory: ``@dag``, ``@dag(schedule=...)`` or ``@dag("id", ...)``."""
    if callable(dag_id) and not dag_kwargs:
        return DagFactory(dag_id, None, {})
    if dag_id is not None and not isinstance(dag_id, str):
        raise DagDefinitionError.here(f"@dag takes a dag_id string first, not {type(dag_id).__name__}")
    name = dag_kwargs.pop("dag_id", None) if dag_id is None else dag_id

    def decorate(function: Callable[..., Any]) -> DagFactory:
        return DagFactory(_check_function(function, "@dag"), name, dag_kwargs)

    return decorate


class TaskGroupFactory:
    """What ``@task_group`` returns: calling it inside a DAG creates a group and runs the function in it."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        self.function = function
        self.options = options
        self.__wrapped__ = function
        self.__doc__ = function.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        dag = active_dag()
        name = self.function.__name__
        if dag is None:
            raise DagDefinitionError.here(
                f"task group '{name}' was created outside a DAG: call {name}() inside 'with DAG(...):'"
            )
        options = dict(self.options)
        # Repeated calls get numbered groups, an explicit group_id too (Airflow's add_suffix_on_collision).
        group_id = unique_label(dag, options.pop("group_id", None) or name, groups=True)
        if options.get("tooltip") is None:
            options["tooltip"] = inspect.cleandoc(self.function.__doc__) if self.function.__doc__ else ""
        with TaskGroup(group_id, dag=dag, parent_group=current_group(dag), **options) as group:
            returned = self.function(*args, **kwargs)
        return returned if is_dependency_node(returned) else group

    def override(self, **options: Any) -> TaskGroupFactory:
        """A copy of this factory with some group options (``group_id``, ``tooltip``, ...) replaced."""
        return TaskGroupFactory(self.function, _group_options({**self.options, **options}))

    def expand(self, *args: Any, **kwargs: Any) -> Any:
        raise DagDefinitionError.here(
            f"task group '{self.function.__name__}': mapping a task group (.expand) is not supported; "
            f"map the tasks inside it instead"
        )

    partial = expand

    def __repr__(self) -> str:
        return f"<task group factory {self.function.__name__!r}>"


_GROUP_OPTIONS = frozenset({"group_id", "prefix_group_id", "default_args", "tooltip"})


def _group_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - _GROUP_OPTIONS)
    if unknown:
        raise DagDefinitionError.here(
            f"unknown @task_group argument {', '.join(repr(n) for n in unknown)}; "
            f"valid: {', '.join(sorted(_GROUP_OPTIONS))}"
        )
    if options.get("default_args") is not None:
        normalize_settings(dict(options["default_args"]), "default_args of @task_group")
    return options


def task_group(python_callable: Any = None, /, **options: Any) -> Any:
    """Turn a function into a task group factory: ``@task_group`` or ``@task_group(group_id=...)``."""
    checked = _group_options(options)
    if python_callable is not None:
        return TaskGroupFactory(_check_function(python_callable, "@task_group"), checked)

    def decorate(function: Callable[..., Any]) -> TaskGroupFactory:
        return TaskGroupFactory(_check_function(function, "@task_group"), checked)

    return decorate
