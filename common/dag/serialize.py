"""The serialized form of a DAG: what the scheduler and web server read instead of user code.

Format, version 1 (a JSON object)::

    {"version": 1, "dag_id", "fileloc" (absolute path), "lineno", "schedule" (str|null: a cron
     string or preset, or the display text of a timedelta or timetable schedule),
     "timetable" ({"name", "params"}|null: a timedelta or Timetable schedule, see common.dag.timetables),
     "timezone" (IANA name), "start_date"/"end_date" (ISO 8601 with offset|null), "catchup",
     "max_active_runs", "max_active_tasks", "dagrun_timeout" (s|null), "callbacks" (the DAG-level
     callbacks it has, among "success" and "failure"), "params" (object), "tags"
     (list), "owner",
     "description", "doc_md",
     "tasks": [{"task_id", "task_type", "upstream" (sorted ids), "trigger_rule", "retries",
                "retry_delay" (s), "retry_exponential_backoff", "max_retry_delay" (s|null),
                "execution_timeout" (s|null), "queue", "priority" (the effective priority, after the
                weight rule), "priority_weight" (the task's own), "weight_rule", "depends_on_past",
                "pool", "pool_slots",
                "input_tasks" (sorted ids whose results are arguments), "lineno", "doc" (plain
                text), "doc_md" (Markdown; absent when unset),
                "bash_command" (BashTask only, else null),
                "task_group" (id of the innermost group holding the task, or null),
                "expand" (a mapped task's expansion, see ``hareflow.common.dag.mapping``, else null),
                "is_setup", "is_teardown", "on_failure_fail_dagrun" (the last three absent when
                false)}],
     "task_groups": [{"group_id", "label" (the name given, without parents' prefix),
                      "parent" (group id|null), "tooltip"}] (parents before their children),
     "asset_schedule" (an asset expression, see ``hareflow.common.dag.assets``; absent when the
     DAG is not scheduled on assets), "assets" ([{"uri", "name", "extra"}]: every asset the DAG
     names; absent when none),
     "triggers": [event triggers, see ``hareflow.common.dag.triggers``] (absent when none)}

A task's "outlets" (the URIs its successes record events for) is absent when it has none.

``task_group``, ``task_groups`` and ``expand`` came later: a stored DAG without them reads as
ungrouped and unmapped.

Tasks are listed in topological order. ``SerializedDag.from_dict(d).to_dict() == d`` for any ``d``
produced by ``serialize_dag``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from hareflow.common.dag.mapping import ExpandSpec
from hareflow.common.dag.priority import priority_weights
from hareflow.common.dag.schedule import DagRunInfo, next_dagrun_info

if TYPE_CHECKING:
    from hareflow.common.dag.dag import DAG
    from hareflow.common.dag.task import BaseTask
    from hareflow.common.dag.task_group import TaskGroup

FORMAT_VERSION = 1


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_date(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


_ROLE_FIELDS = ("is_setup", "is_teardown", "on_failure_fail_dagrun")


@dataclass(frozen=True)
class SerializedTask:
    """One task as the scheduler sees it: identity, dependencies and execution settings."""

    task_id: str
    task_type: str
    upstream: tuple[str, ...]
    trigger_rule: str
    retries: int
    retry_delay: float
    retry_exponential_backoff: bool
    max_retry_delay: float | None
    execution_timeout: float | None
    queue: str
    priority: int
    pool: str | None
    pool_slots: int
    input_tasks: tuple[str, ...]
    lineno: int | None
    doc: str | None
    bash_command: str | None = None
    task_group: str | None = None
    expand: dict[str, Any] | None = None
    is_setup: bool = False
    is_teardown: bool = False
    on_failure_fail_dagrun: bool = False
    priority_weight: int | None = None
    weight_rule: str = "absolute"
    depends_on_past: bool = False
    outlets: tuple[str, ...] = ()  # URIs of the assets a success records an event for
    doc_md: str | None = None  # Markdown, rendered (sanitized) on the task pages

    @property
    def max_tries(self) -> int:
        return self.retries + 1

    @property
    def is_mapped(self) -> bool:
        return self.expand is not None

    @property
    def expand_spec(self) -> ExpandSpec | None:
        return None if self.expand is None else ExpandSpec.from_dict(self.expand)

    @classmethod
    def from_task(cls, task: BaseTask, priority: int | None = None) -> SerializedTask:
        """``priority`` is the effective priority (``common.dag.priority``); the task's own by default."""
        extra = task.serialize_extra()
        return cls(
            task_id=task.task_id,
            task_type=task.task_type,
            upstream=tuple(sorted(task.upstream_task_ids)),
            trigger_rule=task.trigger_rule.value,
            retries=task.retries,
            retry_delay=task.retry_delay.total_seconds(),
            retry_exponential_backoff=task.retry_exponential_backoff,
            max_retry_delay=_seconds(task.max_retry_delay),
            execution_timeout=_seconds(task.execution_timeout),
            queue=task.queue,
            priority=task.priority if priority is None else priority,
            pool=task.pool,
            pool_slots=task.pool_slots,
            input_tasks=tuple(sorted(task.input_task_ids)),
            lineno=task.lineno,
            doc=task.doc,
            bash_command=extra.get("bash_command"),
            task_group=task.task_group.group_id if task.task_group is not None else None,
            expand=spec.to_dict() if (spec := getattr(task, "expand_spec", None)) is not None else None,
            is_setup=task.is_setup,
            is_teardown=task.is_teardown,
            on_failure_fail_dagrun=task.on_failure_fail_dagrun,
            priority_weight=task.priority,
            weight_rule=task.weight_rule,
            depends_on_past=task.depends_on_past,
            outlets=tuple(a.uri for a in getattr(task, "outlets", ())),
            doc_md=getattr(task, "doc_md", None),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SerializedTask:
        return cls(
            task_id=data["task_id"],
            task_type=data["task_type"],
            upstream=tuple(data.get("upstream") or ()),
            trigger_rule=data["trigger_rule"],
            retries=data["retries"],
            retry_delay=data["retry_delay"],
            retry_exponential_backoff=data["retry_exponential_backoff"],
            max_retry_delay=data.get("max_retry_delay"),
            execution_timeout=data.get("execution_timeout"),
            queue=data["queue"],
            priority=data["priority"],
            pool=data.get("pool"),
            pool_slots=data["pool_slots"],
            input_tasks=tuple(data.get("input_tasks") or ()),
            lineno=data.get("lineno"),
            doc=data.get("doc"),
            bash_command=data.get("bash_command"),
            task_group=data.get("task_group"),
            expand=data.get("expand"),
            is_setup=bool(data.get("is_setup", False)),
            is_teardown=bool(data.get("is_teardown", False)),
            on_failure_fail_dagrun=bool(data.get("on_failure_fail_dagrun", False)),
            priority_weight=data.get("priority_weight"),
            weight_rule=data.get("weight_rule", "absolute"),
            depends_on_past=bool(data.get("depends_on_past", False)),
            outlets=tuple(data.get("outlets") or ()),
            doc_md=data.get("doc_md"),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["upstream"] = list(self.upstream)
        out["input_tasks"] = list(self.input_tasks)
        if self.outlets:
            out["outlets"] = list(self.outlets)
        else:
            del out["outlets"]
        if out["doc_md"] is None:  # absent when unset: the form (and hash) of other DAGs is unchanged
            del out["doc_md"]
        for role in _ROLE_FIELDS:  # absent when false: the form (and hash) of other DAGs is unchanged
            if not out[role]:
                del out[role]
        return out


@dataclass(frozen=True)
class SerializedTaskGroup:
    """A task group as the UI draws it: its id, its own name, its parent group and tooltip."""

    group_id: str
    label: str
    parent: str | None
    tooltip: str

    @classmethod
    def from_group(cls, group: TaskGroup) -> SerializedTaskGroup:
        parent = group.parent_group.group_id if group.parent_group is not None else None
        return cls(group_id=group.group_id, label=group.label, parent=parent, tooltip=group.tooltip)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SerializedTaskGroup:
        return cls(
            group_id=data["group_id"],
            label=data.get("label") or data["group_id"],
            parent=data.get("parent"),
            tooltip=data.get("tooltip") or "",
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SerializedDag:
    """A DAG as stored in the metastore; the scheduler and web server work from this alone."""

    dag_id: str
    fileloc: str
    lineno: int | None
    schedule: str | None
    timezone: str
    start_date: datetime | None
    end_date: datetime | None
    catchup: bool
    max_active_runs: int
    max_active_tasks: int
    params: dict[str, Any]
    tags: tuple[str, ...]
    owner: str
    description: str | None
    doc_md: str | None
    tasks: tuple[SerializedTask, ...]
    version: int = field(default=FORMAT_VERSION)
    task_groups: tuple[SerializedTaskGroup, ...] = ()
    timetable: dict[str, Any] | None = None
    dagrun_timeout: float | None = None
    callbacks: tuple[str, ...] = ()
    #: the asset expression the DAG is scheduled on (``common.dag.assets``), None if it is not
    asset_schedule: dict[str, Any] | None = None
    #: every asset the DAG names (outlets and schedule): {"uri", "name", "extra"}
    assets: tuple[dict[str, Any], ...] = ()
    #: Event triggers, as ``common.dag.triggers`` serializes them.
    triggers: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SerializedDag:
        """Decode the stored form; raise ValueError for an unknown format version."""
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported serialized DAG version {version!r} (expected {FORMAT_VERSION})")
        return cls(
            version=version,
            dag_id=data["dag_id"],
            fileloc=data["fileloc"],
            lineno=data.get("lineno"),
            schedule=data.get("schedule"),
            timezone=data.get("timezone") or "UTC",
            start_date=_parse_date(data.get("start_date")),
            end_date=_parse_date(data.get("end_date")),
            catchup=bool(data.get("catchup", False)),
            max_active_runs=data["max_active_runs"],
            max_active_tasks=data["max_active_tasks"],
            params=dict(data.get("params") or {}),
            tags=tuple(data.get("tags") or ()),
            owner=data.get("owner", "hareflow"),
            description=data.get("description"),
            doc_md=data.get("doc_md"),
            tasks=tuple(SerializedTask.from_dict(t) for t in data.get("tasks", ())),
            task_groups=tuple(SerializedTaskGroup.from_dict(g) for g in data.get("task_groups") or ()),
            timetable=data.get("timetable"),
            dagrun_timeout=data.get("dagrun_timeout"),
            callbacks=tuple(data.get("callbacks") or ()),
            asset_schedule=data.get("asset_schedule"),
            assets=tuple(data.get("assets") or ()),
            triggers=tuple(dict(t) for t in data.get("triggers") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "dag_id": self.dag_id,
            "fileloc": self.fileloc,
            "lineno": self.lineno,
            "schedule": self.schedule,
            "timetable": self.timetable,
            "timezone": self.timezone,
            "start_date": _iso(self.start_date),
            "end_date": _iso(self.end_date),
            "catchup": self.catchup,
            "max_active_runs": self.max_active_runs,
            "max_active_tasks": self.max_active_tasks,
            "dagrun_timeout": self.dagrun_timeout,
            "callbacks": list(self.callbacks),
            "params": dict(self.params),
            "tags": list(self.tags),
            "owner": self.owner,
            "description": self.description,
            "doc_md": self.doc_md,
            "tasks": [t.to_dict() for t in self.tasks],
            "task_groups": [g.to_dict() for g in self.task_groups],
        }
        # Absent when unused: the form (and hash) of DAGs without assets is unchanged.
        if self.asset_schedule is not None:
            out["asset_schedule"] = self.asset_schedule
        if self.assets:
            out["assets"] = [dict(a) for a in self.assets]
        if self.triggers:  # absent when none, so DAGs without triggers keep their stored hash
            out["triggers"] = [dict(t) for t in self.triggers]
        return out

    @cached_property
    def task_dict(self) -> dict[str, SerializedTask]:
        return {t.task_id: t for t in self.tasks}

    @cached_property
    def task_position(self) -> dict[str, int]:
        """Task id -> its index in topological order (the scheduler's tie-breaker)."""
        return {t.task_id: i for i, t in enumerate(self.tasks)}

    @property
    def task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks]

    def get_task(self, task_id: str) -> SerializedTask:
        """Return the task called ``task_id``; raise KeyError if there is none."""
        return self.task_dict[task_id]

    def upstream_map(self) -> dict[str, tuple[str, ...]]:
        """Task id -> ids of its upstream tasks."""
        return {t.task_id: t.upstream for t in self.tasks}

    def downstream_map(self) -> dict[str, tuple[str, ...]]:
        """Task id -> sorted ids of its downstream tasks (every task has an entry)."""
        down: dict[str, list[str]] = {t.task_id: [] for t in self.tasks}
        for t in self.tasks:
            for up in t.upstream:
                down[up].append(t.task_id)
        return {tid: tuple(sorted(ids)) for tid, ids in down.items()}

    @cached_property
    def task_group_dict(self) -> dict[str, SerializedTaskGroup]:
        return {g.group_id: g for g in self.task_groups}

    def group_path(self, task_id: str) -> list[str]:
        """Ids of the groups holding ``task_id``, outermost first (empty for an ungrouped task)."""
        path: list[str] = []
        group_id = self.task_dict[task_id].task_group
        while group_id is not None and group_id in self.task_group_dict and group_id not in path:
            path.append(group_id)
            group_id = self.task_group_dict[group_id].parent
        return path[::-1]

    @property
    def roots(self) -> list[SerializedTask]:
        return [t for t in self.tasks if not t.upstream]

    def next_dagrun_info(self, last_logical_date: datetime | None, now: datetime) -> DagRunInfo | None:
        """The run after ``last_logical_date`` under this DAG's schedule (``schedule.next_dagrun_info``)."""
        return next_dagrun_info(
            schedule=self.timetable or self.schedule,
            timezone=self.timezone,
            start_date=self.start_date,
            end_date=self.end_date,
            catchup=self.catchup,
            last_logical_date=last_logical_date,
            now=now,
        )


def serialize_dag(dag: DAG) -> dict[str, Any]:
    """The JSON-able, version-1 form of ``dag`` (see the module docstring)."""
    weights = priority_weights(dag)
    return SerializedDag(
        dag_id=dag.dag_id,
        fileloc=dag.fileloc or "",
        lineno=dag.lineno,
        schedule=dag.schedule_summary,
        timetable=dag.timetable,
        dagrun_timeout=_seconds(dag.dagrun_timeout),
        callbacks=tuple(k for k in ("success", "failure") if getattr(dag, f"on_{k}_callback") is not None),
        triggers=tuple(t.serialize() for t in dag.triggers),
        timezone=dag.timezone_name,
        start_date=dag.start_date,
        end_date=dag.end_date,
        catchup=dag.catchup,
        max_active_runs=dag.max_active_runs,
        max_active_tasks=dag.max_active_tasks,
        params=dict(dag.params),
        tags=tuple(dag.tags),
        owner=dag.owner,
        description=dag.description,
        doc_md=dag.doc_md,
        tasks=tuple(SerializedTask.from_task(t, weights[t.task_id]) for t in dag.topological_order()),
        task_groups=tuple(SerializedTaskGroup.from_group(g) for g in dag.task_groups.values()),
        asset_schedule=dag.asset_schedule.to_dict() if dag.asset_schedule is not None else None,
        assets=tuple(a.describe_self() for a in dag.assets()),
    ).to_dict()


def dag_hash(serialized: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a serialized DAG: equal hashes mean nothing changed."""
    canonical = json.dumps(serialized, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
