"""The shared JSON form of datetimes: always UTC with its offset, whatever the database returned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hareflow.common.records import iso, seconds_between


def test_naive_datetimes_from_sqlite_or_mysql_are_marked_utc() -> None:
    assert iso(datetime(2026, 11, 24, 3, 4, 5)) == "2026-11-24T03:04:05+00:00"


def test_aware_datetimes_are_converted_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    assert iso(datetime(2026, 11, 24, 4, 4, 5, tzinfo=cet)) == "2026-11-24T03:04:05+00:00"
    assert iso(None) is None


def test_durations_are_rounded_to_the_millisecond_and_need_both_ends() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert seconds_between(start, start + timedelta(seconds=1, microseconds=234_567)) == 1.235
    assert seconds_between(start.replace(tzinfo=None), start + timedelta(seconds=2)) == 2.0
    assert seconds_between(None, start) is None and seconds_between(start, None) is None


def test_the_run_lists_columns_are_in_the_order_run_dicts_reads_them() -> None:
    from hareflow.common.records import RUN_ROW_COLUMNS
    from hareflow.web.queries import _RUN_COLUMNS

    assert tuple(column.key for column in _RUN_COLUMNS) == RUN_ROW_COLUMNS
