"""Task types and timetables contributed by installed packages (the ``hareflow.plugins`` entry points).

An entry point may load a ``BaseTask`` subclass, a module (its ``HAREFLOW_TASK_TYPES`` list, else
every ``BaseTask`` subclass it defines) or a callable returning a list of subclasses.
Timetables are found the same way: an entry point loading a ``Timetable`` subclass, or a module's
``HAREFLOW_TIMETABLES`` list (else every ``Timetable`` subclass it defines); each is registered under
its ``name``, which serialized DAGs carry and the scheduler resolves.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any

from hareflow.common.dag.bash_task import BashTask
from hareflow.common.dag.python_task import PythonTask
from hareflow.common.dag.task import BaseTask
from hareflow.common.dag.timetables import Timetable

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hareflow.plugins"
_BUILTIN_TYPES = {cls.__name__ for cls in (BaseTask, PythonTask, BashTask)}


def _is_task_type(obj: Any) -> bool:
    return inspect.isclass(obj) and issubclass(obj, BaseTask) and obj is not BaseTask


def _is_timetable(obj: Any) -> bool:
    return inspect.isclass(obj) and issubclass(obj, Timetable) and obj is not Timetable


def _classes_in(obj: Any, is_kind: Callable[[Any], bool], declared_attr: str, kind: str) -> list[Any] | None:
    """The classes of one kind an entry point offers: the class itself, or a module's declared list
    (``declared_attr``, checked) else every such class the module defines; None for anything else."""
    if is_kind(obj):
        return [obj]
    if not isinstance(obj, ModuleType):
        return None
    declared = getattr(obj, declared_attr, None)
    if declared is None:
        return [v for v in vars(obj).values() if is_kind(v) and v.__module__ == obj.__name__]
    items = list(declared)
    bad = [repr(item) for item in items if not is_kind(item)]
    if bad:
        raise TypeError(f"not {kind} subclasses: {', '.join(bad)}")
    return items


def _task_types(obj: Any) -> list[type[BaseTask]]:
    if _is_timetable(obj):
        return []
    found = _classes_in(obj, _is_task_type, "HAREFLOW_TASK_TYPES", "BaseTask")
    if found is not None:
        return found
    if not callable(obj):
        raise TypeError(f"expected a BaseTask subclass, a module or a callable, got {type(obj).__name__}")
    items = list(obj())
    bad = [repr(item) for item in items if not _is_task_type(item)]
    if bad:
        raise TypeError(f"not BaseTask subclasses: {', '.join(bad)}")
    return items


def _timetables(obj: Any) -> list[type[Timetable]]:
    return _classes_in(obj, _is_timetable, "HAREFLOW_TIMETABLES", "Timetable") or []


def _registered(
    extract: Callable[[Any], list[Any]], name_of: Callable[[Any], str], reserved: Collection[str], kind: str
) -> dict[str, Any]:
    """What every ``hareflow.plugins`` entry point registers of one kind, by name. A broken plugin
    is logged and skipped; so is a class whose name is empty, reserved or another class's."""
    found: dict[str, Any] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            classes = extract(entry_point.load())
        except Exception:  # one bad plugin must not break the others
            logger.exception("cannot load hareflow plugin %r", getattr(entry_point, "name", entry_point))
            continue
        for cls in classes:
            name = name_of(cls)
            if not name or name in reserved or (name in found and found[name] is not cls):
                logger.error(
                    "hareflow plugin %r: %s name %r is empty or already taken", entry_point.name, kind, name
                )
                continue
            found[name] = cls
    return found


def load_plugins() -> dict[str, type[BaseTask]]:
    """Task types registered by plugins, by class name. A broken plugin is logged and skipped."""
    return _registered(_task_types, lambda cls: cls.__name__, _BUILTIN_TYPES, "task type")


def load_timetables() -> dict[str, type[Timetable]]:
    """Timetables registered by plugins, by ``name``. A broken plugin is logged and skipped."""
    return _registered(_timetables, lambda cls: cls.name, (), "timetable")
