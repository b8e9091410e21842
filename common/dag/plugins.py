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


def _task_types(obj: Any) -> list[type[BaseTask]]:
    if _is_task_type(obj):
        return [obj]
    if _is_timetable(obj):
        return []
    if isinstance(obj, ModuleType):
        declared = getattr(obj, "HAREFLOW_TASK_TYPES", None)
        if declared is None:
            return [v for v in vars(obj).values() if _is_task_type(v) and v.__module__ == obj.__name__]
        items = list(declared)
    elif callable(obj):
        items = list(obj())
    else:
        raise TypeError(f"expected a BaseTask subclass, a module or a callable, got {type(obj).__name__}")
    bad = [repr(item) for item in items if not _is_task_type(item)]
    if bad:
        raise TypeError(f"not BaseTask subclasses: {', '.join(bad)}")
    return items


def load_plugins() -> dict[str, type[BaseTask]]:
    """Task types registered by plugins, by class name. A broken plugin is logged and skipped."""
    found: dict[str, type[BaseTask]] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            types = _task_types(entry_point.load())
        except Exception:  # one bad plugin must not break the others
            logger.exception("cannot load hareflow plugin %r", getattr(entry_point, "name", entry_point))
            continue
        for cls in types:
            name = cls.__name__
            if name in _BUILTIN_TYPES or (name in found and found[name] is not cls):
                logger.error("hareflow plugin %r: task type name %r is already taken", entry_point.name, name)
                continue
            found[name] = cls
    return found


def _timetables(obj: Any) -> list[type[Timetable]]:
    if _is_timetable(obj):
        return [obj]
    if isinstance(obj, ModuleType):
        declared = getattr(obj, "HAREFLOW_TIMETABLES", None)
        if declared is None:
            return [v for v in vars(obj).values() if _is_timetable(v) and v.__module__ == obj.__name__]
        bad = [repr(item) for item in declared if not _is_timetable(item)]
        if bad:
            raise TypeError(f"not Timetable subclasses: {', '.join(bad)}")
        return list(declared)
    return []


def load_timetables() -> dict[str, type[Timetable]]:
    """Timetables registered by plugins, by ``name``. A broken plugin is logged and skipped."""
    found: dict[str, type[Timetable]] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            classes = _timetables(entry_point.load())
        except Exception:  # one bad plugin must not break the others
            logger.exception("cannot load hareflow plugin %r", getattr(entry_point, "name", entry_point))
            continue
        for cls in classes:
            if not cls.name or (cls.name in found and found[cls.name] is not cls):
                logger.error(
                    "hareflow plugin %r: timetable name %r is empty or taken", entry_point.name, cls.name
                )
                continue
            found[cls.name] = cls
    return found
