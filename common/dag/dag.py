"""The DAG: a named, scheduled graph of tasks, and the "current DAG" used by ``with DAG(...)``.

Dependencies are checked as they are declared, so a cycle is reported at the ``>>`` that closes it.
DAGs created while a file is being loaded are recorded by a collector, because ``with DAG(...)`` is
usually not assigned to a variable.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as dt_timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hareflow.common.dag.assets import (
    Asset,
    AssetError,
    AssetExpression,
    AssetOrTimeSchedule,
    as_expression,
    is_asset_schedule,
)
from hareflow.common.dag.callbacks import Callbacks, check_callbacks
from hareflow.common.dag.errors import DagDefinitionError, user_location
from hareflow.common.dag.schedule import CONTINUOUS, validate_schedule
from hareflow.common.dag.settings import check_id, normalize_settings
from hareflow.common.dag.timetables import Timetable, registered_timetables, timetable_spec
from hareflow.common.dag.triggers import Trigger, check_triggers

if TYPE_CHECKING:
    from hareflow.common.dag.task import BaseTask
    from hareflow.common.dag.task_group import TaskGroup

# ``DAG.test()`` runs the DAG with the scheduler's decisions and the worker's task body, which live
# above this package; the ``hareflow`` package (always imported before this one) plugs that runner in.
_test_runner: list[Callable[..., Any]] = []


def set_test_runner(runner: Callable[..., Any]) -> None:
    """Install what ``DAG.test()`` calls (done once, by the ``hareflow`` package)."""
    _test_runner[:] = [runner]


_current_dags: ContextVar[tuple[DAG, ...]] = ContextVar("hareflow_current_dags", default=())
_collector: ContextVar[list[DAG] | None] = ContextVar("hareflow_dag_collector", default=None)


def current_dag() -> DAG | None:
    """Return the DAG of the innermost active ``with DAG(...)`` block, if any."""
    stack = _current_dags.get()
    return stack[-1] if stack else None


@contextmanager
def collect_dags() -> Iterator[list[DAG]]:
    """Record every DAG created inside the block (used while importing a DAG file)."""
    dags: list[DAG] = []
    token = _collector.set(dags)
    try:
        yield dags
    finally:
        _collector.reset(token)


def _timezone_name(tz: tzinfo, when: datetime) -> str:
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)
    if isinstance(key, str):
        return key
    offset = tz.utcoffset(when)
    if offset is None or offset == timedelta(0):
        return "UTC"
    hours, rest = divmod(offset, timedelta(hours=1))
    if rest or not isinstance(tz, dt_timezone):
        raise DagDefinitionError.here(
            f"cannot tell the time zone of {when.isoformat()}; pass timezone='Area/City' to the DAG"
        )
    # POSIX-style Etc zones have inverted signs: UTC+2 is "Etc/GMT-2".
    return f"Etc/GMT{-hours:+d}"


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DagDefinitionError.here(f"{what} must be JSON-serialisable: {exc}") from None


class DAG:
    """A workflow: tasks, their dependencies, a schedule and run-level limits.

    Use it as a context manager so tasks created inside attach to it, or pass ``dag=`` to tasks.
    """

    _hareflow_authoring_object = True

    def __init__(
        self,
        dag_id: str,
        *,
        schedule: Any = None,  # cron str, timedelta, Timetable, asset expression or None
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        catchup: bool = False,
        timezone: str | tzinfo | None = None,
        default_args: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        max_active_runs: int = 16,
        max_active_tasks: int = 16,
        tags: Sequence[str] = (),
        owner: str | None = None,
        description: str | None = None,
        doc_md: str | None = None,
        dagrun_timeout: timedelta | float | None = None,
        on_success_callback: Callbacks | None = None,
        on_failure_callback: Callbacks | None = None,
        trigger: Trigger | Sequence[Trigger] | None = None,
    ) -> None:
        self.dag_id = check_id(dag_id, "dag_id")
        self.fileloc, self.lineno = user_location()
        self.schedule = schedule
        #: the asset condition the DAG runs on (``common.dag.assets``), None when it has none
        self.asset_schedule: AssetExpression | None = None
        time_schedule = self._split_asset_schedule(schedule)
        self.schedule_summary, self.timetable = self._check_schedule(time_schedule)
        self.timezone = self._resolve_timezone(timezone, start_date)
        self.timezone_name: str = self.timezone.key
        self.start_date = self._aware(start_date)
        self.end_date = self._aware(end_date)
        if time_schedule is not None and self.start_date is None:
            raise DagDefinitionError.here(f"DAG '{dag_id}' has schedule {schedule!r} but no start_date")
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise DagDefinitionError.here(f"DAG '{dag_id}': end_date is before start_date")
        if not isinstance(catchup, bool):
            raise DagDefinitionError.here(f"DAG '{dag_id}': catchup must be True or False")
        self.catchup = catchup
        self.default_args = normalize_settings(dict(default_args or {}), f"default_args of DAG '{dag_id}'")
        if params is not None and not isinstance(params, Mapping):
            raise DagDefinitionError.here(f"DAG '{dag_id}': params must be a dict")
        self.params: dict[str, Any] = dict(params or {})
        _check_json(self.params, f"params of DAG '{dag_id}'")
        for name, value in (("max_active_runs", max_active_runs), ("max_active_tasks", max_active_tasks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DagDefinitionError.here(f"DAG '{dag_id}': {name} must be an integer >= 1")
        self.max_active_runs = max_active_runs
        self.max_active_tasks = max_active_tasks
        if schedule == CONTINUOUS and max_active_runs != 1:
            raise DagDefinitionError.here(
                f"DAG '{dag_id}': schedule '@continuous' needs max_active_runs=1, not {max_active_runs}"
            )
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise DagDefinitionError.here(f"DAG '{dag_id}': tags must be a list of strings")
        self.tags: list[str] = list(tags)
        self.owner = self._resolve_owner(owner)
        self.description = description
        self.doc_md = doc_md
        self.dagrun_timeout = self._check_dagrun_timeout(dagrun_timeout)
        where = f"DAG '{dag_id}'"
        self.on_success_callback = check_callbacks(on_success_callback, "on_success_callback", where)
        self.on_failure_callback = check_callbacks(on_failure_callback, "on_failure_callback", where)
        self.triggers = check_triggers(trigger, dag_id)
        self.task_dict: dict[str, BaseTask] = {}
        self.task_groups: dict[str, TaskGroup] = {}
        self._order: dict[str, int] = {}
        self._tokens: list[Token[tuple[DAG, ...]]] = []
        collected = _collector.get()
        if collected is not None:
            if any(d.dag_id == dag_id for d in collected):
                raise DagDefinitionError.here(f"duplicate dag_id '{dag_id}' in this file")
            collected.append(self)

    # -- construction helpers -------------------------------------------------------------------

    def _split_asset_schedule(self, schedule: object) -> object:
        """Keep the asset part of ``schedule`` in ``asset_schedule``; return its time part."""
        if not is_asset_schedule(schedule):
            return schedule
        try:
            if isinstance(schedule, AssetOrTimeSchedule):
                self.asset_schedule = schedule.assets
                if is_asset_schedule(schedule.timetable):
                    raise DagDefinitionError.here(
                        "the timetable of AssetOrTimeSchedule must be a time schedule"
                    )
                return schedule.timetable
            self.asset_schedule = as_expression(schedule)
        except AssetError as exc:
            raise DagDefinitionError.here(f"DAG '{self.dag_id}': {exc.message}") from None
        return None

    def assets(self) -> list[Asset]:
        """Every asset the DAG names: its tasks' outlets, then its schedule's (each once)."""
        found: dict[str, Asset] = {}
        for t in self.task_dict.values():
            for a in getattr(t, "outlets", ()):
                found.setdefault(a.uri, a)
        if self.asset_schedule is not None:
            for a in self.asset_schedule.iter_assets():
                found.setdefault(a.uri, a)
        return list(found.values())

    def _check_schedule(self, schedule: object) -> tuple[str | None, dict[str, Any] | None]:
        """The schedule's display text and, for a timedelta or Timetable, its serialized form."""
        if isinstance(schedule, timedelta):
            if schedule <= timedelta(0):
                raise DagDefinitionError.here(f"DAG '{self.dag_id}': a timedelta schedule must be positive")
            return str(schedule), timetable_spec(schedule)
        if isinstance(schedule, Timetable):
            return schedule.describe(), self._check_timetable(schedule)
        try:
            validate_schedule(schedule)
        except ValueError as exc:
            raise DagDefinitionError.here(f"DAG '{self.dag_id}': {exc}") from None
        return schedule if isinstance(schedule, str) else None, None

    def _check_timetable(self, timetable: Timetable) -> dict[str, Any]:
        """A custom timetable must be registered by a plugin, since the scheduler rebuilds it by name."""
        name = type(timetable).name
        registered = registered_timetables()
        if not name or registered.get(name) is not type(timetable):
            known = ", ".join(sorted(registered))
            raise DagDefinitionError.here(
                f"DAG '{self.dag_id}': timetable {type(timetable).__name__} (name {name!r}) is not "
                f"registered by an installed plugin, so the scheduler could not rebuild it; register "
                f"it in the 'hareflow.plugins' entry-point group (registered timetables: {known})"
            )
        spec = timetable.serialize()
        _check_json(spec["params"], f"params of timetable {name!r} of DAG '{self.dag_id}'")
        return spec

    def _check_dagrun_timeout(self, value: object) -> timedelta | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
            raise DagDefinitionError.here(
                f"DAG '{self.dag_id}': dagrun_timeout must be a timedelta or a number of seconds"
            )
        delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
        if delta <= timedelta(0):
            raise DagDefinitionError.here(f"DAG '{self.dag_id}': dagrun_timeout must be positive")
        return delta

    def _resolve_owner(self, owner: object) -> str:
        """``owner=`` of the DAG, else ``default_args["owner"]``, else "hareflow" (as Airflow's UI shows)."""
        if owner is None:
            owner = self.default_args.get("owner") or "hareflow"
        if not isinstance(owner, str) or not owner.strip() or len(owner) > 100:
            raise DagDefinitionError.here(
                f"DAG '{self.dag_id}': owner must be a non-empty string of at most 100 characters"
            )
        return owner

    def _resolve_timezone(self, timezone: str | tzinfo | None, start_date: datetime | None) -> ZoneInfo:
        if timezone is None and start_date is not None and start_date.tzinfo is not None:
            timezone = _timezone_name(start_date.tzinfo, start_date)
        if timezone is None:
            return ZoneInfo("UTC")
        if isinstance(timezone, ZoneInfo):
            return timezone
        name = timezone if isinstance(timezone, str) else _timezone_name(timezone, datetime.now(UTC))
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise DagDefinitionError.here(f"DAG '{self.dag_id}': unknown time zone {name!r}") from None

    def _aware(self, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise DagDefinitionError.here(f"DAG '{self.dag_id}': dates must be datetime objects")
        if value.tzinfo is None:
            return value.replace(tzinfo=self.timezone)
        return value.astimezone(self.timezone)

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> DAG:
        self._tokens.append(_current_dags.set((*_current_dags.get(), self)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _current_dags.reset(self._tokens.pop())

    # -- tasks and edges ------------------------------------------------------------------------

    @property
    def tasks(self) -> list[BaseTask]:
        """Tasks in creation order."""
        return list(self.task_dict.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.task_dict)

    def has_task(self, task_id: str) -> bool:
        return task_id in self.task_dict

    def get_task(self, task_id: str) -> BaseTask:
        """Return the task called ``task_id``; raise KeyError if there is none."""
        return self.task_dict[task_id]

    def test(self, *, conf: Mapping[str, Any] | None = None, logical_date: datetime | None = None) -> Any:
        """Run the whole DAG here, in this process, printing each task's log and result (Airflow's
        ``dag.test()``; the CLI's ``hareflow dags test``). Return the run's outcome."""
        return _test_runner[0](self, conf=conf, logical_date=logical_date)

    def unique_task_id(self, base: str) -> str:
        """Return ``base`` if free, else ``base__1``, ``base__2``, ... (for repeated ``@task`` calls)."""
        if base not in self.task_dict:
            return base
        n = 1
        while f"{base}__{n}" in self.task_dict:
            n += 1
        return f"{base}__{n}"

    def add_task(self, task: BaseTask) -> None:
        """Attach ``task``; its id must be unique within this DAG."""
        if task.task_id in self.task_dict:
            raise DagDefinitionError.here(f"duplicate task id '{task.task_id}' in DAG '{self.dag_id}'")
        self._order[task.task_id] = len(self._order)
        self.task_dict[task.task_id] = task

    def add_dependency(self, upstream: BaseTask, downstream: BaseTask) -> None:
        """Record ``upstream >> downstream``, refusing edges across DAGs and edges closing a cycle."""
        if upstream.dag is not self or downstream.dag is not self:
            raise DagDefinitionError.here(
                f"cannot link task '{upstream.task_id}' (DAG '{upstream.dag.dag_id}') and task "
                f"'{downstream.task_id}' (DAG '{downstream.dag.dag_id}'): tasks of different DAGs"
            )
        if downstream.task_id in upstream.downstream_task_ids:
            return
        path = self._path(downstream.task_id, upstream.task_id)
        if path is not None:
            cycle = " -> ".join([upstream.task_id, *path])
            raise DagDefinitionError.here(
                f"dependency '{upstream.task_id}' >> '{downstream.task_id}' creates a cycle in DAG "
                f"'{self.dag_id}': {cycle}"
            )
        upstream.downstream_task_ids.add(downstream.task_id)
        downstream.upstream_task_ids.add(upstream.task_id)

    def _path(self, source: str, target: str) -> list[str] | None:
        """Return a downstream path from ``source`` to ``target`` (both included), if one exists."""
        parents: dict[str, str | None] = {source: None}
        stack = [source]
        while stack:
            node = stack.pop()
            if node == target:
                path = [node]
                while (parent := parents[path[-1]]) is not None:
                    path.append(parent)
                return path[::-1]
            for child in sorted(self.task_dict[node].downstream_task_ids, key=self._order.__getitem__):
                if child not in parents:
                    parents[child] = node
                    stack.append(child)
        return None

    def topological_order(self) -> list[BaseTask]:
        """Tasks ordered so every task comes after its upstream tasks (ties keep creation order)."""
        remaining = {tid: len(t.upstream_task_ids) for tid, t in self.task_dict.items()}
        ready = [(self._order[tid], tid) for tid, n in remaining.items() if n == 0]
        heapq.heapify(ready)
        ordered: list[BaseTask] = []
        while ready:
            _, tid = heapq.heappop(ready)
            task = self.task_dict[tid]
            ordered.append(task)
            for child in task.downstream_task_ids:
                remaining[child] -= 1
                if remaining[child] == 0:
                    heapq.heappush(ready, (self._order[child], child))
        return ordered

    @property
    def roots(self) -> list[BaseTask]:
        return [t for t in self.task_dict.values() if not t.upstream_task_ids]

    @property
    def leaves(self) -> list[BaseTask]:
        return [t for t in self.task_dict.values() if not t.downstream_task_ids]

    def __repr__(self) -> str:
        return f"<DAG {self.dag_id!r} tasks={len(self.task_dict)} schedule={self.schedule!r}>"
