"""Per-task settings: their names, defaults and validation, shared by tasks and ``default_args``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypedDict

from hareflow.common.dag.callbacks import check_callbacks
from hareflow.common.dag.errors import DagDefinitionError
from hareflow.common.dag.trigger_rules import TriggerRule

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
QUEUE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

#: one callable, or a list of them called in order (``common.dag.callbacks``)
Callback = Callable[..., Any] | list[Callable[..., Any]]


class TaskSettings(TypedDict, total=False):
    """Keyword settings accepted by every task (and by a DAG's ``default_args``)."""

    retries: int
    retry_delay: timedelta | float
    retry_exponential_backoff: bool
    max_retry_delay: timedelta | float | None
    execution_timeout: timedelta | float | None
    queue: str
    priority: int
    pool: str | None
    pool_slots: int
    trigger_rule: TriggerRule | str
    on_success_callback: Callback | None
    on_failure_callback: Callback | None
    on_retry_callback: Callback | None
    doc: str | None
    doc_md: str | None
    owner: str | None
    depends_on_past: bool
    weight_rule: str
    priority_weight: int
    outlets: Any  # an Asset or a list of them (``common.dag.assets``)


DEFAULT_SETTINGS: dict[str, Any] = {
    "retries": 0,
    "retry_delay": timedelta(seconds=300),
    "retry_exponential_backoff": False,
    "max_retry_delay": None,
    "execution_timeout": None,
    "queue": "default",
    "priority": 1,
    "pool": None,
    "pool_slots": 1,
    "trigger_rule": TriggerRule.ALL_SUCCESS,
    "on_success_callback": None,
    "on_failure_callback": None,
    "on_retry_callback": None,
    "doc": None,
    "doc_md": None,
    "owner": None,
    "depends_on_past": False,
    "weight_rule": "absolute",
    "outlets": (),
}

#: Airflow's names for settings hareflow spells differently.
ALIASES: dict[str, str] = {"priority_weight": "priority"}
#: How a task's effective priority is computed (see ``common.dag.priority``).
WEIGHT_RULES = ("absolute", "downstream", "upstream")

SETTING_NAMES: frozenset[str] = frozenset(DEFAULT_SETTINGS) | frozenset(ALIASES)

#: Airflow settings hareflow refuses with a reason, rather than as merely unknown: a task's
#: documentation is plain text (``doc``) or Markdown (``doc_md``), and only Markdown is rendered.
UNSUPPORTED: dict[str, str] = {
    name: f"{name} is not supported: hareflow renders Markdown only; write the documentation as doc_md"
    for name in ("doc_rst", "doc_json", "doc_yaml")
}


def check_id(value: object, what: str) -> str:
    """Validate a dag or task id; raise DagDefinitionError pointing at the user's statement."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise DagDefinitionError.here(
            f"invalid {what} {value!r}: use 1-250 characters among letters, digits, '_', '.' and '-'"
        )
    return value


def check_setting_names(names: Mapping[str, Any], where: str) -> None:
    """Reject keywords that are not task settings, listing the valid ones."""
    for name in sorted(set(names) & set(UNSUPPORTED)):
        raise DagDefinitionError.here(f"{UNSUPPORTED[name]} (in {where})")
    unknown = sorted(set(names) - SETTING_NAMES)
    if unknown:
        valid = ", ".join(sorted(SETTING_NAMES))
        raise DagDefinitionError.here(
            f"unknown task setting {', '.join(repr(n) for n in unknown)} in {where}; valid settings: {valid}"
        )


def _seconds(value: object, name: str, *, optional: bool, positive: bool, where: str) -> timedelta | None:
    if value is None:
        if optional:
            return None
        raise DagDefinitionError.here(f"{name} of {where} must not be None")
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise DagDefinitionError.here(
            f"{name} of {where} must be a timedelta or a number of seconds, not {type(value).__name__}"
        )
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0) or (positive and delta == timedelta(0)):
        raise DagDefinitionError.here(f"{name} of {where} must be {'positive' if positive else '>= 0'}")
    return delta


def _int(value: object, name: str, minimum: int | None, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DagDefinitionError.here(f"{name} of {where} must be an integer, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise DagDefinitionError.here(f"{name} of {where} must be >= {minimum}, got {value}")
    return value


def _optional_str(value: object, name: str, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise DagDefinitionError.here(f"{name} of {where} must be a string or None")
    return value


def normalize_settings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate task settings and return them in canonical form (timedeltas, TriggerRule, ...).

    ``where`` names the task or DAG in error messages. Only the keys present in ``raw`` are returned.
    """
    check_setting_names(raw, where)
    for alias, name in ALIASES.items():
        if alias in raw and name in raw:
            raise DagDefinitionError.here(f"{where} sets both {name!r} and its alias {alias!r}; keep one")
    out: dict[str, Any] = {}
    for given, value in raw.items():
        name = ALIASES.get(given, given)
        if name == "retries":
            out[name] = _int(value, name, 0, where)
        elif name == "retry_delay":
            out[name] = _seconds(value, name, optional=False, positive=False, where=where)
        elif name in ("max_retry_delay", "execution_timeout"):
            out[name] = _seconds(value, name, optional=True, positive=True, where=where)
        elif name == "retry_exponential_backoff":
            if not isinstance(value, bool):
                raise DagDefinitionError.here(f"{name} of {where} must be True or False")
            out[name] = value
        elif name == "queue":
            if not isinstance(value, str) or not QUEUE_PATTERN.match(value):
                raise DagDefinitionError.here(
                    f"invalid queue name {value!r} for {where}: use 1-100 characters among letters, "
                    f"digits, '_', '.' and '-'"
                )
            out[name] = value
        elif name == "pool":
            if value is not None and (not isinstance(value, str) or not ID_PATTERN.match(value)):
                raise DagDefinitionError.here(f"invalid pool name {value!r} for {where}")
            out[name] = value
        elif name == "priority":
            out[name] = _int(value, name, None, where)
        elif name == "pool_slots":
            out[name] = _int(value, name, 1, where)
        elif name == "trigger_rule":
            try:
                out[name] = TriggerRule.parse(value)
            except ValueError as exc:
                raise DagDefinitionError.here(f"{exc} (in {where})") from None
        elif name == "depends_on_past":
            if not isinstance(value, bool):
                raise DagDefinitionError.here(f"{name} of {where} must be True or False")
            out[name] = value
        elif name == "weight_rule":
            if value not in WEIGHT_RULES:
                raise DagDefinitionError.here(
                    f"unknown weight_rule {value!r} in {where}; valid rules: {', '.join(WEIGHT_RULES)}"
                )
            out[name] = value
        elif name == "owner":
            if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 100):
                raise DagDefinitionError.here(
                    f"owner of {where} must be a non-empty string of at most 100 characters"
                )
            out[name] = value
        elif name == "outlets":
            from hareflow.common.dag.assets import check_outlets

            out[name] = check_outlets(value, where)
        elif name.endswith("_callback"):
            out[name] = check_callbacks(value, name, where)
        else:  # doc, doc_md
            out[name] = _optional_str(value, name, where)
    return out
