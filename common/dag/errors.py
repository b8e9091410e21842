"""Errors raised while defining, loading and running DAGs.

Definition errors always carry the user's file and line, found by walking the call stack to the first
frame that belongs to user code (anything outside the ``common.dag`` and ``hareflow`` packages).
"""

from __future__ import annotations

import os
import sys
from types import FrameType
from typing import Any

_INTERNAL_MODULE_PREFIXES = ("common.dag", "hareflow")


def _is_internal_module(module_name: str) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in _INTERNAL_MODULE_PREFIXES)


def _normalize_filename(filename: str) -> str:
    if filename.startswith("<"):
        return filename
    return os.path.abspath(filename)


# Class attribute set on DAG and BaseTask: the constructor of a user-defined subclass is skipped too,
# so errors point at the statement creating the task rather than at its class's ``super().__init__``.
AUTHORING_MARKER = "_hareflow_authoring_object"


def _is_authoring_constructor(frame: FrameType) -> bool:
    if frame.f_code.co_name != "__init__" or "self" not in frame.f_code.co_varnames:
        return False
    return bool(getattr(frame.f_locals.get("self"), AUTHORING_MARKER, False))


def user_frame(start: FrameType | None = None) -> FrameType | None:
    """Return the innermost stack frame that belongs to user code, or None if there is none."""
    frame: FrameType | None = start if start is not None else sys._getframe(1)
    while frame is not None:
        internal = _is_internal_module(str(frame.f_globals.get("__name__", "")))
        if not internal and not _is_authoring_constructor(frame):
            return frame
        frame = frame.f_back
    return None


def user_location() -> tuple[str | None, int | None]:
    """Return ``(file, line)`` of the user statement currently calling into the authoring API."""
    frame = user_frame(sys._getframe(1))
    if frame is None:
        return None, None
    return _normalize_filename(frame.f_code.co_filename), frame.f_lineno


class DagDefinitionError(Exception):
    """A DAG file defines something invalid; ``file`` and ``line`` point at the offending statement."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    @classmethod
    def here(cls, message: str) -> DagDefinitionError:
        """Build the error located at the user statement that is calling into the authoring API."""
        file, line = user_location()
        return cls(message, file=file, line=line)

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_definition_error, (self.message, self.file, self.line))


def _rebuild_definition_error(message: str, file: str | None, line: int | None) -> DagDefinitionError:
    return DagDefinitionError(message, file=file, line=line)


class TaskFailed(Exception):
    """Raised by a task to fail its current try with a plain message (no traceback is needed)."""


class TaskResultTooLarge(Exception):
    """A task's JSON-encoded return value is larger than the configured limit."""

    def __init__(self, task_id: str, size: int, limit: int) -> None:
        super().__init__(task_id, size, limit)
        self.task_id = task_id
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return (
            f"result of task '{self.task_id}' is {self.size:,} bytes of JSON, over the limit of "
            f"{self.limit:,} bytes; return something smaller (a path, a key, a summary) instead"
        )


class TaskResultNotSerializable(TypeError):
    """A task returned a value that cannot be encoded as JSON."""

    def __init__(self, task_id: str, type_name: str) -> None:
        super().__init__(task_id, type_name)
        self.task_id = task_id
        self.type_name = type_name

    def __str__(self) -> str:
        return (
            f"task '{self.task_id}' returned a value containing {self.type_name}, which is not "
            f"JSON-serialisable; return only dicts, lists, strings, numbers, booleans and None"
        )


class DagNotFound(LookupError):
    """The requested DAG is not (or no longer) defined in its file."""


class TaskNotFound(LookupError):
    """The requested task is not (or no longer) part of its DAG."""
