"""Which runs a schedule asks for, and when: pure functions over datetimes.

Data-interval semantics: a scheduled run covers ``[data_interval_start, data_interval_end)``, its
logical date is the interval's start and it becomes due once the interval has ended. Cron
expressions are evaluated on the wall clock of the DAG's time zone, so "0 2 * * *" fires at 02:00
local time all year and the intervals around a DST change are 23 or 25 hours long. As Airflow's cron
timetable (which localises a naive cron time with ``fold=1``):

- a wall time that does not exist (spring forward) moves forward by the length of the gap: in
  Europe/Berlin, "30 2 * * *" fires at 03:30 CEST on the last Sunday of March;
- a wall time that occurs twice (fall back) fires once, at its second occurrence: "30 2 * * *"
  fires at 02:30 CET (00:30 UTC), not 02:30 CEST;
- crons that fire every hour ("0 * * * *", "*/15 * * * *") fire in both repeated hours, as
  Airflow's fixed-delta arithmetic for them does.

All returned datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

if TYPE_CHECKING:
    from hareflow.common.dag.timetables import Timetable

ONCE = "@once"
PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
#: A new run as soon as the previous one has finished (the DAG must have max_active_runs=1).
CONTINUOUS = "@continuous"
#: A schedule as the scheduler receives it: a cron string or preset, or a serialized timetable.
ScheduleSpec = str | Mapping[str, Any] | None
# Wider than any DST shift, so a search window around a transition sees every candidate.
_MARGIN = timedelta(hours=3)
_TINY = timedelta(microseconds=1)
_MAX_STEPS = 100_000


@dataclass(frozen=True)
class DagRunInfo:
    """One scheduled run: its logical date, data interval and the earliest time it may start."""

    logical_date: datetime
    data_interval_start: datetime
    data_interval_end: datetime
    run_after: datetime


def validate_schedule(schedule: object) -> None:
    """Accept None, "@once", "@continuous", a preset or a five-field cron; raise ValueError otherwise.

    ``timedelta`` and ``Timetable`` schedules are checked by the DAG (``common.dag.timetables``).
    """
    if schedule is None or schedule in (ONCE, CONTINUOUS) or schedule in PRESETS:
        return
    if not isinstance(schedule, str):
        raise ValueError(
            "schedule must be a cron string, a preset, a timedelta, a Timetable or None, "
            f"not {type(schedule).__name__}"
        )
    presets = ", ".join([ONCE, CONTINUOUS, *PRESETS])
    if schedule.startswith("@"):
        raise ValueError(f"unknown schedule preset {schedule!r}; valid presets: {presets}")
    if len(schedule.split()) != 5:
        raise ValueError(
            f"invalid cron expression {schedule!r}: expected 5 fields (minute hour day month weekday) "
            f"or one of {presets}"
        )
    if not croniter.is_valid(schedule):
        raise ValueError(f"invalid cron expression {schedule!r}")
    try:
        croniter(schedule, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {schedule!r} never fires") from None


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _zone(timezone: str | ZoneInfo) -> ZoneInfo:
    return timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)


class _Cron:
    """A cron expression evaluated on the wall clock of one time zone."""

    def __init__(self, expression: str, tz: ZoneInfo) -> None:
        self.expression = PRESETS.get(expression, expression)
        self.tz = tz
        self.every_hour = self.expression.split()[1] == "*"
        self._iter = croniter(self.expression, datetime(2000, 1, 1))

    def _naive_next(self, naive: datetime) -> datetime:
        self._iter.set_current(naive, force=True)
        result: datetime = self._iter.get_next(datetime)
        return result

    def _naive_prev(self, naive: datetime) -> datetime:
        self._iter.set_current(naive, force=True)
        result: datetime = self._iter.get_prev(datetime)
        return result

    def _regular(self, naive: datetime) -> bool:
        """True when the wall time exists exactly once (not in a DST gap or fold)."""
        return (
            naive.replace(tzinfo=self.tz, fold=0).utcoffset()
            == naive.replace(tzinfo=self.tz, fold=1).utcoffset()
        )

    def _instants(self, naive: datetime) -> list[datetime]:
        """The UTC instants at which a firing at wall time ``naive`` happens."""
        first = naive.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        if self._regular(naive):
            return [first]
        if first.astimezone(self.tz).replace(tzinfo=None) != naive:
            return [first]  # in a gap: the offset from before it, so the wall time moves forward
        second = naive.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        return [first, second] if self.every_hour else [second]

    def _local(self, t: datetime) -> tuple[datetime, timedelta | None]:
        local = t.astimezone(self.tz)
        return local.replace(tzinfo=None, fold=0), local.utcoffset()

    def next_after(self, t: datetime) -> datetime:
        """The first firing strictly after instant ``t``."""
        naive, offset = self._local(t)
        candidate = self._naive_next(naive)
        if (
            self._regular(naive)
            and self._regular(candidate)
            and candidate.replace(tzinfo=self.tz).utcoffset() == offset
        ):
            return candidate.replace(tzinfo=self.tz).astimezone(UTC)
        best: datetime | None = None
        found_at: datetime | None = None
        candidate = naive - _MARGIN
        for _ in range(_MAX_STEPS):
            candidate = self._naive_next(candidate)
            if found_at is not None and candidate > found_at + _MARGIN:
                break
            for instant in self._instants(candidate):
                if instant > t and (best is None or instant < best):
                    best = instant
                    if found_at is None:
                        found_at = candidate
        if best is None:
            raise ValueError(f"cron expression {self.expression!r} does not fire after {t.isoformat()}")
        return best

    def prev_before(self, t: datetime) -> datetime:
        """The last firing strictly before instant ``t``."""
        naive, offset = self._local(t)
        candidate = self._naive_prev(naive)
        if (
            self._regular(naive)
            and self._regular(candidate)
            and candidate.replace(tzinfo=self.tz).utcoffset() == offset
        ):
            return candidate.replace(tzinfo=self.tz).astimezone(UTC)
        best: datetime | None = None
        found_at: datetime | None = None
        candidate = naive + _MARGIN
        for _ in range(_MAX_STEPS):
            candidate = self._naive_prev(candidate)
            if found_at is not None and candidate < found_at - _MARGIN:
                break
            for instant in self._instants(candidate):
                if instant < t and (best is None or instant > best):
                    best = instant
                    if found_at is None:
                        found_at = candidate
        if best is None:
            raise ValueError(f"cron expression {self.expression!r} does not fire before {t.isoformat()}")
        return best

    def at_or_after(self, t: datetime) -> datetime:
        return self.next_after(t - _TINY)

    def at_or_before(self, t: datetime) -> datetime:
        return self.prev_before(t + _TINY)

    def latest_complete_start(self, now: datetime) -> datetime:
        """Start of the most recent interval that has fully ended at ``now``."""
        return self.prev_before(self.at_or_before(now))

    def info(self, start: datetime) -> DagRunInfo:
        end = self.next_after(start)
        return DagRunInfo(logical_date=start, data_interval_start=start, data_interval_end=end, run_after=end)


def _timetable(spec: Mapping[str, Any]) -> Timetable:
    from hareflow.common.dag.timetables import resolve_timetable

    return resolve_timetable(spec)


def _continuous(
    start_date: datetime | None, end_date: datetime | None, last: datetime | None, now: datetime
) -> DagRunInfo | None:
    """The next continuous run: due now, covering the time since the previous run's logical date."""
    if start_date is None:
        return None
    start = _as_utc(last) if last is not None else _as_utc(start_date)
    when = max(now, _as_utc(start_date), start + _TINY if last is not None else start)
    if end_date is not None and when > _as_utc(end_date):
        return None
    return DagRunInfo(logical_date=when, data_interval_start=start, data_interval_end=when, run_after=when)


def _once(when: datetime) -> DagRunInfo:
    return DagRunInfo(logical_date=when, data_interval_start=when, data_interval_end=when, run_after=when)


def next_dagrun_info(
    *,
    schedule: ScheduleSpec,
    timezone: str | ZoneInfo,
    start_date: datetime | None,
    end_date: datetime | None,
    catchup: bool,
    last_logical_date: datetime | None,
    now: datetime,
) -> DagRunInfo | None:
    """The run that follows ``last_logical_date`` (or the first run), or None when there is none.

    The returned run may not be due yet: it is due when ``run_after <= now``. Without catch-up, a
    next interval older than the latest complete one is skipped over to that latest one.
    """
    if schedule is None:
        return None
    now = _as_utc(now)
    end_limit = _as_utc(end_date) if end_date is not None else None
    if isinstance(schedule, Mapping):
        return _timetable(schedule).next_dagrun_info(
            last_logical_date=_as_utc(last_logical_date) if last_logical_date is not None else None,
            start_date=_as_utc(start_date) if start_date is not None else None,
            end_date=end_limit,
            catchup=catchup,
            tz=_zone(timezone),
            now=now,
        )
    if schedule == CONTINUOUS:
        return _continuous(start_date, end_date, last_logical_date, now)
    if schedule == ONCE:
        if last_logical_date is not None:
            return None
        when = _as_utc(start_date) if start_date is not None else now
        return None if end_limit is not None and when > end_limit else _once(when)
    cron = _Cron(schedule, _zone(timezone))
    earliest = cron.at_or_after(_as_utc(start_date)) if start_date is not None else None
    if last_logical_date is not None:
        start = cron.next_after(_as_utc(last_logical_date))
        if earliest is not None:
            start = max(start, earliest)
    elif earliest is not None and catchup:
        start = earliest
    else:
        start = cron.latest_complete_start(now)
        if earliest is not None:
            start = max(start, earliest)
    if not catchup:
        start = max(start, cron.latest_complete_start(now))
    if end_limit is not None and start > end_limit:
        return None
    return cron.info(start)


def runs_between(
    *,
    schedule: ScheduleSpec,
    timezone: str | ZoneInfo,
    start: datetime,
    end: datetime,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    max_runs: int = 100_000,
) -> list[DagRunInfo]:
    """Every run whose logical date lies in ``[start, end]`` (and within the DAG's dates), for backfills.

    Raises ValueError when the range holds more than ``max_runs`` runs rather than returning a partial list.
    """
    if schedule is None:
        return []
    low = _as_utc(start)
    high = _as_utc(end)
    if start_date is not None:
        low = max(low, _as_utc(start_date))
    if end_date is not None:
        high = min(high, _as_utc(end_date))
    if schedule == ONCE:
        when = _as_utc(start_date) if start_date is not None else low
        return [_once(when)] if low <= when <= high else []
    if schedule == CONTINUOUS:
        raise ValueError("a @continuous schedule has no intervals to backfill")
    if isinstance(schedule, Mapping):
        anchor = _as_utc(start_date) if start_date is not None else None
        return _timetable_runs(_timetable(schedule), _zone(timezone), low, high, anchor, max_runs)
    cron = _Cron(schedule, _zone(timezone))
    runs: list[DagRunInfo] = []
    current = cron.at_or_after(low)
    while current <= high:
        if len(runs) >= max_runs:
            raise ValueError(f"more than {max_runs} runs between {start.isoformat()} and {end.isoformat()}")
        info = cron.info(current)
        runs.append(info)
        current = info.data_interval_end
    return runs


def _timetable_runs(
    timetable: Timetable,
    tz: ZoneInfo,
    low: datetime,
    high: datetime,
    anchor: datetime | None,
    max_runs: int,
) -> list[DagRunInfo]:
    """Runs of a timetable with logical dates in ``[low, high]``, asked for one after the other.

    A ``timedelta`` schedule keeps its grid anchored at the DAG's start date.
    """
    from hareflow.common.dag.timetables import DeltaTimetable

    runs: list[DagRunInfo] = []
    last: datetime | None = None
    if isinstance(timetable, DeltaTimetable):
        first = timetable.first_on_grid(low, anchor)
        if first > high:
            return []
        low, last = first, first - timetable.delta
    far = datetime.max.replace(tzinfo=UTC) - timedelta(days=400)
    while True:
        info = timetable.next_dagrun_info(
            last_logical_date=last, start_date=low, end_date=high, catchup=True, tz=tz, now=far
        )
        if info is None or info.logical_date > high or (last is not None and info.logical_date <= last):
            return runs
        if len(runs) >= max_runs:
            raise ValueError(f"more than {max_runs} runs between {low.isoformat()} and {high.isoformat()}")
        runs.append(info)
        last = info.logical_date


def next_run_times(
    *,
    schedule: ScheduleSpec,
    timezone: str | ZoneInfo,
    start_date: datetime | None,
    end_date: datetime | None,
    catchup: bool,
    last_logical_date: datetime | None,
    now: datetime,
    n: int,
) -> list[datetime]:
    """Logical dates of the next ``n`` runs the scheduler would create (fewer if the schedule ends)."""
    dates: list[datetime] = []
    last = last_logical_date
    while len(dates) < n:
        info = next_dagrun_info(
            schedule=schedule,
            timezone=timezone,
            start_date=start_date,
            end_date=end_date,
            catchup=catchup,
            last_logical_date=last,
            now=now,
        )
        if info is None:
            break
        dates.append(info.logical_date)
        last = info.logical_date
    return dates


def manual_data_interval(
    *, schedule: ScheduleSpec, timezone: str | ZoneInfo, run_after: datetime
) -> tuple[datetime, datetime]:
    """Data interval of a manually triggered run: the latest complete interval at ``run_after``.

    As Airflow's ``infer_manual_data_interval``: a daily DAG triggered at 01:00 on the 25th covers
    the 24th (midnight to midnight); a ``timedelta`` schedule covers the delta ending at
    ``run_after``. Unscheduled, @once and @continuous DAGs get an empty interval at ``run_after``.
    """
    when = _as_utc(run_after)
    if schedule is None or schedule in (ONCE, CONTINUOUS):
        return when, when
    if isinstance(schedule, Mapping):
        start, end = _timetable(schedule).infer_manual_data_interval(run_after=when, tz=_zone(timezone))
        return _as_utc(start), _as_utc(end)
    cron = _Cron(schedule, _zone(timezone))
    end = cron.at_or_before(when)
    return cron.prev_before(end), end
