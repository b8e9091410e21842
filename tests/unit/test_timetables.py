"""Schedules beyond cron: timedelta, @quarterly/@annually, @continuous, plugin timetables, manual
data intervals, Airflow's DST choices, weight rules, owner and depends_on_past."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hareflow.common.dag import DAG, BashTask, DagDefinitionError, load_dag_file, serialize_dag
from hareflow.common.dag.schedule import (
    DagRunInfo,
    manual_data_interval,
    next_dagrun_info,
    runs_between,
)
from hareflow.common.dag.serialize import SerializedDag
from hareflow.common.dag.timetables import UnknownTimetable, resolve_timetable
from hareflow.scheduler.past import blocked_by_past

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def due(schedule: object, *, start_date: datetime, now: datetime, catchup: bool = True, tz: str = "UTC"):
    """Every run the scheduler would create by ``now``, asking for the next one after the last."""
    runs: list[DagRunInfo] = []
    last = None
    while len(runs) < 100:
        info = next_dagrun_info(
            schedule=schedule,  # type: ignore[arg-type]
            timezone=tz,
            start_date=start_date,
            end_date=None,
            catchup=catchup,
            last_logical_date=last,
            now=now,
        )
        if info is None or info.run_after > now:
            break
        runs.append(info)
        last = info.logical_date
    return runs


def spec_of(schedule: object, **kw: object) -> dict:
    """The serialized timetable of a DAG with ``schedule`` (what the scheduler works from)."""
    dag = DAG("s", schedule=schedule, start_date=datetime(2026, 1, 1, 3), **kw)  # type: ignore[arg-type]
    return serialize_dag(dag)["timetable"]


# -- timedelta ----------------------------------------------------------------------------------------


def test_a_timedelta_schedule_with_catchup_runs_fixed_intervals_anchored_at_the_start_date() -> None:
    runs = due(spec_of(timedelta(hours=6)), start_date=utc(2026, 1, 1, 3), now=utc(2026, 1, 2, 4))

    assert [(r.data_interval_start, r.data_interval_end) for r in runs] == [
        (utc(2026, 1, 1, 3), utc(2026, 1, 1, 9)),
        (utc(2026, 1, 1, 9), utc(2026, 1, 1, 15)),
        (utc(2026, 1, 1, 15), utc(2026, 1, 1, 21)),
        (utc(2026, 1, 1, 21), utc(2026, 1, 2, 3)),
    ]
    assert all(r.logical_date == r.data_interval_start and r.run_after == r.data_interval_end for r in runs)


def test_a_timedelta_schedule_without_catchup_starts_with_the_delta_that_ends_now_as_airflow_does() -> None:
    runs = due(
        spec_of(timedelta(hours=6)), start_date=utc(2026, 1, 1, 3), now=utc(2026, 1, 5, 4), catchup=False
    )

    assert [(r.data_interval_start, r.data_interval_end) for r in runs] == [
        (utc(2026, 1, 4, 22), utc(2026, 1, 5, 4))
    ]


def test_a_timedelta_schedule_is_serialized_by_name_and_seconds_and_shown_as_the_delta() -> None:
    dag = DAG("s", schedule=timedelta(days=1, hours=2), start_date=datetime(2026, 1, 1))
    data = serialize_dag(dag)

    assert data["timetable"] == {"name": "delta", "params": {"seconds": 93600.0}}
    assert data["schedule"] == "1 day, 2:00:00"
    assert SerializedDag.from_dict(data).to_dict() == data


def test_backfilling_a_timedelta_schedule_keeps_the_grid_of_the_start_date() -> None:
    runs = runs_between(
        schedule=spec_of(timedelta(hours=6)),
        timezone="UTC",
        start=utc(2026, 1, 1, 4),
        end=utc(2026, 1, 2),
        start_date=utc(2026, 1, 1, 3),
    )

    assert [r.logical_date for r in runs] == [utc(2026, 1, 1, 9), utc(2026, 1, 1, 15), utc(2026, 1, 1, 21)]


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-5)])
def test_a_timedelta_schedule_that_is_not_positive_is_refused(bad: timedelta) -> None:
    with pytest.raises(DagDefinitionError, match="timedelta schedule must be positive"):
        DAG("s", schedule=bad, start_date=datetime(2026, 1, 1))


# -- presets ------------------------------------------------------------------------------------------


def test_quarterly_runs_on_the_first_of_january_april_july_and_october() -> None:
    runs = due("@quarterly", start_date=utc(2026, 1, 1), now=utc(2027, 1, 1))

    assert [r.logical_date for r in runs] == [
        utc(2026, 1, 1),
        utc(2026, 4, 1),
        utc(2026, 7, 1),
        utc(2026, 10, 1),
    ]
    assert runs[-1].data_interval_end == utc(2027, 1, 1)


def test_annually_is_yearly() -> None:
    runs = due("@annually", start_date=utc(2024, 1, 1), now=utc(2026, 6, 1))

    assert [(r.data_interval_start, r.data_interval_end) for r in runs] == [
        (utc(2024, 1, 1), utc(2025, 1, 1)),
        (utc(2025, 1, 1), utc(2026, 1, 1)),
    ]


# -- manual runs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "run_after", "interval"),
    [
        ("@daily", utc(2026, 1, 25, 1), (utc(2026, 1, 24), utc(2026, 1, 25))),
        ("@daily", utc(2026, 1, 25), (utc(2026, 1, 24), utc(2026, 1, 25))),  # on a boundary
        ("0 * * * *", utc(2026, 1, 25, 10, 30), (utc(2026, 1, 25, 9), utc(2026, 1, 25, 10))),
        ("@quarterly", utc(2026, 5, 2), (utc(2026, 1, 1), utc(2026, 4, 1))),
        (None, utc(2026, 1, 25, 1), (utc(2026, 1, 25, 1), utc(2026, 1, 25, 1))),
        ("@once", utc(2026, 1, 25, 1), (utc(2026, 1, 25, 1), utc(2026, 1, 25, 1))),
    ],
)
def test_a_manual_run_of_a_scheduled_dag_covers_the_latest_complete_interval(
    schedule: str | None, run_after: datetime, interval: tuple[datetime, datetime]
) -> None:
    assert manual_data_interval(schedule=schedule, timezone="UTC", run_after=run_after) == interval


def test_a_manual_run_of_a_timedelta_schedule_covers_the_delta_ending_at_the_trigger() -> None:
    interval = manual_data_interval(
        schedule=spec_of(timedelta(hours=6)), timezone="UTC", run_after=utc(2026, 3, 1, 10)
    )

    assert interval == (utc(2026, 3, 1, 4), utc(2026, 3, 1, 10))


# -- continuous ---------------------------------------------------------------------------------------


def test_continuous_asks_for_a_run_now_covering_the_time_since_the_previous_one() -> None:
    first = next_dagrun_info(
        schedule="@continuous",
        timezone="UTC",
        start_date=utc(2026, 1, 1),
        end_date=None,
        catchup=False,
        last_logical_date=None,
        now=utc(2026, 3, 1, 12),
    )
    second = next_dagrun_info(
        schedule="@continuous",
        timezone="UTC",
        start_date=utc(2026, 1, 1),
        end_date=None,
        catchup=False,
        last_logical_date=utc(2026, 3, 1, 12),
        now=utc(2026, 3, 1, 12, 5),
    )

    assert first == DagRunInfo(utc(2026, 3, 1, 12), utc(2026, 1, 1), utc(2026, 3, 1, 12), utc(2026, 3, 1, 12))
    assert second is not None
    assert (second.data_interval_start, second.run_after) == (utc(2026, 3, 1, 12), utc(2026, 3, 1, 12, 5))


def _write(tmp_path: Path, source: str) -> tuple[Path, int]:
    text = textwrap.dedent(source).lstrip("\n")
    path = tmp_path / "dag_file.py"
    path.write_text(text)
    return path, next(i for i, line in enumerate(text.splitlines(), 1) if "# <- here" in line)


def _error_of(tmp_path: Path, source: str) -> tuple[str, int, str]:
    path, line = _write(tmp_path, source)
    result = load_dag_file(path)
    assert result.dags == [] and len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert error.file == str(path.resolve())
    return error.message, error.line or -1, str(line)


def test_continuous_without_max_active_runs_one_is_refused_at_parse_time_with_file_and_line(
    tmp_path: Path,
) -> None:
    message, line, expected = _error_of(
        tmp_path,
        """
        from datetime import datetime
        from hareflow import DAG
        DAG("c", schedule="@continuous", start_date=datetime(2026, 1, 1))  # <- here
        """,
    )

    assert "'@continuous' needs max_active_runs=1" in message
    assert str(line) == expected
    assert DAG("ok", schedule="@continuous", start_date=datetime(2026, 1, 1), max_active_runs=1)


def test_continuous_cannot_be_backfilled() -> None:
    with pytest.raises(ValueError, match="no intervals to backfill"):
        runs_between(schedule="@continuous", timezone="UTC", start=utc(2026, 1, 1), end=utc(2026, 2, 1))


# -- DST, as Airflow's cron timetable -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "cron", "around", "expected_utc"),
    [
        # Spring forward, Berlin 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist and moves
        # forward by the gap, to 03:30 CEST.
        (BERLIN, "30 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1, 30)),
        # Fall back, Berlin 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice; the second (CET).
        (BERLIN, "30 2 * * *", utc(2026, 10, 24, 12), utc(2026, 10, 25, 1, 30)),
        # Times away from the change are untouched.
        (BERLIN, "30 4 * * *", utc(2026, 10, 24, 12), utc(2026, 10, 25, 3, 30)),
        # New York 2026-03-08 02:00 EST -> 03:00 EDT: 02:15 becomes 03:15 EDT.
        (NEW_YORK, "15 2 * * *", utc(2026, 3, 7, 12), utc(2026, 3, 8, 7, 15)),
        # New York 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens twice; the second (EST).
        (NEW_YORK, "30 1 * * *", utc(2026, 10, 31, 12), utc(2026, 11, 1, 6, 30)),
    ],
)
def test_dst_transitions_fire_where_airflow_fires(
    tz: ZoneInfo, cron: str, around: datetime, expected_utc: datetime
) -> None:
    runs = runs_between(schedule=cron, timezone=tz, start=around, end=around + timedelta(days=1))

    assert runs[0].logical_date == expected_utc


def test_an_hourly_cron_fires_in_both_repeated_hours_of_a_fall_back() -> None:
    runs = runs_between(
        schedule="0 * * * *", timezone=BERLIN, start=utc(2026, 10, 24, 23), end=utc(2026, 10, 25, 2)
    )

    assert [r.logical_date.hour for r in runs] == [23, 0, 1, 2]  # 01:00, 02:00 CEST, 02:00 CET, 03:00 CET


# -- custom timetables from a plugin ------------------------------------------------------------------

PLUGIN = """
from datetime import timedelta
from hareflow.common.dag import DagRunInfo, Timetable


class EveryNDays(Timetable):
    name = "every_n_days"

    def __init__(self, days=2):
        self.days = days

    def params(self):
        return {"days": self.days}

    def next_dagrun_info(self, *, last_logical_date, start_date, end_date, catchup, tz, now):
        start = start_date if last_logical_date is None else last_logical_date + timedelta(days=self.days)
        if end_date is not None and start > end_date:
            return None
        end = start + timedelta(days=self.days)
        return DagRunInfo(start, start, end, end)

    def infer_manual_data_interval(self, *, run_after, tz):
        return run_after - timedelta(days=self.days), run_after
"""


@pytest.fixture
def timetable_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution whose ``hareflow.plugins`` entry point registers ``EveryNDays``."""
    site = tmp_path / "site"
    dist = site / "hf_test_timetables-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "hf_test_timetables.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hf-test-timetables\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hareflow.plugins]\nnday = hf_test_timetables:EveryNDays\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("hf_test_timetables", None)


def test_a_timetable_a_plugin_registers_is_serialized_by_name_and_rebuilt_for_the_scheduler(
    timetable_plugin: None,
) -> None:
    from hf_test_timetables import EveryNDays  # type: ignore[import-not-found]

    dag = DAG("custom", schedule=EveryNDays(days=3), start_date=datetime(2026, 1, 1))
    data = serialize_dag(dag)
    runs = due(data["timetable"], start_date=utc(2026, 1, 1), now=utc(2026, 1, 10))

    assert data["timetable"] == {"name": "every_n_days", "params": {"days": 3}}
    assert data["schedule"] == "every_n_days"
    assert [r.logical_date for r in runs] == [utc(2026, 1, 1), utc(2026, 1, 4), utc(2026, 1, 7)]
    assert manual_data_interval(schedule=data["timetable"], timezone="UTC", run_after=utc(2026, 2, 1)) == (
        utc(2026, 1, 29),
        utc(2026, 2, 1),
    )


def test_a_timetable_no_plugin_registers_is_refused_at_parse_time_with_file_and_line(tmp_path: Path) -> None:
    message, line, expected = _error_of(
        tmp_path,
        """
        from datetime import datetime
        from hareflow import DAG, Timetable

        class Mine(Timetable):
            name = "mine"

        DAG("c", schedule=Mine(), start_date=datetime(2026, 1, 1))  # <- here
        """,
    )

    assert "timetable Mine (name 'mine') is not registered by an installed plugin" in message
    assert str(line) == expected


def test_a_serialized_dag_naming_an_unknown_timetable_is_a_clear_error() -> None:
    with pytest.raises(UnknownTimetable, match="unknown timetable 'gone'.*known timetables: delta"):
        resolve_timetable({"name": "gone", "params": {}})


# -- weight rules, owner, depends_on_past -------------------------------------------------------------


def _diamond(**settings: object) -> dict[str, int]:
    with DAG("w", default_args=settings) as dag:  # type: ignore[arg-type]
        a = BashTask("a", "true", priority=1)
        b = BashTask("b", "true", priority=2)
        c = BashTask("c", "true", priority_weight=3)
        d = BashTask("d", "true", priority=4)
        a >> [b, c] >> d
    return {t["task_id"]: t["priority"] for t in serialize_dag(dag)["tasks"]}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("absolute", {"a": 1, "b": 2, "c": 3, "d": 4}),  # hareflow's default
        ("downstream", {"a": 10, "b": 6, "c": 7, "d": 4}),  # each downstream task counted once
        ("upstream", {"a": 1, "b": 3, "c": 4, "d": 10}),
    ],
)
def test_weight_rules_give_the_effective_priority_the_scheduler_orders_by(rule: str, expected: dict) -> None:
    assert _diamond(weight_rule=rule) == expected


def test_the_default_weight_rule_is_absolute_and_the_tasks_own_weight_is_kept() -> None:
    with DAG("w") as dag:
        BashTask("a", "true", priority_weight=5) >> BashTask("b", "true")
    tasks = serialize_dag(dag)["tasks"]

    assert [(t["priority"], t["priority_weight"], t["weight_rule"]) for t in tasks] == [
        (5, 5, "absolute"),
        (1, 1, "absolute"),
    ]


def test_an_unknown_weight_rule_or_both_priority_spellings_are_refused(tmp_path: Path) -> None:
    message, line, expected = _error_of(
        tmp_path,
        """
        from hareflow import DAG, BashTask
        with DAG("w"):
            BashTask("a", "true", weight_rule="sideways")  # <- here
        """,
    )
    assert "unknown weight_rule 'sideways'" in message and str(line) == expected
    with pytest.raises(DagDefinitionError, match="sets both 'priority' and its alias 'priority_weight'"):
        with DAG("w2"):
            BashTask("a", "true", priority=1, priority_weight=2)


def test_the_owner_comes_from_default_args_unless_the_dag_sets_one() -> None:
    from_args = DAG("o1", default_args={"owner": "data-team"})
    explicit = DAG("o2", owner="me", default_args={"owner": "data-team"})
    neither = DAG("o3")

    assert [serialize_dag(d)["owner"] for d in (from_args, explicit, neither)] == [
        "data-team",
        "me",
        "hareflow",
    ]


def test_depends_on_past_is_serialized_and_holds_a_task_whose_previous_instance_did_not_succeed() -> None:
    with DAG("p", default_args={"depends_on_past": True}) as dag:
        BashTask("a", "true")
    tasks = serialize_dag(dag)["tasks"]

    assert tasks[0]["depends_on_past"] is True
    assert blocked_by_past(
        ["a", "b", "c", "d"], {"a": "success", "b": "skipped", "c": "failed", "d": "running"}
    ) == {
        "c",
        "d",
    }
    assert blocked_by_past(["a"], {}) == set()  # no previous instance: free


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('DAG("r", dagrun_timeout="1h")', "dagrun_timeout must be a timedelta or a number of seconds"),
        ('DAG("r", dagrun_timeout=timedelta(0))', "dagrun_timeout must be positive"),
        (
            'DAG("r", on_failure_callback="notify")',
            "on_failure_callback of DAG 'r' must be callable, a list of callables or None",
        ),
        (
            'DAG("r", default_args={"owner": ""})',
            "owner of default_args of DAG 'r' must be a non-empty string",
        ),
    ],
)
def test_bad_run_level_settings_are_refused_with_file_and_line(
    tmp_path: Path, statement: str, message: str
) -> None:
    found, line, expected = _error_of(
        tmp_path,
        f"""
        from datetime import timedelta
        from hareflow import DAG
        {statement}  # <- here
        """,
    )

    assert message in found and str(line) == expected


def test_dag_callbacks_and_dagrun_timeout_are_serialized_for_the_scheduler() -> None:
    dag = DAG("r", dagrun_timeout=timedelta(minutes=5), on_failure_callback=lambda ctx: None)
    data = serialize_dag(dag)

    assert (data["dagrun_timeout"], data["callbacks"]) == (300.0, ["failure"])
    assert SerializedDag.from_dict(data).to_dict() == data
