"""Parse-time checks of task arguments shared by the providers' task types.

Each failure is a ``DagDefinitionError`` located at the user's statement and naming the task id and
the argument, as the built-in task types' errors do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hareflow.common.dag.errors import DagDefinitionError
from hareflow.common.dag.templating import check_template_syntax

_CONN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


def fail(task_id: str, argument: str, problem: str) -> DagDefinitionError:
    return DagDefinitionError.here(f"{argument} of task '{task_id}' {problem}")


def conn_id(task_id: str, argument: str, value: Any) -> str:
    """A connection id: 1-250 letters, digits, '_', '.' or '-' (the Connection rule)."""
    if not isinstance(value, str) or not _CONN_ID_RE.match(value):
        raise fail(
            task_id, argument, f"must be a connection id (letters, digits, '_', '.', '-'), not {value!r}"
        )
    return value


def positive_int(task_id: str, argument: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(task_id, argument, f"must be a positive integer, not {value!r}")
    return value


def boolean(task_id: str, argument: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(task_id, argument, f"must be True or False, not {value!r}")
    return value


def template(task_id: str, argument: str, value: Any) -> None:
    """Refuse a template that Jinja2 cannot even parse."""
    check_template_syntax(value, f"{argument} of task '{task_id}'")


def string_mapping(task_id: str, argument: str, value: Any, *, str_values: bool) -> dict[str, Any] | None:
    """None, or a mapping with string keys (and string values when ``str_values``), as a dict."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise fail(task_id, argument, f"must be a dict with string keys, not {type(value).__name__}")
    if str_values and not all(isinstance(v, str) for v in value.values()):
        raise fail(task_id, argument, "must map strings to strings")
    return dict(value)
