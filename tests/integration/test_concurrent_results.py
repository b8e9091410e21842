"""Two results consumers racing over the same task instances, in any arrival order, on all three
databases: every write is a compare-and-set, so each task instance ends in the state of its latest
try's final report and the run finishes.

The interleaving is chosen by a seeded random schedule, not left to thread timing: each consumer
reads its batch (``read_reports``, the transaction then open), and at a later step of the schedule
writes and commits it (``write_reports``), while the other consumer may read, write and commit its
own batches in between. That is exactly the window in which a late ``running`` report used to
overwrite a ``success`` the other consumer had committed. SQLite serializes transactions
(``BEGIN IMMEDIATE``), so there a batch's read and write follow each other and only the arrival
order is random.
"""

from __future__ import annotations

import random
import subprocess
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hareflow.common.config import load_settings
from hareflow.common.dag.serialize import SerializedDag
from hareflow.common.db import (
    Dag,
    DagRun,
    TaskInstance,
    TaskResult,
    Worker,
    create_engine_for,
    make_session_factory,
)
from hareflow.common.db.migrate import migrate
from hareflow.common.messages import Message, ResultMessage, TaskKey
from hareflow.common.runs import trigger_run
from hareflow.scheduler.dag_processor import DagProcessor
from hareflow.scheduler.results import ReportBatch, read_reports, write_reports
from hareflow.scheduler.scheduling import schedule_pass
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tests.fault.report import record_fault
from tests.integration.conftest import wait_until

WIDTH = 48
DAG_SOURCE = f"""
    from datetime import datetime, timedelta
    from hareflow import DAG, task

    with DAG("racing", schedule=None, start_date=datetime(2026, 1, 1), max_active_tasks={WIDTH},
             default_args={{"retries": 1, "retry_delay": timedelta(seconds=0)}}):
        for i in range({WIDTH}):
            @task(task_id=f"t{{i:02d}}")
            def work():
                return 1
            work()
"""
DATABASES = {"postgresql": "postgres_url", "mariadb": "mysql_url", "sqlite": "sqlite_url"}
#: What each task instance's tries do: the last outcome is the one it must end with.
PLANS = [("success",), ("failed", "success"), ("failed", "failed")]


def _serialized(session: Session, dag) -> SerializedDag:  # type: ignore[no-untyped-def]
    return SerializedDag.from_dict(dag.serialized)


@dataclass
class Consumer:
    """One results consumer: a session of its own and at most one batch read but not written."""

    sessions: sessionmaker[Session]
    session: Session | None = None
    batch: ReportBatch | None = None
    done: int = field(default=0)

    messages: list[Message] = field(default_factory=list)

    def read(self, messages: list[Message]) -> None:
        self.session = self.sessions()
        self.session.begin()
        self.messages = messages
        self.batch = read_reports(self.session, messages)

    def write(self) -> None:
        assert self.session is not None and self.batch is not None
        try:
            write_reports(self.session, self.batch, datetime.now(UTC))
            self.session.commit()
        except IntegrityError:
            # As ResultsConsumer does: a result another consumer stored first; redo one by one.
            self.close()
            for m in self.messages:
                with self.sessions() as s:
                    try:
                        with s.begin():
                            write_reports(s, read_reports(s, [m]), datetime.now(UTC))
                    except IntegrityError:
                        pass
        finally:
            self.close()
        self.done += 1

    def close(self) -> None:
        if self.session is not None:
            self.session.close()  # rolls back what was not committed, releasing its locks
        self.session, self.batch = None, None


def _reports(ti: TaskInstance, try_number: int, outcome: str, at: float) -> list[ResultMessage]:
    key = TaskKey(ti.id, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, try_number)
    common = {"worker": f"w{try_number}", "hostname": "h", "pid": 100 + try_number}
    value = {"result_json": "1"} if outcome == "success" else {"error": "boom"}
    return [
        ResultMessage(key=key, outcome="running", at=at, **common),  # type: ignore[arg-type]
        ResultMessage(key=key, outcome=outcome, at=at + 0.5, started_at=at, **common, **value),  # type: ignore[arg-type]
    ]


def _race(sessions: sessionmaker[Session], messages: list[Message], rng: random.Random, serial: bool) -> None:
    """Feed ``messages`` in batches of 1-6 to two consumers on an interleaving chosen by ``rng``."""
    pending = list(messages)
    consumers = [Consumer(sessions), Consumer(sessions)]
    try:
        while pending or any(c.batch is not None for c in consumers):
            c = rng.choice(consumers)
            if c.batch is not None:
                c.write()
            elif pending:
                size = rng.randint(1, 6)
                batch, pending = pending[:size], pending[size:]
                c.read(batch)
                if serial:
                    c.write()
    finally:
        for c in consumers:
            c.close()
    assert all(c.done for c in consumers)


def _tis(sessions: sessionmaker[Session]) -> dict[str, TaskInstance]:
    with sessions() as s:
        return {ti.task_id: ti for ti in s.scalars(select(TaskInstance))}


def _schedule(sessions: sessionmaker[Session], now: datetime) -> None:
    with sessions() as s, s.begin():
        schedule_pass(s, now, _serialized)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("database", list(DATABASES))
def test_two_consumers_in_any_order_record_each_latest_try_and_the_run_finishes(
    database: str, seed: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue(DATABASES[database])
    engine = create_engine_for(url)
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        folder = tmp_path / "dags"
        folder.mkdir()
        (folder / "racing.py").write_text(textwrap.dedent(DAG_SOURCE))
        settings = load_settings(
            env={}, overrides={"dags_folder": str(folder), "dags_are_paused_at_creation": False}
        )
        DagProcessor(settings=settings, session_factory=sessions, folder=folder).run_once()
        with sessions() as s, s.begin():
            run_id = trigger_run(s, "racing", triggered_by="test").run_id
        rng = random.Random(seed)
        plans = {f"t{i:02d}": PLANS[i % len(PLANS)] for i in range(WIDTH)}
        now = datetime.now(UTC)
        _schedule(sessions, now)  # starts the run, creates and queues every task instance (try 1)
        tis = _tis(sessions)
        assert {ti.state for ti in tis.values()} == {"queued"}
        serial = engine.dialect.name == "sqlite"

        # Try 1 of every task instance, each report delivered twice (a redelivery), in a random order.
        first = [m for t, ti in tis.items() for m in _reports(ti, 1, plans[t][0], 1000.0 + ti.id)]
        messages: list[Message] = first * 2
        rng.shuffle(messages)
        _race(sessions, messages, rng, serial)
        tis = _tis(sessions)
        for task_id, ti in tis.items():
            expected = "success" if plans[task_id][0] == "success" else "up_for_retry"
            assert (ti.state, ti.try_number) == (expected, 1), (task_id, ti.state, ti.end_date)
            assert ti.end_date == datetime.fromtimestamp(1000.5 + ti.id, tz=UTC), task_id

        _schedule(sessions, now)  # the failed ones go to try 2
        tis = _tis(sessions)
        retried = {t for t, ti in tis.items() if len(plans[t]) == 2}
        assert {t for t, ti in tis.items() if (ti.state, ti.try_number) == ("queued", 2)} == retried

        # Try 2 of those, mixed with late copies of every try-1 report: the old try changes nothing.
        second = [m for t in sorted(retried) for m in _reports(tis[t], 2, plans[t][1], 2000.0 + tis[t].id)]
        messages = second * 2 + first
        rng.shuffle(messages)
        _race(sessions, messages, rng, serial)

        tis = _tis(sessions)
        for task_id, ti in tis.items():
            tries = plans[task_id]
            base = 1000.0 if len(tries) == 1 else 2000.0
            start, end = (datetime.fromtimestamp(base + ti.id + d, tz=UTC) for d in (0.0, 0.5))
            assert (ti.state, ti.try_number) == (tries[-1], len(tries)), (task_id, ti.state, ti.end_date)
            assert (ti.start_date, ti.end_date, ti.duration) == (start, end, 0.5), task_id
            assert ti.worker == f"w{len(tries)}", task_id
        with sessions() as s:
            results = set(s.execute(select(TaskResult.ti_id, TaskResult.try_number)).tuples())
        assert results == {(tis[t].id, len(p)) for t, p in plans.items() if p[-1] == "success"} | {
            (tis[t].id, 1) for t, p in plans.items() if p[0] == "success"
        }

        _schedule(sessions, now)
        with sessions() as s:
            run = s.scalar(select(DagRun).where(DagRun.run_id == run_id))
            assert run is not None and run.state == "failed" and run.end_date is not None
    finally:
        engine.dispose()


# -- end to end: two `hareflow results` processes, two workers, real RabbitMQ and PostgreSQL --------

E2E_WIDTH = 300
E2E_DAG = f"""
    import time
    from datetime import datetime
    from hareflow import DAG, task

    with DAG("racing_e2e", schedule=None, start_date=datetime(2026, 1, 1), max_active_tasks={E2E_WIDTH}):
        for i in range({E2E_WIDTH}):
            @task(task_id=f"p{{i:03d}}")
            def nap():
                time.sleep(0.15)  # past running_report_delay: every try reports running, then success
            nap()
"""


@pytest.mark.timeout(240)
def test_two_results_processes_and_two_workers_finish_every_short_parallel_task(
    postgres_url: str, rabbitmq_url: str, broker_prefix: str, tmp_path: Path
) -> None:
    from tests.integration.test_cli import run_hareflow, start_hareflow

    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "racing_e2e.py").write_text(textwrap.dedent(E2E_DAG))
    env = {
        "HAREFLOW_HOME": str(tmp_path / "home"),
        "HAREFLOW_DATABASE_URL": postgres_url,
        "HAREFLOW_BROKER_URL": rabbitmq_url,
        "HAREFLOW_BROKER_PREFIX": broker_prefix,
        "HAREFLOW_DAGS_FOLDER": str(folder),
        "HAREFLOW_DAGS_ARE_PAUSED_AT_CREATION": "false",
        "HAREFLOW_RUN_RESULTS_CONSUMER": "false",
        "HAREFLOW_SCHEDULER_IDLE_WAIT": "0.2",
        "HAREFLOW_DAG_DIR_LIST_INTERVAL": "0.5",
        "HAREFLOW_HEARTBEAT_INTERVAL": "1",
        "HAREFLOW_LOG_LEVEL": "WARNING",
    }
    migrated = run_hareflow(env, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    logs = tmp_path / "logs"
    logs.mkdir()
    roles = [
        ("scheduler",),
        ("results",),
        ("results",),
        ("worker", "--concurrency", "6", "--name", "race-w1"),
        ("worker", "--concurrency", "6", "--name", "race-w2"),
    ]
    procs = []
    engine = create_engine_for(postgres_url)
    sessions = make_session_factory(engine)
    try:
        for n, args in enumerate(roles):
            out = (logs / f"{n}-{args[0]}.log").open("w")
            procs.append(start_hareflow(env, *args, stdout=out, stderr=subprocess.STDOUT))
        wait_until(
            lambda: _dag_ready(sessions), timeout=60, message="the DAG to be parsed and two workers up"
        )
        triggered = run_hareflow(env, "dags", "trigger", "racing_e2e", "--run-id", "race")
        assert triggered.returncode == 0, triggered.stderr
        run_id = "race"

        def finished() -> str | None:
            with sessions() as s:
                state = s.scalar(select(DagRun.state).where(DagRun.run_id == run_id))
            return state if state in ("success", "failed") else None

        def stuck() -> str:
            with sessions() as s:
                rows = s.execute(
                    select(TaskInstance.state, TaskInstance.end_date.is_not(None)).where(
                        TaskInstance.run_id == run_id
                    )
                ).all()
            return f"task instance (state, end_date set) counts: {dict(Counter(map(tuple, rows)))}"

        deadline = time.monotonic() + 90
        while (state := finished()) is None:
            assert time.monotonic() < deadline, f"the run never finished; {stuck()}"
            time.sleep(0.2)
        assert state == "success", stuck()
        with sessions() as s:
            tis = s.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)).all()
        record_fault(
            "two results consumers, two workers, short parallel tasks",
            tasks=len(tis),
            lost=sum(1 for ti in tis if ti.state != "success"),  # stranded or moved backwards
            more_than_once=sum(1 for ti in tis if ti.try_number > 1),
        )
        assert len(tis) == E2E_WIDTH
        assert {(ti.state, ti.try_number) for ti in tis} == {("success", 1)}
        assert all(ti.start_date is not None and ti.end_date >= ti.start_date for ti in tis)  # type: ignore[operator]
        assert {ti.worker for ti in tis} == {"race-w1", "race-w2"}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        engine.dispose()


def _dag_ready(sessions: sessionmaker[Session]) -> bool:
    with sessions() as s:
        dag = s.get(Dag, "racing_e2e")
        workers = s.scalar(select(func.count()).select_from(Worker).where(Worker.state == "active"))
    return dag is not None and dag.serialized is not None and workers == 2
