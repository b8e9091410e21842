"""References to values known only at run time, passed as task arguments.

- ``TaskOutput``: a task's result, or a value inside it (``extract()["rows"]``, ``op.output``,
  ``op.output["a"][0]``). It makes the task an upstream dependency and an input whose result travels
  in the consuming task's message; the worker walks the key path over that whole stored result. A
  missing key fails the consuming task's try, naming the upstream task and the key.
- ``ParamReference``: a DAG param (what a ``@dag`` function's parameters are), replaced on the worker
  by the run's value of that param (its default, or the run's conf).

``PythonTask`` finds ``Reference`` objects in its arguments and asks them to ``resolve(ctx)``.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hareflow.common.dag.context import Context
from hareflow.common.dag.dependencies import DependencyMixin
from hareflow.common.dag.errors import DagDefinitionError, TaskFailed

if TYPE_CHECKING:
    from hareflow.common.dag.task import BaseTask

Key = str | int


class RefusesXComArgMethods:
    """Airflow's ``XComArg`` methods hareflow does not support, on a task and on its output: each
    fails at parse time with what to write instead (``mapping.unsupported``), never silently."""

    def map(self, *_: Any, **__: Any) -> Any:
        from hareflow.common.dag.mapping import unsupported

        raise unsupported("map")

    def zip(self, *_: Any, **__: Any) -> Any:
        from hareflow.common.dag.mapping import unsupported

        raise unsupported("zip")

    def concat(self, *_: Any, **__: Any) -> Any:
        from hareflow.common.dag.mapping import unsupported

        raise unsupported("concat")


class Reference:
    """A value a task argument takes at run time; ``tasks`` are the upstream tasks it reads."""

    @property
    def tasks(self) -> tuple[BaseTask, ...]:
        return ()

    def resolve(self, ctx: Context) -> Any:
        raise NotImplementedError


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        keys = ", ".join(repr(k) for k in list(value)[:10])
        return f"a dict with keys {keys}" if keys else "an empty dict"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return "None" if value is None else f"a {type(value).__name__}"


class TaskOutput(Reference, DependencyMixin, RefusesXComArgMethods):
    """A task's result (``keys == ()``) or the value at ``keys`` inside it."""

    def __init__(self, task: BaseTask, keys: tuple[Key, ...] = ()) -> None:
        self.task = task
        self.keys = keys

    @property
    def tasks(self) -> tuple[BaseTask, ...]:
        return (self.task,)

    def __getitem__(self, key: Key) -> TaskOutput:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise DagDefinitionError.here(
                f"output of task '{self.task.task_id}' is indexed by a string key or an integer, "
                f"not {type(key).__name__}"
            )
        return TaskOutput(self.task, (*self.keys, key))

    # Indexing must not make an output look iterable (0, 1, 2, ... for ever).
    __iter__ = None  # type: ignore[assignment]

    def dependency_endpoints(self, *, as_upstream: bool) -> list[BaseTask]:
        return [self.task]

    @property
    def key_path(self) -> str:
        """The keys as written in Python, e.g. ``["rows"][0]``."""
        return "".join(f"[{k!r}]" for k in self.keys)

    def resolve(self, ctx: Context) -> Any:
        """Walk the key path over the upstream's whole result; a missing key fails the try."""
        upstream = self.task.task_id
        value = ctx.upstream_results.get(upstream)
        for depth, key in enumerate(self.keys):
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                where = f"result{''.join(f'[{k!r}]' for k in self.keys[:depth])}"
                raise TaskFailed(
                    f"task '{ctx.task_id}' reads {upstream}{self.key_path}, but the {where} of upstream task "
                    f"'{upstream}' is {_describe(value)}, which has no key {key!r}"
                ) from None
        return value

    def __repr__(self) -> str:
        return f"<output of {self.task.task_id}{self.key_path}>"


class ParamReference(Reference):
    """A DAG param, read from the run's params (defaults overridden by the run's conf)."""

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default

    __iter__ = None  # type: ignore[assignment]

    def resolve(self, ctx: Context) -> Any:
        return ctx.params.get(self.name, self.default)

    def __repr__(self) -> str:
        return f"<param {self.name!r}>"


_DICT_ANNOTATION = re.compile(r"^\s*(dict|Dict|typing\.Dict)\s*(\[.*\])?\s*$")


def infer_multiple_outputs(function: Callable[..., Any]) -> bool:
    """True when ``function`` is annotated to return a dict (``-> dict[str, int]``), as Airflow infers."""
    try:
        annotation = typing.get_type_hints(function).get("return")
    except Exception:  # an unresolvable string annotation: read it as written
        annotation = getattr(function, "__annotations__", {}).get("return")
    if isinstance(annotation, str):
        return bool(_DICT_ANNOTATION.match(annotation))
    return annotation is dict or typing.get_origin(annotation) is dict


def check_multiple_outputs(task_id: str, value: Any) -> Any:
    """A ``multiple_outputs=True`` task must return a dict with string keys; fail the try otherwise."""
    if not isinstance(value, dict):
        raise TaskFailed(
            f"task '{task_id}' has multiple_outputs=True but returned {_describe(value)}, not a dict"
        )
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise TaskFailed(
            f"task '{task_id}' has multiple_outputs=True but returned a dict with non-string key {bad[0]!r}"
        )
    return value
