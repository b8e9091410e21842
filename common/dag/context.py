"""The run-time context of a try: the ``Context`` handed to ``execute`` (and to ``@task`` functions
taking ``ctx``), and the named values (``ds``, ``params``, ``ti``...) that functions ask for by
parameter name and templates use, all built from what the task message carries."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hareflow.common.dag import macros
from hareflow.common.dag.assets import OutletEventAccessors, TriggeringAssetEvent, triggering_from_message


@dataclass(frozen=True, kw_only=True)
class Context:
    """Everything a task may know about the try it is running: identity, dates, params, inputs."""

    dag_id: str
    task_id: str
    run_id: str
    logical_date: datetime | None = None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    params: dict[str, Any] = field(default_factory=dict)
    conf: dict[str, Any] = field(default_factory=dict)
    try_number: int = 1
    max_tries: int = 1
    map_index: int = -1
    upstream_results: dict[str, Any] = field(default_factory=dict)
    #: a mapped task instance's own element (its mapped keyword arguments); None when not mapped
    expand_args: dict[str, Any] | None = None
    #: a sensor in reschedule mode: how many times this try was rescheduled, and when (epoch
    #: seconds) its first poke ran; 0 and None otherwise
    reschedules: int = 0
    first_poke_at: float | None = None
    #: ``outlet_events[asset].extra = {...}``: the extra of the event this try's success records
    outlet_events: OutletEventAccessors = field(default_factory=OutletEventAccessors)
    #: an asset-triggered run's events, by asset URI (empty for other runs)
    triggering_asset_events: dict[str, list[TriggeringAssetEvent]] = field(default_factory=dict)

    @property
    def log(self) -> logging.Logger:
        """A logger named after the task, so its records can be told apart and filtered."""
        return logging.getLogger(f"hareflow.task.{self.dag_id}.{self.task_id}")


def resolve_params(defaults: Mapping[str, Any], conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the DAG's params with any keys given in the run's conf overriding the defaults."""
    params = dict(defaults)
    if conf:
        params.update(conf)
    return params


# The names a task function may ask for by parameter (or receive all of through ``**context``),
# and the variables of a template. ``ctx`` (the Context itself) is handled by PythonTask apart.
CONTEXT_NAMES: frozenset[str] = frozenset(
    {
        "conf",
        "conn",
        "dag",
        "dag_run",
        "data_interval_end",
        "data_interval_start",
        "ds",
        "ds_nodash",
        "logical_date",
        "macros",
        "outlet_events",
        "params",
        "run_id",
        "task",
        "task_instance",
        "templates_dict",
        "ti",
        "triggering_asset_events",
        "ts",
        "ts_nodash",
        "var",
    }
)


@dataclass(frozen=True, kw_only=True)
class TaskInstanceInfo:
    """What ``ti`` / ``task_instance`` says about the running try (Airflow's spelling)."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    max_tries: int
    map_index: int


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What ``dag_run`` says about the run this try belongs to (Airflow's spelling)."""

    dag_id: str
    run_id: str
    logical_date: datetime | None
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    conf: dict[str, Any]


def _strftime(value: datetime | None, fmt: str) -> str | None:
    return None if value is None else value.strftime(fmt)


def context_values(ctx: Context, task: Any = None) -> dict[str, Any]:
    """The named context of one try, built from ``ctx`` alone (what the task message carries).

    Keys are exactly :data:`CONTEXT_NAMES`; ``task`` and ``dag`` are the task object and its DAG
    when given (the worker and ``dags test`` give them; they are ``None`` otherwise).
    """
    ti = TaskInstanceInfo(
        dag_id=ctx.dag_id,
        task_id=ctx.task_id,
        run_id=ctx.run_id,
        try_number=ctx.try_number,
        max_tries=ctx.max_tries,
        map_index=ctx.map_index,
    )
    dag_run = RunInfo(
        dag_id=ctx.dag_id,
        run_id=ctx.run_id,
        logical_date=ctx.logical_date,
        data_interval_start=ctx.data_interval_start,
        data_interval_end=ctx.data_interval_end,
        conf=dict(ctx.conf),
    )
    ts = ctx.logical_date.isoformat() if ctx.logical_date is not None else None
    from hareflow.common.secrets.accessors import CONN, VAR

    return {
        "conf": dict(ctx.conf),
        "conn": CONN,
        "dag": getattr(task, "dag", None),
        "dag_run": dag_run,
        "data_interval_end": ctx.data_interval_end,
        "data_interval_start": ctx.data_interval_start,
        "ds": _strftime(ctx.logical_date, "%Y-%m-%d"),
        "ds_nodash": _strftime(ctx.logical_date, "%Y%m%d"),
        "logical_date": ctx.logical_date,
        "macros": macros,
        "outlet_events": ctx.outlet_events,
        "params": dict(ctx.params),
        "run_id": ctx.run_id,
        "task": task,
        "task_instance": ti,
        "templates_dict": getattr(task, "templates_dict", None),
        "ti": ti,
        "triggering_asset_events": ctx.triggering_asset_events,
        "ts": ts,
        "ts_nodash": _strftime(ctx.logical_date, "%Y%m%dT%H%M%S"),
        "var": VAR,
    }


def _parse_date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def context_from_message(payload: Mapping[str, Any]) -> Context:
    """The Context of one try from its task message (as a dict): all a worker knows about it."""
    key = payload["key"]
    return Context(
        dag_id=key["dag_id"],
        task_id=key["task_id"],
        run_id=key["run_id"],
        logical_date=_parse_date(payload.get("logical_date")),
        data_interval_start=_parse_date(payload.get("data_interval_start")),
        data_interval_end=_parse_date(payload.get("data_interval_end")),
        params=payload.get("params") or {},
        conf=payload.get("conf") or {},
        try_number=key["try_number"],
        max_tries=payload["max_tries"],
        map_index=key["map_index"],
        upstream_results=payload.get("upstream_results") or {},
        expand_args=payload.get("expand_args"),
        reschedules=int(payload.get("reschedules") or 0),
        first_poke_at=payload.get("first_poke_at"),
        triggering_asset_events=triggering_from_message(payload.get("triggering_asset_events")),
    )
