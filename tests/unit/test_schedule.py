"""Schedules: which runs are due, with data intervals, catch-up, end dates, DST and presets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hareflow.common.dag.schedule import (
    DagRunInfo,
    manual_data_interval,
    next_dagrun_info,
    next_run_times,
    runs_between,
    validate_schedule,
)

AMS = ZoneInfo("Europe/Amsterdam")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def due_runs(
    schedule: str | None,
    *,
    start_date: datetime | None,
    now: datetime,
    catchup: bool = True,
    end_date: datetime | None = None,
    tz: str = "UTC",
    last: datetime | None = None,
) -> list[DagRunInfo]:
    """What a scheduler creates when it asks for the next run until the next one is not due yet."""
    runs: list[DagRunInfo] = []
    while len(runs) < 1000:
        info = next_dagrun_info(
            schedule=schedule,
            timezone=tz,
            start_date=start_date,
            end_date=end_date,
            catchup=catchup,
            last_logical_date=last,
            now=now,
        )
        if info is None or info.run_after > now:
            break
        runs.append(info)
        last = info.logical_date
    return runs


@pytest.mark.parametrize(
    ("schedule", "first_start", "first_end"),
    [
        ("@hourly", utc(2026, 1, 1, 0), utc(2026, 1, 1, 1)),
        ("@daily", utc(2026, 1, 1), utc(2026, 1, 2)),
        ("@weekly", utc(2026, 1, 4), utc(2026, 1, 11)),  # Sundays
        ("@monthly", utc(2026, 1, 1), utc(2026, 2, 1)),
        ("@yearly", utc(2026, 1, 1), utc(2027, 1, 1)),
        ("*/15 * * * *", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 15)),
        ("30 6 * * 1-5", utc(2026, 1, 1, 6, 30), utc(2026, 1, 2, 6, 30)),
    ],
)
def test_first_interval_of_each_preset(schedule: str, first_start: datetime, first_end: datetime) -> None:
    info = next_dagrun_info(
        schedule=schedule,
        timezone="UTC",
        start_date=utc(2026, 1, 1),
        end_date=None,
        catchup=True,
        last_logical_date=None,
        now=utc(2030, 1, 1),
    )
    assert info == DagRunInfo(first_start, first_start, first_end, first_end)


@pytest.mark.parametrize(
    ("schedule", "now", "expected_count"),
    [
        ("@hourly", utc(2026, 1, 1, 5, 30), 5),
        ("@daily", utc(2026, 1, 5, 10), 4),
        ("@daily", utc(2026, 1, 5, 0), 4),
        ("@daily", utc(2026, 1, 1, 23, 59), 0),
        ("@weekly", utc(2026, 2, 1), 4),
        ("@monthly", utc(2026, 6, 15), 5),
        ("@yearly", utc(2028, 1, 1), 2),
    ],
)
def test_catch_up_creates_every_complete_interval(schedule: str, now: datetime, expected_count: int) -> None:
    assert len(due_runs(schedule, start_date=utc(2026, 1, 1), now=now)) == expected_count


def test_daily_catch_up_runs_for_each_day_with_logical_date_at_interval_start() -> None:
    runs = due_runs("@daily", start_date=utc(2026, 1, 1), now=utc(2026, 1, 5, 10))
    assert [r.logical_date for r in runs] == [utc(2026, 1, d) for d in (1, 2, 3, 4)]
    assert all(r.data_interval_start == r.logical_date for r in runs)
    assert all(r.data_interval_end == r.run_after == r.logical_date + timedelta(days=1) for r in runs)


def test_without_catch_up_only_the_latest_complete_interval_runs() -> None:
    runs = due_runs("@daily", start_date=utc(2026, 1, 1), now=utc(2026, 1, 5, 10), catchup=False)
    assert [r.logical_date for r in runs] == [utc(2026, 1, 4)]


def test_without_catch_up_a_stale_last_run_jumps_to_the_latest_interval() -> None:
    runs = due_runs(
        "@daily", start_date=utc(2026, 1, 1), now=utc(2026, 3, 1, 12), catchup=False, last=utc(2026, 1, 2)
    )
    assert [r.logical_date for r in runs] == [utc(2026, 2, 28)]


def test_with_catch_up_a_stale_last_run_continues_where_it_left_off() -> None:
    runs = due_runs("@daily", start_date=utc(2026, 1, 1), now=utc(2026, 1, 6), last=utc(2026, 1, 2))
    assert [r.logical_date.day for r in runs] == [3, 4, 5]


def test_next_run_is_returned_before_it_is_due() -> None:
    info = next_dagrun_info(
        schedule="@daily",
        timezone="UTC",
        start_date=utc(2026, 1, 1),
        end_date=None,
        catchup=False,
        last_logical_date=utc(2026, 1, 4),
        now=utc(2026, 1, 5, 10),
    )
    assert info is not None and info.logical_date == utc(2026, 1, 5) and info.run_after == utc(2026, 1, 6)


def test_future_start_date_gives_a_first_run_after_it() -> None:
    runs = due_runs("@daily", start_date=utc(2027, 1, 1), now=utc(2026, 6, 1), catchup=False)
    assert runs == []
    info = next_dagrun_info(
        schedule="@daily",
        timezone="UTC",
        start_date=utc(2027, 1, 1),
        end_date=None,
        catchup=False,
        last_logical_date=None,
        now=utc(2026, 6, 1),
    )
    assert info is not None and info.logical_date == utc(2027, 1, 1)


def test_unaligned_start_date_is_aligned_to_the_next_cron_time() -> None:
    runs = due_runs("0 2 * * *", start_date=utc(2026, 1, 1, 3), now=utc(2026, 1, 4))
    assert [r.logical_date for r in runs] == [utc(2026, 1, 2, 2)]


def test_end_date_stops_scheduling() -> None:
    runs = due_runs("@daily", start_date=utc(2026, 1, 1), end_date=utc(2026, 1, 3), now=utc(2026, 2, 1))
    assert [r.logical_date.day for r in runs] == [1, 2, 3]
    late = due_runs(
        "@daily", start_date=utc(2026, 1, 1), end_date=utc(2026, 1, 3), now=utc(2026, 2, 1), catchup=False
    )
    assert late == []


def test_once_runs_a_single_time_at_its_start_date() -> None:
    runs = due_runs("@once", start_date=utc(2026, 1, 1, 8), now=utc(2026, 2, 1))
    assert runs == [
        DagRunInfo(utc(2026, 1, 1, 8), utc(2026, 1, 1, 8), utc(2026, 1, 1, 8), utc(2026, 1, 1, 8))
    ]
    assert due_runs("@once", start_date=utc(2026, 3, 1), now=utc(2026, 2, 1)) == []


def test_unscheduled_dags_never_get_scheduled_runs() -> None:
    assert due_runs(None, start_date=utc(2026, 1, 1), now=utc(2027, 1, 1)) == []
    assert runs_between(schedule=None, timezone="UTC", start=utc(2026, 1, 1), end=utc(2027, 1, 1)) == []


def _lengths(runs: list[DagRunInfo]) -> list[float]:
    return [(r.data_interval_end - r.data_interval_start).total_seconds() / 3600 for r in runs]


def test_daily_cron_in_amsterdam_keeps_local_time_across_spring_forward() -> None:
    runs = runs_between(
        schedule="0 2 * * *", timezone="Europe/Amsterdam", start=utc(2026, 3, 27), end=utc(2026, 3, 31)
    )
    local = [r.logical_date.astimezone(AMS) for r in runs]
    assert [d.day for d in local] == [27, 28, 29, 30, 31]
    # 02:00 does not exist on the 29th: that run starts at the first instant after the gap.
    assert [(d.hour, d.utcoffset()) for d in local] == [
        (2, timedelta(hours=1)),
        (2, timedelta(hours=1)),
        (3, timedelta(hours=2)),
        (2, timedelta(hours=2)),
        (2, timedelta(hours=2)),
    ]
    assert _lengths(runs) == [24, 24, 23, 24, 24]


def test_daily_cron_in_amsterdam_keeps_local_time_across_fall_back() -> None:
    runs = runs_between(
        schedule="0 2 * * *", timezone="Europe/Amsterdam", start=utc(2026, 10, 23), end=utc(2026, 10, 27, 12)
    )
    local = [r.logical_date.astimezone(AMS) for r in runs]
    assert [(d.day, d.hour) for d in local] == [(23, 2), (24, 2), (25, 2), (26, 2), (27, 2)]
    # 02:00 happens twice on the 25th; as in Airflow the run is at the second one (02:00 CET), so
    # the interval of the 24th is the 25-hour one.
    assert local[2].utcoffset() == timedelta(hours=1)
    assert _lengths(runs) == [24, 25, 24, 24, 24]


def test_catch_up_across_dst_counts_every_local_day() -> None:
    runs = due_runs(
        "0 2 * * *", tz="Europe/Amsterdam", start_date=datetime(2026, 3, 27, tzinfo=AMS), now=utc(2026, 4, 1)
    )
    assert [r.logical_date.astimezone(AMS).day for r in runs] == [27, 28, 29, 30, 31]  # 31st ends at now


def test_hourly_cron_in_a_dst_zone_fires_every_real_hour() -> None:
    autumn = runs_between(
        schedule="@hourly", timezone="Europe/Amsterdam", start=utc(2026, 10, 24, 22), end=utc(2026, 10, 25, 3)
    )
    assert [r.logical_date.hour for r in autumn] == [22, 23, 0, 1, 2, 3]
    assert set(_lengths(autumn)) == {1}
    spring = runs_between(
        schedule="30 * * * *",
        timezone="Europe/Amsterdam",
        start=utc(2026, 3, 28, 23),
        end=utc(2026, 3, 29, 3),
    )
    assert [r.logical_date for r in spring] == [
        utc(2026, 3, 28, 23, 30),
        *(utc(2026, 3, 29, h, 30) for h in range(3)),
    ]
    assert set(_lengths(spring)) == {1}


def test_returned_datetimes_are_utc() -> None:
    info = next_dagrun_info(
        schedule="0 9 * * *",
        timezone="America/New_York",
        start_date=datetime(2026, 7, 1, tzinfo=ZoneInfo("America/New_York")),
        end_date=None,
        catchup=True,
        last_logical_date=None,
        now=datetime(2026, 7, 5),  # naive: read as UTC
    )
    assert info is not None
    assert info.logical_date == utc(2026, 7, 1, 13)
    assert all(d.tzinfo is UTC for d in (info.logical_date, info.data_interval_end, info.run_after))


def test_runs_between_includes_both_bounds_and_respects_dag_dates() -> None:
    runs = runs_between(schedule="@daily", timezone="UTC", start=utc(2026, 1, 1), end=utc(2026, 1, 10))
    assert (
        len(runs) == 10
        and runs[0].logical_date == utc(2026, 1, 1)
        and runs[-1].logical_date == utc(2026, 1, 10)
    )
    clipped = runs_between(
        schedule="@daily",
        timezone="UTC",
        start=utc(2026, 1, 1),
        end=utc(2026, 1, 10),
        start_date=utc(2026, 1, 3, 12),
        end_date=utc(2026, 1, 6),
    )
    assert [r.logical_date.day for r in clipped] == [4, 5, 6]
    once = runs_between(
        schedule="@once",
        timezone="UTC",
        start=utc(2026, 1, 1),
        end=utc(2026, 2, 1),
        start_date=utc(2026, 1, 5),
    )
    assert [r.logical_date for r in once] == [utc(2026, 1, 5)]


def test_runs_between_refuses_huge_ranges() -> None:
    with pytest.raises(ValueError, match="more than 100 runs"):
        runs_between(
            schedule="* * * * *", timezone="UTC", start=utc(2026, 1, 1), end=utc(2026, 1, 2), max_runs=100
        )


def test_next_run_times_lists_upcoming_logical_dates() -> None:
    times = next_run_times(
        schedule="0 6 * * 1",
        timezone="UTC",
        start_date=utc(2026, 1, 1),
        end_date=None,
        catchup=False,
        last_logical_date=None,
        now=utc(2026, 1, 20),
        n=3,
    )
    assert times == [utc(2026, 1, 12, 6), utc(2026, 1, 19, 6), utc(2026, 1, 26, 6)]
    once = next_run_times(
        schedule="@once",
        timezone="UTC",
        start_date=utc(2026, 1, 1),
        end_date=None,
        catchup=False,
        last_logical_date=None,
        now=utc(2026, 1, 20),
        n=3,
    )
    assert once == [utc(2026, 1, 1)]


def test_manual_runs_get_the_latest_complete_interval() -> None:
    assert manual_data_interval(schedule="@daily", timezone="UTC", run_after=utc(2026, 1, 5, 10)) == (
        utc(2026, 1, 4),
        utc(2026, 1, 5),
    )
    assert manual_data_interval(schedule=None, timezone="UTC", run_after=utc(2026, 1, 5, 10)) == (
        utc(2026, 1, 5, 10),
        utc(2026, 1, 5, 10),
    )


@pytest.mark.parametrize(
    "schedule", [None, "@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "5 4 * * sun"]
)
def test_valid_schedules_are_accepted(schedule: str | None) -> None:
    validate_schedule(schedule)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("61 * * * *", "invalid cron expression"),
        ("* * * *", "expected 5 fields"),
        ("0 0 0 * * *", "expected 5 fields"),
        ("@sometimes", "unknown schedule preset"),
        ("0 0 30 2 *", "never fires"),
        (timedelta(days=1), "schedule must be a cron string"),
    ],
)
def test_invalid_schedules_are_refused_with_a_clear_message(schedule: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_schedule(schedule)
