"""``hareflow db clean`` and the scheduler's retention step, on PostgreSQL, MariaDB and SQLite.

What goes: finished runs older than the cutoff with every row keyed to them, and the other history
that only grows. What stays: active runs however old, what is newer, and what the scheduler still
reads (a catch-up DAG cleaned of its history creates none of its old runs again).
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hareflow.common.db import (
    AssetDagRunQueue,
    AssetEvent,
    AssetRow,
    AuditLog,
    Backfill,
    DagRun,
    DagRunAssetEvent,
    DeadLetter,
    SchedulerHeartbeat,
    TaskInstance,
    TaskLog,
    TaskRendered,
    TaskResult,
    TaskTry,
    create_engine_for,
    make_session_factory,
)
from hareflow.common.db.migrate import migrate
from hareflow.common.retention import clean_history
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from hareflow.cli import main
from tests.conftest import fast_settings
from tests.integration.conftest import System, wait_until
from tests.web.conftest import make_dag

ALL_DATABASES = pytest.mark.parametrize(
    "database_url", ["postgres_url", "mysql_url", "sqlite_url"], indirect=True
)
SERVER_DATABASES = pytest.mark.parametrize("database_url", ["postgres_url", "mysql_url"], indirect=True)
NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=2)
CHILDREN = (TaskTry, TaskResult, TaskRendered, TaskLog)


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(request.param)


def migrated(url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a freshly migrated metastore at ``url`` (the engine disposed afterwards)."""
    engine = create_engine_for(url)
    migrate(engine)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    yield from migrated(database_url)


def hareflow(database_url: str, tmp_path: Path, *args: str, input: str | None = None) -> Result:
    env = {
        "HAREFLOW_DATABASE_URL": database_url,
        "HAREFLOW_HOME": str(tmp_path / "home"),
        "HAREFLOW_BROKER_URL": "",
    }
    return CliRunner().invoke(main, ["db", "clean", *args], env=env, input=input)


def add_run(
    sessions: sessionmaker[Session],
    dag_id: str,
    run_id: str,
    *,
    when: datetime,
    state: str = "success",
    run_type: str = "manual",
    tasks: int = 2,
    backfill_id: int | None = None,
) -> int:
    """A run at logical date ``when`` (ended 5 minutes later if finished) whose task instances each
    have an earlier try, a result, rendered fields and two log chunks."""
    with sessions() as s, s.begin():
        run = DagRun(
            dag_id=dag_id,
            run_id=run_id,
            run_type=run_type,
            state=state,
            logical_date=when,
            interval_key=when,
            data_interval_start=when,
            data_interval_end=when,
            conf={},
            backfill_id=backfill_id,
            queued_at=when,
            start_date=when,
            end_date=when + timedelta(minutes=5) if state in ("success", "failed") else None,
        )
        s.add(run)
        s.flush()
        for n in range(tasks):
            ti = TaskInstance(
                run_pk=run.id, dag_id=dag_id, run_id=run_id, task_id=f"t{n}", state=state, try_number=2
            )
            s.add(ti)
            s.flush()
            s.add(TaskTry(ti_id=ti.id, try_number=1, state="failed", error="boom"))
            s.add(TaskResult(ti_id=ti.id, try_number=2, value_json="[1, 2]", created_at=when))
            s.add(TaskRendered(ti_id=ti.id, try_number=2, fields_json="{}", created_at=when))
            for seq in (0, 1):
                s.add(TaskLog(ti_id=ti.id, try_number=2, seq=seq, text=f"line {seq}\n", created_at=when))
        return run.id


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def run_ids(sessions: sessionmaker[Session], dag_id: str) -> set[str]:
    with sessions() as s:
        return set(s.scalars(select(DagRun.run_id).where(DagRun.dag_id == dag_id)))


def history(sessions: sessionmaker[Session]) -> tuple[str, str]:
    """One DAG with: an old run still running, two old finished runs (later than it: the run
    before an active run is kept), a recent finished run; another with an old and a recent run."""
    dag_id = make_dag(sessions)
    add_run(sessions, dag_id, "old_running", when=OLD - timedelta(hours=2), state="running")
    add_run(sessions, dag_id, "old_ok", when=OLD)
    add_run(sessions, dag_id, "old_failed", when=OLD + timedelta(hours=1), state="failed")
    add_run(sessions, dag_id, "recent", when=RECENT)
    other = make_dag(sessions)
    add_run(sessions, other, "other_old", when=OLD)
    add_run(sessions, other, "other_recent", when=RECENT)
    return dag_id, other


# -- what goes and what stays ---------------------------------------------------------------------------


@ALL_DATABASES
def test_db_clean_deletes_old_finished_runs_with_every_row_keyed_to_them_and_nothing_else(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    dag_id, other = history(sessions)

    result = hareflow(database_url, tmp_path, "--older-than", "30", "--yes", "-o", "json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dry_run"] is False
    assert {table: n for table, n in report["tables"].items() if n} == {
        "dag_run": 3,
        "task_instance": 6,
        "task_try": 6,
        "task_result": 6,
        "task_rendered": 6,
        "task_log": 12,
    }
    assert run_ids(sessions, dag_id) == {"old_running", "recent"}
    assert run_ids(sessions, other) == {"other_recent"}
    assert count(sessions, TaskInstance) == 6
    for model in CHILDREN:  # nothing orphaned, nothing of a kept task instance lost
        with sessions() as s:
            orphans = s.scalar(
                select(func.count())
                .select_from(model)
                .where(~select(TaskInstance.id).where(TaskInstance.id == model.ti_id).exists())
            )
        assert orphans == 0
        assert count(sessions, model) == 6 * (2 if model is TaskLog else 1)


@ALL_DATABASES
def test_db_clean_deletes_old_audit_entries_settled_dead_letters_and_consumed_asset_events_only(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    dag_id = make_dag(sessions)
    with sessions() as s, s.begin():
        s.add_all(
            [
                AuditLog(at=OLD, action="trigger", dag_id=dag_id),
                AuditLog(at=RECENT, action="trigger", dag_id=dag_id),
                SchedulerHeartbeat(id="gone:1", hostname="gone", pid=1, started_at=OLD, last_heartbeat=OLD),
                SchedulerHeartbeat(id="here:2", hostname="here", pid=2, started_at=OLD, last_heartbeat=NOW),
            ]
        )
        for n, (state, at) in enumerate(
            [("discarded", OLD), ("requeued", OLD), ("dead", OLD), ("discarded", RECENT)]
        ):
            s.add(
                DeadLetter(
                    fingerprint=f"fp{n}",
                    received_at=at,
                    queue="q",
                    reason="r",
                    deliveries=1,
                    headers={},
                    body=b"\x00\x01",
                    body_size=2,
                    state=state,
                    state_at=at if state != "dead" else None,
                )
            )
        consumed, pending = (
            AssetRow(uri="s3://consumed", extra={}, created_at=OLD, updated_at=OLD),
            AssetRow(uri="s3://pending", extra={}, created_at=OLD, updated_at=OLD),
        )
        s.add_all([consumed, pending])
        s.flush()
        events = [
            AssetEvent(asset_id=a.id, extra={}, timestamp=OLD)
            for a in (consumed, consumed, consumed, pending, pending)
        ]
        s.add_all(events)
        s.flush()
        s.add(
            AssetDagRunQueue(
                target_dag_id=dag_id,
                asset_id=pending.id,
                first_event_id=events[3].id,
                last_event_id=events[4].id,
                created_at=OLD,
            )
        )
    kept_run = add_run(sessions, dag_id, "recent", when=RECENT)
    with sessions() as s, s.begin():  # the recent run was started by the consumed asset's first event
        s.add(DagRunAssetEvent(run_pk=kept_run, event_id=events[0].id))

    result = hareflow(database_url, tmp_path, "--older-than", "30", "--yes", "-o", "json")

    assert result.exit_code == 0, result.output
    tables = json.loads(result.stdout)["tables"]
    assert {k: v for k, v in tables.items() if v} == {
        "audit_log": 1,
        "dead_letter": 2,
        # The consumed asset's second event: the first started a run, the third is its latest.
        "asset_event": 1,
        "scheduler_heartbeat": 1,
    }
    with sessions() as s:
        assert set(s.scalars(select(DeadLetter.fingerprint))) == {"fp2", "fp3"}
        assert set(s.scalars(select(AssetEvent.id))) == {events[i].id for i in (0, 2, 3, 4)}
        assert list(s.scalars(select(SchedulerHeartbeat.id))) == ["here:2"]
        assert list(s.scalars(select(AuditLog.at).where(AuditLog.action == "trigger"))) == [RECENT]
        recorded = s.scalars(select(AuditLog).where(AuditLog.action == "history_clean")).one()
    assert recorded.details["deleted"] == {k: v for k, v in tables.items() if v}
    assert recorded.details["origin"].startswith("cli@") and recorded.username


@ALL_DATABASES
def test_db_clean_dry_run_prints_the_counts_per_table_and_deletes_nothing(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    history(sessions)
    before = count(sessions, TaskLog), count(sessions, DagRun)

    result = hareflow(database_url, tmp_path, "--older-than", "30", "--dry-run")

    assert result.exit_code == 0, result.output
    lines = dict(line.split() for line in result.stdout.splitlines()[1:])
    assert lines["dag_run"] == "3" and lines["task_instance"] == "6" and lines["task_log"] == "12"
    assert "would delete 39 rows" in result.stderr
    assert (count(sessions, TaskLog), count(sessions, DagRun)) == before


@ALL_DATABASES
def test_db_clean_with_a_dag_cleans_that_dags_runs_only(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    dag_id, other = history(sessions)

    result = hareflow(database_url, tmp_path, "--older-than", "30", "--dag", dag_id, "--yes")

    assert result.exit_code == 0, result.output
    assert run_ids(sessions, dag_id) == {"old_running", "recent"}
    assert run_ids(sessions, other) == {"other_old", "other_recent"}


def test_db_clean_asks_first_and_a_no_deletes_nothing(
    sqlite_url: str, sessions_sqlite: sessionmaker[Session], tmp_path: Path
) -> None:
    history(sessions_sqlite)

    result = hareflow(sqlite_url, tmp_path, "--older-than", "30", input="n\n")

    assert result.exit_code == 1
    assert "Delete these 39 rows?" in result.output
    assert count(sessions_sqlite, DagRun) == 6


@pytest.fixture
def sessions_sqlite(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    yield from migrated(sqlite_url)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "-3"], "--older-than: the number of days must be more than 0, not -3"),
        (["--older-than", "0"], "--older-than: the number of days must be more than 0, not 0"),
        (["--older-than", "30", "--dag", "nope"], "no DAG named 'nope' and no runs of it in the metastore"),
        (["--older-than", "30", "--dry-run", "--archive", "x.jsonl"], "--archive writes the rows deleted"),
    ],
)
def test_db_clean_refuses_bad_input_with_one_line_and_exit_code_two(
    sqlite_url: str, sessions_sqlite: sessionmaker[Session], tmp_path: Path, args: list[str], message: str
) -> None:
    history(sessions_sqlite)

    result = hareflow(sqlite_url, tmp_path, *args, "--yes")

    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert count(sessions_sqlite, DagRun) == 6


# -- the archive ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgres_url", "sqlite_url"], indirect=True)
def test_db_clean_archive_holds_every_deleted_row_readable_by_the_owner_only(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    history(sessions)
    archive = tmp_path / "history.jsonl"

    result = hareflow(database_url, tmp_path, "--older-than", "30", "--archive", str(archive), "--yes")

    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600
    assert not archive.with_name("history.jsonl.partial").exists()
    rows = [json.loads(line) for line in archive.read_text().splitlines()]
    by_table: dict[str, int] = {}
    for row in rows:
        by_table[row["table"]] = by_table.get(row["table"], 0) + 1
    assert by_table == {
        "dag_run": 3,
        "task_instance": 6,
        "task_try": 6,
        "task_result": 6,
        "task_rendered": 6,
        "task_log": 12,
    }
    runs = {r["row"]["run_id"]: r["row"] for r in rows if r["table"] == "dag_run"}
    assert set(runs) == {"old_ok", "old_failed", "other_old"}
    assert datetime.fromisoformat(runs["old_ok"]["logical_date"]) == OLD

    again = hareflow(database_url, tmp_path, "--older-than", "30", "--archive", str(archive), "--yes")
    assert again.exit_code == 2
    assert "exists" in again.output


# -- what the scheduler needs ---------------------------------------------------------------------------

CATCHUP = """
from datetime import datetime
from hareflow import DAG, task
with DAG("catchup_daily", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=True):
    @task
    def only():
        return 1
    only()
"""


@ALL_DATABASES
def test_a_catchup_dag_cleaned_of_its_history_creates_none_of_its_old_runs_again(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    from hareflow.scheduler.dag_processor import DagProcessor
    from hareflow.scheduler.loop import LoopReport, Scheduler

    from tests.unit.test_scheduler_loop import DurableCapturingExecutor

    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "daily.py").write_text(CATCHUP)
    settings = fast_settings(tmp_path, dags_folder=str(tmp_path / "dags"), database_url=database_url)
    first_day = datetime(2026, 1, 1, tzinfo=UTC)
    now = first_day + timedelta(days=10, hours=1)
    DagProcessor(settings=settings, session_factory=sessions).run_once(now)
    scheduler = Scheduler(settings=settings, session_factory=sessions, executor=DurableCapturingExecutor())
    report = LoopReport()
    scheduler.create_due_runs(now, report)
    assert report.runs_created == 10
    with sessions() as s, s.begin():  # every run ended just after its interval
        for run in s.scalars(select(DagRun)):
            run.state, run.end_date = "success", run.data_interval_end + timedelta(minutes=1)
    dates_before = {d for d in (r.logical_date for r in _runs(sessions))}

    result = hareflow(database_url, tmp_path, "--older-than", "30", "--yes")

    assert result.exit_code == 0, result.output
    left = _runs(sessions)
    assert [r.logical_date for r in left] == [first_day + timedelta(days=9)]  # the latest stays
    assert "kept 1 old finished run" in result.stderr
    # The DAG file parsed again and the scheduler's next looks, then and a day later.
    DagProcessor(settings=settings, session_factory=sessions).run_once(now)
    for later in (now, now + timedelta(days=1)):
        report = LoopReport()
        scheduler.create_due_runs(later, report)
    new_dates = {r.logical_date for r in _runs(sessions)} - {first_day + timedelta(days=9)}
    assert new_dates == {first_day + timedelta(days=10)}  # the next interval only
    assert not new_dates & dates_before


def _runs(sessions: sessionmaker[Session]) -> list[DagRun]:
    with sessions() as s:
        return list(s.scalars(select(DagRun).order_by(DagRun.logical_date)))


@ALL_DATABASES
def test_the_run_before_an_active_run_and_a_running_backfills_runs_are_kept(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    dag_id = make_dag(sessions)
    add_run(sessions, dag_id, "oldest", when=OLD - timedelta(days=2))
    add_run(sessions, dag_id, "before_active", when=OLD - timedelta(days=1))
    add_run(sessions, dag_id, "active", when=OLD, state="queued")  # depends_on_past reads its previous run
    with sessions() as s, s.begin():
        backfill = Backfill(dag_id=dag_id, from_date=OLD, to_date=NOW, state="running", created_at=OLD)
        s.add(backfill)
        s.flush()
        backfill_id = backfill.id
    add_run(
        sessions,
        dag_id,
        "backfilled",
        when=OLD + timedelta(days=1),
        run_type="backfill",
        backfill_id=backfill_id,
    )
    add_run(sessions, dag_id, "newest", when=RECENT)

    result = hareflow(database_url, tmp_path, "--older-than", "30", "--yes")

    assert result.exit_code == 0, result.output
    assert run_ids(sessions, dag_id) == {"before_active", "active", "backfilled", "newest"}


# -- concurrency ----------------------------------------------------------------------------------------


@SERVER_DATABASES
def test_a_run_another_transaction_holds_is_left_alone_and_the_rest_is_cleaned(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    dag_id = make_dag(sessions)
    held = add_run(sessions, dag_id, "held", when=OLD)
    add_run(sessions, dag_id, "free", when=OLD + timedelta(hours=1))
    add_run(sessions, dag_id, "newest", when=RECENT)
    with sessions() as holder, holder.begin():
        # An operator clearing the run: it holds the row until its transaction ends.
        holder.execute(select(DagRun.id).where(DagRun.id == held).with_for_update())
        report = clean_history(sessions, cutoff=NOW - timedelta(days=30))
        holder.execute(update(DagRun).where(DagRun.id == held).values(state="queued", end_date=None))

    assert report.counts["dag_run"] == 1
    assert run_ids(sessions, dag_id) == {"held", "newest"}
    with sessions() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(TaskLog)
                .join(TaskInstance)
                .where(TaskInstance.run_pk == held)
            )
            == 4
        )


@ALL_DATABASES
def test_results_written_while_the_clean_up_runs_are_all_stored(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    from hareflow.common.messages import LogMessage, TaskKey
    from hareflow.scheduler.results import ResultsConsumer

    dag_id = make_dag(sessions)
    for n in range(60):
        add_run(sessions, dag_id, f"old{n}", when=OLD + timedelta(minutes=n), tasks=5)
    active = add_run(sessions, dag_id, "active", when=RECENT, state="running", tasks=1)
    with sessions() as s:
        ti = s.scalars(select(TaskInstance).where(TaskInstance.run_pk == active)).one()
        doomed = s.scalars(select(TaskInstance).where(TaskInstance.run_id == "old0")).first()
    assert doomed is not None
    consumer = ResultsConsumer(executor=None, session_factory=sessions, settings=fast_settings(tmp_path))  # type: ignore[arg-type]
    stop = threading.Event()
    written: list[int] = []

    def key(t: TaskInstance) -> TaskKey:
        return TaskKey(
            ti_id=t.id, dag_id=t.dag_id, run_id=t.run_id, task_id=t.task_id, map_index=-1, try_number=2
        )

    def write() -> None:
        seq = 100
        while not stop.is_set() or seq < 150:
            # Each batch also carries a late chunk for a task instance the clean-up deletes.
            batch = [
                LogMessage(key=key(ti), seq=seq, text=f"{seq}\n", at=0.0),
                LogMessage(key=key(doomed), seq=seq, text="late\n", at=0.0),
            ]
            consumer._commit(batch)
            written.append(seq)
            seq += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        report = clean_history(sessions, cutoff=NOW - timedelta(days=30), runs_per_batch=3, tis_per_batch=10)
    finally:
        stop.set()
        writer.join(60)

    assert report.counts["dag_run"] == 59  # old59 is kept: the run before the active one
    with sessions() as s:
        stored = set(s.scalars(select(TaskLog.seq).where(TaskLog.ti_id == ti.id, TaskLog.seq >= 100)))
        orphans = s.scalar(select(func.count()).select_from(TaskLog).where(TaskLog.ti_id == doomed.id))
    assert stored == set(written) and len(written) >= 50
    assert orphans == 0


# -- the scheduler's retention step ---------------------------------------------------------------------


@ALL_DATABASES
def test_the_scheduler_deletes_history_older_than_retention_days_hourly_a_slice_per_pass(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hareflow.scheduler import loop
    from hareflow.scheduler.loop import Scheduler

    from tests.unit.test_scheduler_loop import DurableCapturingExecutor

    dag_id = make_dag(sessions)
    for n in range(6):
        add_run(sessions, dag_id, f"old{n}", when=OLD + timedelta(minutes=n), tasks=1)
    add_run(sessions, dag_id, "recent", when=RECENT, tasks=1)
    settings = fast_settings(tmp_path, database_url=database_url, retention_days=30)
    scheduler = Scheduler(settings=settings, session_factory=sessions, executor=DurableCapturingExecutor())
    monkeypatch.setattr(loop, "CLEAN_HISTORY_BUDGET", 0.0)  # one transaction per pass ...
    monkeypatch.setattr(loop, "CLEAN_HISTORY_BATCH", (2, 2000, 1000))  # ... of two runs

    scheduler.clean_history(NOW)
    assert count(sessions, DagRun) == 5
    passes = 1
    while count(sessions, DagRun) > 1:  # the next passes go on at once
        scheduler.clean_history(NOW + timedelta(seconds=passes))
        passes += 1
    assert passes == 3
    assert run_ids(sessions, dag_id) == {"recent"}

    scheduler.clean_history(NOW + timedelta(seconds=passes))  # the round's last pass finds nothing left
    add_run(sessions, dag_id, "old_again", when=OLD)
    add_run(sessions, dag_id, "recent_again", when=RECENT + timedelta(hours=1))
    scheduler.clean_history(NOW + timedelta(minutes=30))  # within the hour: nothing
    assert count(sessions, DagRun) == 3
    scheduler.clean_history(NOW + timedelta(hours=1, seconds=2))
    assert run_ids(sessions, dag_id) == {"recent", "recent_again"}
    scheduler.clean_history(NOW + timedelta(hours=1, seconds=3))  # that round's last pass
    with sessions() as s:  # one audit row per round, however many passes it took
        rounds = s.execute(
            select(AuditLog.username, AuditLog.details)
            .where(AuditLog.action == "history_clean")
            .order_by(AuditLog.id)
        ).all()
    assert [(user, details["deleted"]["dag_run"]) for user, details in rounds] == [
        ("scheduler", 6),
        ("scheduler", 1),
    ]


@pytest.mark.parametrize("database_url", ["sqlite_url"], indirect=True)
def test_the_scheduler_keeps_everything_when_retention_days_is_zero(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    from hareflow.scheduler.loop import Scheduler

    from tests.unit.test_scheduler_loop import DurableCapturingExecutor

    history(sessions)
    settings = fast_settings(tmp_path, database_url=database_url)
    assert settings.retention_days == 0
    Scheduler(settings=settings, session_factory=sessions, executor=DurableCapturingExecutor()).run_once(NOW)
    assert count(sessions, DagRun) == 6


@pytest.mark.parametrize("database_url", ["sqlite_url", "postgres_url"], indirect=True)
def test_a_scheduler_iteration_with_retention_days_set_cleans_the_history(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    from hareflow.scheduler.loop import Scheduler

    from tests.unit.test_scheduler_loop import DurableCapturingExecutor

    dag_id, other = history(sessions)
    settings = fast_settings(tmp_path, database_url=database_url, retention_days=30)
    Scheduler(settings=settings, session_factory=sessions, executor=DurableCapturingExecutor()).run_once(NOW)
    assert run_ids(sessions, dag_id) == {"old_running", "recent"}
    assert run_ids(sessions, other) == {"other_recent"}


# -- the whole system ------------------------------------------------------------------------------------


def test_a_clean_up_while_a_run_streams_its_logs_loses_none_of_that_runs_writes(
    system: System, write_dag: Any, tmp_path: Path
) -> None:
    write_dag(
        "streaming.py",
        """
        import time
        from hareflow import DAG, task

        with DAG("streaming"):
            @task
            def talk():
                for n in range(50):
                    print(f"line {n}", flush=True)
                    time.sleep(0.1)
                return {"lines": 50}

            @task
            def after(value):
                return value["lines"] + 1

            after(talk())
        """,
    )
    system.start()
    sessions = system.c.sessions
    system.c.wait_for_dag("streaming")
    for n in range(150):
        add_run(sessions, "streaming", f"old{n}", when=OLD + timedelta(minutes=n), tasks=4)
    run_id = system.c.trigger("streaming")
    wait_until(
        lambda: getattr(system.tis("streaming", run_id).get("talk"), "state", None) == "running",
        message="talk running",
    )

    result = hareflow(system.settings.database_url, tmp_path, "--older-than", "30", "--yes", "-o", "json")

    still = system.tis("streaming", run_id)["talk"].state  # the clean-up took well under its 5 s

    assert result.exit_code == 0, result.output
    assert still == "running"
    assert system.c.wait_for_run("streaming", run_id, timeout=60) == "success"
    assert json.loads(result.stdout)["tables"]["dag_run"] == 149  # the run before the active one stays
    assert system.result("streaming", run_id, "after") == 51
    text = system.log_text("streaming", run_id, "talk")
    assert all(f"line {n}\n" in text for n in range(50)), text
    assert run_ids(sessions, "streaming") == {"old149", run_id}
