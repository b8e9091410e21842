"""Dynamic task mapping: ``fn.partial(**fixed).expand(arg=...)``, ``expand_kwargs`` and their
expansion into one task instance per element.

Authoring: ``expand`` maps over literal lists, literal dicts (one ``[key, value]`` pair per item, as
Airflow yields them) or another task's return value, known only at run time; several mapped
arguments make the cross product (the last one varies fastest). ``expand_kwargs`` maps over a list
of keyword-argument dicts. The output of a mapped task is the list of its instances' results in
map-index order: a plain downstream task receives that list, and expanding over it makes one
instance per upstream instance.

Serialized form (``SerializedTask.expand``)::

    {"kind": "product" | "kwargs",
     "args": [{"name": <parameter>, "literal": [...]}
              | {"name": <parameter>, "task": <task id>, "keys": [<key or index>, ...] (optional)}]}

``keys`` maps over a value inside the task's result (``result["files"]``): the scheduler walks them.

``kwargs`` has one entry, named ``"*"``. The scheduler expands (it has the upstream results) with
the pure functions at the end of this module; each instance's message carries its own element.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hareflow.common.dag.dag import DAG
from hareflow.common.dag.errors import DagDefinitionError, TaskFailed, user_location
from hareflow.common.dag.injection import check_call, without_ctx
from hareflow.common.dag.outputs import TaskOutput
from hareflow.common.dag.python_task import CTX_PARAMETER, PythonTask, _scan_argument
from hareflow.common.dag.settings import SETTING_NAMES
from hareflow.common.dag.task import BaseTask
from hareflow.common.dag.task_group import unique_label

if TYPE_CHECKING:
    from hareflow.common.dag.context import Context
    from hareflow.common.dag.python_task import TaskFactory

PRODUCT = "product"
KWARGS = "kwargs"
KWARGS_NAME = "*"
#: Attribute of a DAG listing its partials, to report one never expanded.
_PARTIALS_ATTR = "_hareflow_partials"


class ExpansionError(ValueError):
    """A mapped task cannot be expanded at run time (an upstream value is not a list, ...)."""


@dataclass(frozen=True)
class ExpandSource:
    """One mapped input: a literal list of elements, or the id of the task whose result is mapped."""

    name: str
    literal: tuple[Any, ...] | None = None
    task_id: str | None = None
    keys: tuple[str | int, ...] = ()  # a value inside the task's result, e.g. ("files",)

    def to_dict(self) -> dict[str, Any]:
        if self.task_id is not None:
            out: dict[str, Any] = {"name": self.name, "task": self.task_id}
            if self.keys:
                out["keys"] = list(self.keys)
            return out
        return {"name": self.name, "literal": list(self.literal or ())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpandSource:
        if data.get("task") is not None:
            return cls(name=data["name"], task_id=data["task"], keys=tuple(data.get("keys") or ()))
        return cls(name=data["name"], literal=tuple(data.get("literal") or ()))


@dataclass(frozen=True)
class ExpandSpec:
    """How a mapped task expands: the cross product of named sources, or a list of kwargs dicts."""

    kind: str
    sources: tuple[ExpandSource, ...]

    @property
    def task_ids(self) -> tuple[str, ...]:
        """Upstream tasks whose results are mapped over."""
        return tuple(s.task_id for s in self.sources if s.task_id is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "args": [s.to_dict() for s in self.sources]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpandSpec:
        return cls(kind=data["kind"], sources=tuple(ExpandSource.from_dict(a) for a in data["args"]))


# -- authoring ------------------------------------------------------------------------------------


def _literal_elements(value: Any, where: str) -> tuple[Any, ...]:
    """The elements of a literal list or dict given to expand; reject task references inside."""
    items: list[Any] = list(value.items()) if isinstance(value, dict) else list(value)
    refs: dict[str, BaseTask] = {}
    if isinstance(value, dict):
        for key, _ in items:
            if not isinstance(key, str):
                raise DagDefinitionError.here(f"{where} has a non-string key {key!r}; JSON keys are strings")
        items = [[k, v] for k, v in items]
    for i, item in enumerate(items):
        _scan_argument(item, f"{where}[{i}]", refs)
    if refs:
        raise DagDefinitionError.here(
            f"{where} holds the output of task '{next(iter(refs))}' inside a list; to map over a "
            f"task's output pass the task itself, e.g. expand(x=that_task())"
        )
    return tuple(items)


def _source(name: str, value: Any, where: str) -> ExpandSource:
    if isinstance(value, BaseTask):
        return ExpandSource(name=name, task_id=value.task_id)
    if isinstance(value, TaskOutput):
        return ExpandSource(name=name, task_id=value.task.task_id, keys=tuple(value.keys))
    if isinstance(value, (list, tuple, dict)):
        return ExpandSource(name=name, literal=_literal_elements(value, where))
    raise DagDefinitionError.here(
        f"{where} is a {type(value).__name__}; expand() maps over a list, a dict or the output of "
        f"another task"
    )


class PartialTask:
    """What ``fn.partial(**fixed)`` returns: the fixed arguments, waiting for ``expand``."""

    def __init__(self, factory: TaskFactory, fixed: dict[str, Any]) -> None:
        self.factory = factory
        self.fixed = fixed
        self.file, self.line = user_location()
        self.expanded = False
        self._name = factory.task_id or getattr(factory.function, "__name__", "task")
        self._check_fixed()
        self._dag().__dict__.setdefault(_PARTIALS_ATTR, []).append(self)

    def _dag(self) -> DAG:
        from hareflow.common.dag.task_group import active_dag

        dag = self.factory.dag if self.factory.dag is not None else active_dag()
        if dag is None:
            raise DagDefinitionError.here(
                f"task '{self._name}' was mapped outside a DAG: call {self._name}.partial(...) inside "
                f"'with DAG(...):' or use @task(dag=...)"
            )
        return dag

    def _parameters(self) -> Mapping[str, inspect.Parameter] | None:
        try:
            return inspect.signature(self.factory.function).parameters
        except (TypeError, ValueError):
            return None

    def _check_fixed(self) -> None:
        params = self._parameters()
        for name in self.fixed:
            if name == CTX_PARAMETER:
                raise DagDefinitionError.here(
                    f"partial() of task '{self._name}': 'ctx' is passed by hareflow"
                )
            if params is not None and not _accepts(params, name):
                hint = (
                    f"; '{name}' is a task setting: use {self._name}.override({name}=...).partial(...)"
                    if name in SETTING_NAMES or name == "task_id"
                    else ""
                )
                raise DagDefinitionError.here(
                    f"partial() of task '{self._name}': {self._name}() has no parameter '{name}'{hint}"
                )

    def expand(self, **mapped: Any) -> PythonTask:
        """Create the mapped task: one instance per element (cross product over several names)."""
        if not mapped:
            raise DagDefinitionError.here(f"expand() of task '{self._name}' needs at least one argument")
        params = self._parameters()
        sources = []
        for name, value in mapped.items():
            where = f"expand() argument '{name}' of task '{self._name}'"
            if name in self.fixed:
                raise DagDefinitionError.here(f"{where} is also given to partial(); give it once")
            if name == CTX_PARAMETER:
                raise DagDefinitionError.here(f"{where}: 'ctx' is passed by hareflow, it cannot be mapped")
            if params is not None and not _accepts(params, name):
                raise DagDefinitionError.here(f"{where}: {self._name}() has no parameter '{name}'")
            sources.append(_source(name, value, where))
        return self._create(ExpandSpec(PRODUCT, tuple(sources)), set(mapped))

    def expand_kwargs(self, kwargs_list: Any) -> PythonTask:
        """Create the mapped task over a list of keyword-argument dicts (literal, or a task's output)."""
        where = f"expand_kwargs() of task '{self._name}'"
        if isinstance(kwargs_list, BaseTask):
            source = ExpandSource(name=KWARGS_NAME, task_id=kwargs_list.task_id)
        elif isinstance(kwargs_list, TaskOutput):
            source = ExpandSource(
                name=KWARGS_NAME, task_id=kwargs_list.task.task_id, keys=tuple(kwargs_list.keys)
            )
        elif isinstance(kwargs_list, (list, tuple)):
            for i, item in enumerate(kwargs_list):
                if not isinstance(item, dict):
                    raise DagDefinitionError.here(
                        f"{where}: item {i} is a {type(item).__name__}; each item is a dict of arguments"
                    )
                overlap = sorted(set(item) & set(self.fixed))
                if overlap:
                    raise DagDefinitionError.here(
                        f"{where}: item {i} repeats partial() argument(s) {overlap}"
                    )
            source = ExpandSource(name=KWARGS_NAME, literal=_literal_elements(kwargs_list, where))
        else:
            raise DagDefinitionError.here(
                f"{where} needs a list of dicts or the output of another task, "
                f"not {type(kwargs_list).__name__}"
            )
        return self._create(ExpandSpec(KWARGS, (source,)), None)

    def _create(self, spec: ExpandSpec, mapped_names: set[str] | None) -> PythonTask:
        if self.expanded:
            raise DagDefinitionError.here(f"this partial() of task '{self._name}' was already expanded")
        self.expanded = True
        factory = self.factory
        dag = self._dag()
        task_id = factory.task_id if factory.task_id is not None else unique_label(dag, self._name)
        settings = dict(factory.settings)
        if settings.get("doc") is None and factory.function.__doc__:
            settings["doc"] = inspect.cleandoc(factory.function.__doc__)
        task = MappedPythonTask(
            task_id,
            factory.function,
            op_kwargs=self.fixed,
            expand=spec,
            mapped_names=mapped_names,
            dag=dag,
            **settings,
        )
        for upstream_id in spec.task_ids:
            task.set_upstream(dag.get_task(upstream_id))
        return task

    # Airflow spellings that hareflow does not support: say so at parse time.
    def map(self, *_: Any, **__: Any) -> Any:
        raise unsupported("map")

    def zip(self, *_: Any, **__: Any) -> Any:
        raise unsupported("zip")


def _accepts(params: Mapping[str, inspect.Parameter], name: str) -> bool:
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    param = params.get(name)
    return param is not None and param.kind is not inspect.Parameter.POSITIONAL_ONLY


class MappedPythonTask(PythonTask):
    """A ``@task`` function expanded over its mapped arguments: one task instance per element.

    Its ``execute`` calls the function with the fixed arguments plus the instance's own element,
    which arrives in ``ctx.expand_args`` (the worker needs no database to know it).
    """

    def __init__(
        self,
        task_id: str,
        python_callable: Any,
        *,
        op_kwargs: Mapping[str, Any],
        expand: ExpandSpec,
        mapped_names: set[str] | None,
        dag: DAG,
        **settings: Any,
    ) -> None:
        self.expand_spec = expand
        self._mapped_names = mapped_names
        super().__init__(task_id, python_callable, op_kwargs=op_kwargs, dag=dag, **settings)

    def _check_arguments(self, task_id: str) -> dict[str, BaseTask]:
        refs: dict[str, BaseTask] = {}
        name = getattr(self.python_callable, "__name__", task_id)
        for key, value in self.op_kwargs.items():
            _scan_argument(value, f"argument '{key}' of task '{task_id}'", refs)
        if self._full_signature is None:
            return refs
        if self._mapped_names is None:  # expand_kwargs: the names arrive at run time
            try:
                without_ctx(self._full_signature).bind_partial(**self.op_kwargs)
            except TypeError as exc:
                raise DagDefinitionError.here(f"cannot call {name}() for task '{task_id}': {exc}") from None
        else:
            placeholders = dict.fromkeys(self._mapped_names, None)
            check_call(
                self._full_signature, (), {**self.op_kwargs, **placeholders}, task_id=task_id, name=name
            )
        return refs

    @property
    def task_type(self) -> str:
        return "PythonTask"

    def execute(self, ctx: Context) -> Any:
        """Call the function with this instance's element added to the fixed arguments."""
        if ctx.expand_args is None:
            raise TaskFailed(
                f"task '{self.task_id}' is mapped but map index {ctx.map_index} has no element: the "
                f"list it maps over is shorter now (an upstream task re-ran and returned fewer items?)"
            )
        instance = copy.copy(self)
        instance.op_kwargs = {**self.op_kwargs, **ctx.expand_args}
        return PythonTask.execute(instance, ctx)


def unsupported(name: str) -> DagDefinitionError:
    """The error for an Airflow mapping idiom hareflow does not support."""
    hints = {
        "map": "transform the values inside the mapped task, or add a @task that transforms the list",
        "zip": "return a list of tuples from one @task and expand over it, or use expand_kwargs()",
        "concat": "return one combined list from a @task and expand over it",
    }
    return DagDefinitionError.here(f".{name}() on a task's output is not supported; {hints[name]}")


def check_all_expanded(dags: Sequence[DAG]) -> None:
    """Raise for a ``partial()`` that was never expanded (it would define no task, silently)."""
    for dag in dags:
        for partial in dag.__dict__.get(_PARTIALS_ATTR, ()):
            if not partial.expanded:
                raise DagDefinitionError(
                    f"{partial._name}.partial(...) is never expanded: add .expand(...) or "
                    f".expand_kwargs(...), or call {partial._name}(...) for a plain task",
                    file=partial.file,
                    line=partial.line,
                )


# -- expansion (the scheduler's side) ---------------------------------------------------------------


def mapped_value(task_id: str, value: Any) -> list[Any]:
    """An upstream task's result as the list to map over: a dict gives its [key, value] pairs."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [[k, v] for k, v in value.items()]
    kind = "null" if value is None else type(value).__name__
    raise ExpansionError(
        f"expand() maps over the result of task '{task_id}', which is {kind}, not a list or dict"
    )


def source_lists(spec: ExpandSpec, results: Mapping[str, Any]) -> list[list[Any]]:
    """Each source's elements: literals as stored, task outputs from ``results`` (task id -> value)."""
    lists = []
    for source in spec.sources:
        if source.task_id is None:
            lists.append(list(source.literal or ()))
            continue
        value = results.get(source.task_id)
        for key in source.keys:
            try:
                value = value[key]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                path = "".join(f"[{k!r}]" for k in source.keys)
                raise ExpansionError(
                    f"expand() maps over {path} of the result of task '{source.task_id}', "
                    f"which has no {key!r}"
                ) from None
        lists.append(mapped_value(source.task_id, value))
    return lists


def expansion_length(spec: ExpandSpec, lists: Sequence[Sequence[Any]]) -> int:
    """How many instances ``spec`` makes over ``lists`` (the cross product's size)."""
    if spec.kind == KWARGS:
        for i, item in enumerate(lists[0]):
            if not isinstance(item, dict) or not all(isinstance(k, str) for k in item):
                raise ExpansionError(f"expand_kwargs() item {i} is not a dict of arguments: {item!r:.200}")
        return len(lists[0])
    return math.prod(len(items) for items in lists)


def element(spec: ExpandSpec, lists: Sequence[Sequence[Any]], map_index: int) -> dict[str, Any] | None:
    """The keyword arguments of instance ``map_index`` (None past the end of the lists)."""
    if spec.kind == KWARGS:
        items = lists[0]
        return dict(items[map_index]) if 0 <= map_index < len(items) else None
    if not 0 <= map_index < expansion_length(spec, lists):
        return None
    out: dict[str, Any] = {}
    rest = map_index
    for source, items in zip(reversed(spec.sources), reversed(lists), strict=True):
        rest, digit = divmod(rest, len(items))
        out[source.name] = items[digit]
    return {s.name: out[s.name] for s in spec.sources}


def all_elements(spec: ExpandSpec, lists: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Every instance's keyword arguments, in map-index order (for tests and ``dags test``)."""
    if spec.kind == KWARGS:
        return [dict(item) for item in lists[0]]
    names = [s.name for s in spec.sources]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists)]
