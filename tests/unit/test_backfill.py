"""Backfills through the scheduler, one iteration at a time (SQLite, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hareflow.common.backfill import (
    BackfillError,
    backfill_progress,
    cancel_backfill,
    create_backfill,
    plan_backfill,
)
from hareflow.common.db import Backfill, Dag, DagRun, TaskInstance
from sqlalchemy import select, update

from tests.unit.test_scheduler_loop import NOW, Harness

DAILY = """
    from datetime import datetime
    from hareflow import DAG, task
    with DAG("daily", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False,
             max_active_runs={runs}):
        @task
        def only():
            return 1
        only()
"""


def day(n: int) -> datetime:
    return datetime(2026, 1, n, tzinfo=UTC)


@pytest.fixture
def harness(tmp_path: Path):
    h = Harness(tmp_path)
    h.dag_file("daily.py", DAILY.format(runs=16))
    yield h
    h.close()


def backfill(h: Harness, start: int, end: int, **kw: object) -> int:
    with h.sessions() as s, s.begin():
        bf, _ = create_backfill(s, "daily", day(start), day(end), now=NOW, **kw)  # type: ignore[arg-type]
        return bf.id


def backfill_runs(h: Harness) -> list[tuple[int, str]]:
    return [(r.logical_date.day, r.state) for r in h.runs("daily") if r.run_type == "backfill"]  # type: ignore[union-attr]


def test_a_backfill_creates_one_run_per_interval_and_never_duplicates(harness: Harness) -> None:
    backfill(harness, 1, 3)
    second = backfill(harness, 2, 5)
    assert [d for d, _ in backfill_runs(harness)] == [1, 2, 3, 4, 5]
    with harness.sessions() as s:
        plan = plan_backfill(s, "daily", day(1), day(5))
        assert plan.to_create == [] and len(plan.existing) == 5
        assert backfill_progress(s, second).total == 2


def test_backfill_runs_respect_the_backfills_own_max_active_runs(harness: Harness) -> None:
    backfill(harness, 1, 4, max_active_runs=2)
    harness.scheduler.run_once(NOW)
    assert sorted(state for _, state in backfill_runs(harness)) == ["queued", "queued", "running", "running"]


def test_backfill_runs_do_not_hold_back_scheduled_runs(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    try:
        h.dag_file("daily.py", DAILY.format(runs=1))
        with h.sessions() as s, s.begin():
            create_backfill(s, "daily", day(1), day(3), max_active_runs=3, now=NOW)
        h.scheduler.run_once(NOW)
        runs = h.runs("daily")
        assert [(r.run_type, r.state) for r in runs if r.run_type == "scheduled"] == [
            ("scheduled", "running")
        ]
        assert [s for _, s in backfill_runs(h)] == ["running"] * 3
    finally:
        h.close()


def test_a_paused_dag_still_runs_an_explicit_backfill(harness: Harness) -> None:
    with harness.sessions() as s, s.begin():
        s.get(Dag, "daily").is_paused = True  # type: ignore[union-attr]
    backfill(harness, 1, 1)
    harness.scheduler.run_once(NOW)
    assert backfill_runs(harness) == [(1, "running")]
    assert [m.key.run_id for m in harness.published] == ["backfill__2026-01-01T00:00:00+00:00"]


def test_cancelling_drops_the_runs_not_started_and_keeps_the_running_ones(harness: Harness) -> None:
    bf = backfill(harness, 1, 3, max_active_runs=1)
    harness.scheduler.run_once(NOW)
    with harness.sessions() as s, s.begin():
        assert cancel_backfill(s, bf, now=NOW) == 2
    assert backfill_runs(harness) == [(1, "running")]
    with harness.sessions() as s, s.begin():
        assert s.get(Backfill, bf).state == "cancelled"  # type: ignore[union-attr]
        with pytest.raises(BackfillError, match="already cancelled"):
            cancel_backfill(s, bf)


def test_the_scheduler_finishes_a_backfill_when_its_runs_are_done(harness: Harness) -> None:
    bf = backfill(harness, 1, 2, max_active_runs=2)
    harness.scheduler.run_once(NOW)
    with harness.sessions() as s, s.begin():
        s.execute(update(TaskInstance).values(state="success"))
        s.execute(
            update(TaskInstance)
            .where(TaskInstance.run_id == "backfill__2026-01-02T00:00:00+00:00")
            .values(state="failed")
        )
    harness.scheduler.run_once(NOW + timedelta(seconds=5))
    with harness.sessions() as s:
        progress = backfill_progress(s, bf)
    assert (progress.state, progress.success, progress.failed, progress.done) == ("failed", 1, 1, 2)
    assert progress.completed_at is not None


def test_rerun_failed_clears_the_failed_tasks_of_an_existing_run(harness: Harness) -> None:
    backfill(harness, 1, 1)
    harness.scheduler.run_once(NOW)
    first = "backfill__2026-01-01T00:00:00+00:00"
    with harness.sessions() as s, s.begin():
        s.execute(
            update(TaskInstance)
            .where(TaskInstance.run_id == first)
            .values(state="failed", try_number=1, error="x")
        )
        s.execute(update(DagRun).where(DagRun.run_id == first).values(state="failed"))
    bf = backfill(harness, 1, 1, rerun_failed=True)
    with harness.sessions() as s:
        run = s.scalars(select(DagRun).where(DagRun.run_id == first)).one()
        ti = s.scalars(select(TaskInstance).where(TaskInstance.run_id == first)).one()
        assert (run.state, run.backfill_id, ti.state, ti.max_tries, ti.error) == (
            "queued",
            bf,
            "none",
            2,
            None,
        )
    harness.scheduler.run_once(NOW + timedelta(seconds=5))
    assert [(m.key.run_id, m.key.try_number) for m in harness.published][-1] == (first, 2)


@pytest.mark.parametrize(
    ("dag_id", "start", "end", "message"),
    [
        ("nope", 1, 2, "no DAG named 'nope'"),
        ("daily", 5, 2, "is after the end"),
    ],
)
def test_backfill_mistakes_are_clear_errors(
    harness: Harness, dag_id: str, start: int, end: int, message: str
) -> None:
    with harness.sessions() as s, pytest.raises(BackfillError, match=message):
        plan_backfill(s, dag_id, day(start), day(end))


def test_a_dag_without_a_schedule_cannot_be_backfilled(harness: Harness) -> None:
    harness.dag_file(
        "manual.py",
        """
        from datetime import datetime
        from hareflow import DAG, task
        with DAG("manual", start_date=datetime(2026, 1, 1)):
            @task
            def only():
                return 1
            only()
        """,
    )
    with harness.sessions() as s, pytest.raises(BackfillError, match="has no schedule"):
        plan_backfill(s, "manual", day(1), day(2))
