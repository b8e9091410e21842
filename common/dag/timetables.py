"""Timetables: schedules that are not cron strings (fixed ``timedelta`` intervals and plugin timetables).

A DAG's ``schedule`` may be a cron string or preset (``common.dag.schedule``), a ``timedelta`` or an
instance of a ``Timetable`` subclass. The scheduler never imports DAG files, so a timetable must be
rebuildable from its serialized form alone: ``{"name": <registered name>, "params": <JSON object>}``.
Built-in timetables (``delta``) are always known; a custom one is registered by a plugin (the
``hareflow.plugins`` entry-point group, see ``common.dag.plugins``), and the scheduler looks its name
up in that registry. A DAG file using a timetable class no plugin registers is refused at parse time;
a serialized DAG naming an unknown timetable raises ``UnknownTimetable``.

Writing one::

    class EveryTwoDays(Timetable):
        name = "every_two_days"            # the registry key, unique among installed plugins

        def __init__(self, hour: int = 0) -> None:
            self.hour = hour

        def params(self) -> dict[str, Any]:    # JSON; ``cls(**params)`` rebuilds the instance
            return {"hour": self.hour}

        def next_dagrun_info(self, *, last_logical_date, start_date, end_date, catchup, tz, now):
            ...                                 # a DagRunInfo, or None when there are no more runs

        def infer_manual_data_interval(self, *, run_after, tz):
            ...                                 # (start, end) of a manually triggered run

All datetimes a timetable receives and returns are timezone-aware; ``tz`` is the DAG's time zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from hareflow.common.dag.schedule import DagRunInfo


class UnknownTimetable(LookupError):
    """A serialized DAG names a timetable that neither hareflow nor any installed plugin provides."""


class Timetable:
    """Base class of timetables: subclasses set ``name`` and implement the two methods below."""

    name: ClassVar[str] = ""
    #: A short text the UI and CLI show as the DAG's schedule (defaults to the name).
    summary: str = ""

    def params(self) -> dict[str, Any]:
        """JSON-serialisable keyword arguments that rebuild this timetable (``cls(**params)``)."""
        return {}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Timetable:
        return cls(**dict(params))

    def next_dagrun_info(
        self,
        *,
        last_logical_date: datetime | None,
        start_date: datetime | None,
        end_date: datetime | None,
        catchup: bool,
        tz: ZoneInfo,
        now: datetime,
    ) -> DagRunInfo | None:
        """The run after ``last_logical_date`` (the first run when None), or None when there is none."""
        raise NotImplementedError(f"{type(self).__name__} must implement next_dagrun_info")

    def infer_manual_data_interval(self, *, run_after: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """Data interval of a run triggered by hand at ``run_after`` (by default an empty one)."""
        return run_after, run_after

    def describe(self) -> str:
        return self.summary or self.name

    def serialize(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params()}


class DeltaTimetable(Timetable):
    """Fixed intervals of ``delta``, as Airflow's ``DeltaDataIntervalTimetable``.

    With catch-up, intervals are anchored at ``start_date`` (start, start + delta, ...). Without it,
    the first run covers the ``delta`` that ends now, and later runs follow from there, as in Airflow.
    """

    name = "delta"

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("a timedelta schedule must be positive")
        self.delta = timedelta(seconds=seconds)

    def params(self) -> dict[str, Any]:
        return {"seconds": self.delta.total_seconds()}

    def describe(self) -> str:
        return str(self.delta)

    def next_dagrun_info(
        self,
        *,
        last_logical_date: datetime | None,
        start_date: datetime | None,
        end_date: datetime | None,
        catchup: bool,
        tz: ZoneInfo,
        now: datetime,
    ) -> DagRunInfo | None:
        earliest = start_date
        if not catchup:
            latest_start = now - self.delta
            earliest = latest_start if earliest is None else max(earliest, latest_start)
        if last_logical_date is None:
            if earliest is None:
                return None
            start = earliest
        else:
            start = last_logical_date + self.delta
            if earliest is not None:
                start = max(start, earliest)
        if end_date is not None and start > end_date:
            return None
        start = start.astimezone(UTC)
        end = start + self.delta
        return DagRunInfo(logical_date=start, data_interval_start=start, data_interval_end=end, run_after=end)

    def infer_manual_data_interval(self, *, run_after: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
        return run_after - self.delta, run_after

    def first_on_grid(self, low: datetime, anchor: datetime | None) -> datetime:
        """The first instant at or after ``low`` on the grid anchored at ``anchor`` (or at ``low``)."""
        if anchor is None:
            return low
        steps = max(0, -(-(low - anchor) // self.delta))  # ceiling division of timedeltas
        return (anchor + steps * self.delta).astimezone(UTC)


_BUILTIN: dict[str, type[Timetable]] = {DeltaTimetable.name: DeltaTimetable}


def registered_timetables() -> dict[str, type[Timetable]]:
    """Built-in timetables and those plugins register, by name."""
    from hareflow.common.dag.plugins import load_timetables

    return {**load_timetables(), **_BUILTIN}


def timetable_spec(schedule: Timetable | timedelta) -> dict[str, Any]:
    """The serialized form of a non-cron schedule."""
    if isinstance(schedule, timedelta):
        return DeltaTimetable(schedule.total_seconds()).serialize()
    return schedule.serialize()


def resolve_timetable(spec: Mapping[str, Any]) -> Timetable:
    """Rebuild a timetable from its serialized form; ``UnknownTimetable`` when its name is not known."""
    name = spec.get("name")
    cls = _BUILTIN.get(str(name))
    if cls is None:
        cls = registered_timetables().get(str(name))
    if cls is None:
        known = ", ".join(sorted(registered_timetables()))
        raise UnknownTimetable(
            f"unknown timetable {name!r}: no installed plugin registers it (known timetables: {known})"
        )
    return cls.from_params(spec.get("params") or {})
