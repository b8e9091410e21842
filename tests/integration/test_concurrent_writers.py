"""Several schedulers write the same rows at the same moment (the HA deployment).

Each test holds one writer's transaction open at the point where it has inserted its rows, starts a
second writer that must wait for it, waits until the database shows that writer blocked on a lock,
then lets the first commit. The second must neither fail nor duplicate anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import (
    Dag,
    DagCode,
    DagRun,
    ImportError_,
    create_engine_for,
    make_session_factory,
)
from hareflow.common.db.migrate import migrate
from hareflow.common.runs import trigger_run
from hareflow.scheduler.dag_processor import DagProcessor, FileReport, ProcessReport, parse_file
from hareflow.scheduler.loop import LoopReport, Scheduler
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import fast_settings
from tests.unit.test_scheduler_loop import DurableCapturingExecutor

DATABASES = {"postgresql": "postgres_url", "mariadb": "mysql_url"}

GOOD = """
from datetime import datetime
from hareflow import DAG, task
for name in ("first", "second"):
    with DAG(name, schedule="@daily", start_date=datetime(2026, 1, 1), catchup=True):
        @task
        def only():
            return 1
        only()
"""
BROKEN = "from hareflow import DAG\nthis is not python\n"


@pytest.fixture(params=list(DATABASES))
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    engine = create_engine_for(request.getfixturevalue(DATABASES[request.param]))
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _waiting_on_a_lock(engine: Engine) -> bool:
    """Whether another connection to this database is stuck in a write right now (the first
    writer sits idle at its gate, so the only statement in progress is the second writer's)."""
    if engine.dialect.name == "postgresql":
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
    else:
        # MariaDB does not always list the waiting transaction as LOCK WAIT in innodb_trx.
        query = (
            "SELECT count(*) FROM information_schema.processlist WHERE db = database()"
            " AND id <> connection_id() AND (info LIKE 'INSERT%' OR info LIKE 'UPDATE%'"
            " OR info LIKE '%FOR UPDATE%')"
        )
    with engine.connect() as conn:
        return bool(conn.execute(text(query)).scalar())


class Gate:
    """Holds every transaction of a session factory just before it commits, until opened."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.arrived = threading.Event()
        self.open = threading.Event()
        event.listen(sessions, "before_commit", self._hold)

    def _hold(self, session: Session) -> None:
        self.arrived.set()
        assert self.open.wait(60), "the gate was never opened"


def _in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _race(engine: Engine, first: Callable[[], Any], second: Callable[[], Any], gate: Gate) -> None:
    """``first`` runs to just before its commit; ``second`` starts and blocks on its rows; then
    ``first`` commits. Both must end without an error."""
    thread_a, errors_a = _in_thread(first)
    assert gate.arrived.wait(60), "the first writer never reached its commit"
    thread_b, errors_b = _in_thread(second)
    deadline = datetime.now(UTC).timestamp() + 60
    while not _waiting_on_a_lock(engine) and thread_b.is_alive():
        assert datetime.now(UTC).timestamp() < deadline, "the second writer never waited for the first"
        threading.Event().wait(0.02)
    gate.open.set()
    thread_a.join(60)
    thread_b.join(60)
    assert not errors_a and not errors_b, f"first: {errors_a!r}, second: {errors_b!r}"


def _processors(engine: Engine, tmp_path: Path) -> tuple[DagProcessor, DagProcessor, Gate]:
    settings = fast_settings(tmp_path, dags_folder=str(tmp_path / "dags"))
    held = make_session_factory(engine)
    gate = Gate(held)
    first = DagProcessor(settings=settings, session_factory=held)
    second = DagProcessor(settings=settings, session_factory=make_session_factory(engine))
    return first, second, gate


@pytest.mark.parametrize("source", [GOOD, BROKEN], ids=["dags", "import-error"])
def test_two_schedulers_storing_the_same_new_file_at_once_both_succeed_and_store_it_once(
    engine: Engine, tmp_path: Path, source: str
) -> None:
    (tmp_path / "dags").mkdir()
    path = tmp_path / "dags" / "race.py"
    path.write_text(source)
    report: FileReport = parse_file(str(path), 60)
    first, second, gate = _processors(engine, tmp_path)
    now = datetime.now(UTC)
    _race(
        engine,
        lambda: first._store(report, now, ProcessReport()),
        lambda: second._store(report, now, ProcessReport()),
        gate,
    )
    sessions = make_session_factory(engine)
    with sessions() as s:
        dags = s.execute(select(Dag.dag_id, Dag.is_active, Dag.fileloc)).all()
        codes = s.scalar(select(func.count()).select_from(DagCode))
        errors = s.scalars(select(ImportError_.message)).all()
    assert sorted(dags) == sorted((d["dag_id"], True, str(path)) for d in report.dags)
    assert codes == 1
    assert len(errors) == len(report.errors), errors
    if source is BROKEN:
        assert len(errors) == 1


def test_a_scheduler_creating_runs_skips_a_dag_another_scheduler_is_creating_runs_for(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "daily.py").write_text(GOOD)
    settings = fast_settings(tmp_path, dags_folder=str(tmp_path / "dags"))
    sessions = make_session_factory(engine)
    now = datetime(2026, 1, 5, 10, tzinfo=UTC)
    DagProcessor(settings=settings, session_factory=sessions).run_once(now)
    other = Scheduler(settings=settings, session_factory=sessions, executor=DurableCapturingExecutor())
    with sessions() as holder, holder.begin():
        holder.get(Dag, "first", with_for_update=True)  # another scheduler is creating its runs
        report = LoopReport()
        other.create_due_runs(now, report)  # does not wait for the lock
        created_while_locked = report.runs_created
    report = LoopReport()
    other.create_due_runs(now, report)
    with sessions() as s:
        dates = s.execute(select(DagRun.dag_id, DagRun.logical_date)).all()
    assert created_while_locked == 4  # "second" only
    assert report.runs_created == 4  # then "first"
    assert sorted(dates) == sorted(
        (d, datetime(2026, 1, day, tzinfo=UTC)) for d in ("first", "second") for day in (1, 2, 3, 4)
    )


def test_two_triggers_of_the_same_run_id_at_once_give_one_run_and_one_clear_error(
    engine: Engine, tmp_path: Path
) -> None:
    from hareflow.common.runs import RunExistsError

    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "daily.py").write_text(GOOD)
    settings = fast_settings(tmp_path, dags_folder=str(tmp_path / "dags"))
    DagProcessor(settings=settings, session_factory=make_session_factory(engine)).run_once()
    held = make_session_factory(engine)
    gate = Gate(held)
    outcomes: list[str] = []

    def trigger(sessions: sessionmaker[Session]) -> None:
        try:
            with sessions() as s, s.begin():
                trigger_run(s, "first", run_id="nightly-rerun")
            outcomes.append("created")
        except RunExistsError as exc:
            outcomes.append(str(exc))

    _race(engine, lambda: trigger(held), lambda: trigger(make_session_factory(engine)), gate)
    with held() as s:
        runs = s.scalars(select(DagRun.run_id).where(DagRun.dag_id == "first")).all()
    assert runs == ["nightly-rerun"]
    assert sorted(outcomes) == ["DAG 'first' already has a run 'nightly-rerun'", "created"]


def test_two_scheduler_processes_with_one_identity_heartbeat_at_once_into_one_row(
    engine: Engine, tmp_path: Path
) -> None:
    """The same pid in two containers given the same hostname: one heartbeat row, no failure."""
    from hareflow.common.db import SchedulerHeartbeat

    settings = fast_settings(tmp_path)
    held = make_session_factory(engine)
    gate = Gate(held)
    first = Scheduler(settings=settings, session_factory=held, executor=DurableCapturingExecutor())
    second = Scheduler(
        settings=settings, session_factory=make_session_factory(engine), executor=DurableCapturingExecutor()
    )
    second.ident = first.ident
    now = datetime.now(UTC)
    _race(engine, lambda: first.heartbeat(now), lambda: second.heartbeat(now), gate)
    with held() as s:
        assert s.scalars(select(SchedulerHeartbeat.id)).all() == [first.ident]


LIMITED = """
from hareflow import DAG, task
with DAG("limited", max_active_runs={runs}, max_active_tasks=1):
    @task
    def only():
        return 1
    only()
"""


@pytest.mark.parametrize("limit", ["max_active_tasks", "max_active_runs"])
def test_a_limit_counts_the_runs_another_scheduler_has_locked(
    engine: Engine, tmp_path: Path, limit: str
) -> None:
    """One scheduler's pass holds run 1 (its task queued); another scheduler's pass, which skips
    the locked run, must still count it: no second task (max_active_tasks=1), no second run
    started (max_active_runs=1)."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "limited.py").write_text(
        LIMITED.format(runs=1 if limit == "max_active_runs" else 16)
    )
    settings = fast_settings(tmp_path, dags_folder=str(tmp_path / "dags"))
    sessions = make_session_factory(engine)
    DagProcessor(settings=settings, session_factory=sessions).run_once()
    first = Scheduler(settings=settings, session_factory=sessions, executor=DurableCapturingExecutor())
    second = Scheduler(settings=settings, session_factory=sessions, executor=DurableCapturingExecutor())
    with sessions() as s, s.begin():
        one = trigger_run(s, "limited", run_id="one").id
    assert first.run_once().dispatched == 1  # run one started, its task queued
    with sessions() as s, s.begin():
        trigger_run(s, "limited", run_id="two")
    with sessions() as holder, holder.begin():
        holder.get(DagRun, one, with_for_update=True)  # the first scheduler's pass holds run one
        report = second.run_once()
    with sessions() as s:
        states = dict(s.execute(select(DagRun.run_id, DagRun.state)).tuples().all())
    assert report.dispatched == 0
    if limit == "max_active_runs":
        assert states == {"one": "running", "two": "queued"}
    else:
        assert states == {"one": "running", "two": "running"}
