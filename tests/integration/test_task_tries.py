"""Earlier tries are kept as they ended (``common.tries``): a retry and a clear copy the finished
try to ``task_try`` before the next one replaces it, on every database, and the task-instance page
shows a chosen try's state, host and error from there (tests/web/test_pages.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hareflow.common.db import DagRun, TaskInstance, TaskTry, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.common.operations import clear_task_instances
from hareflow.common.tries import keep_tries
from sqlalchemy import select

from tests.integration.conftest import System
from tests.web.conftest import make_dag

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["postgres_url", "mysql_url", "sqlite_url"])
def sessions(request: pytest.FixtureRequest) -> Any:
    engine = create_engine_for(request.getfixturevalue(request.param))
    migrate(engine)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _failed_try(sessions: Any) -> int:
    dag_id = make_dag(sessions, tasks=[("work", ())])
    with sessions() as s, s.begin():
        run = DagRun(dag_id=dag_id, run_id="r1", run_type="manual", state="failed", conf={}, queued_at=T0)
        s.add(run)
        s.flush()
        ti = TaskInstance(
            run_pk=run.id,
            dag_id=dag_id,
            run_id="r1",
            task_id="work",
            map_index=-1,
            state="failed",
            try_number=1,
            max_tries=1,
            queue="default",
            priority=1,
            pool_slots=1,
            worker="w1",
            hostname="host-a",
            pid=4242,
            queued_at=T0,
            start_date=T0,
            end_date=T0,
            duration=3.5,
            error="ValueError: bad input",
        )
        s.add(ti)
        s.flush()
        return ti.id


def test_keeping_a_try_copies_it_once_and_a_later_copy_does_not_overwrite_it(sessions: Any) -> None:
    ti_id = _failed_try(sessions)
    with sessions() as s, s.begin():
        keep_tries(s, [(ti_id, 1)])
    with sessions() as s, s.begin():  # the row is blanked (as a clear does), then copied again
        ti = s.get(TaskInstance, ti_id)
        ti.state, ti.error, ti.end_date, ti.hostname = "none", None, None, None
        s.flush()
        keep_tries(s, [(ti_id, 1)])
        keep_tries(s, [(ti_id, 0)])  # a try never started: nothing to keep

    with sessions() as s:
        [kept] = s.scalars(select(TaskTry).where(TaskTry.ti_id == ti_id)).all()
    assert (kept.try_number, kept.state, kept.hostname, kept.worker, kept.pid) == (
        1,
        "failed",
        "host-a",
        "w1",
        4242,
    )
    assert kept.error == "ValueError: bad input" and kept.duration == 3.5
    assert kept.start_date == T0 and kept.end_date == T0


def test_a_clear_keeps_the_try_it_blanks(sessions: Any) -> None:
    ti_id = _failed_try(sessions)
    with sessions() as s, s.begin():
        dag_id = s.get(TaskInstance, ti_id).dag_id  # type: ignore[union-attr]
        clear_task_instances(s, dag_id, run_id="r1", username="ana")

    with sessions() as s:
        ti = s.get(TaskInstance, ti_id)
        kept = s.get(TaskTry, (ti_id, 1))
    assert ti is not None and ti.state == "none" and ti.error is None
    assert kept is not None and kept.state == "failed" and kept.error == "ValueError: bad input"


def test_a_retried_task_keeps_the_try_that_failed(system: System, write_dag: Any) -> None:
    write_dag(
        "flaky.py",
        """
        from datetime import timedelta
        from hareflow import DAG, task

        with DAG("flaky_once"):
            @task(retries=1, retry_delay=timedelta(seconds=0))
            def work(ti):
                if ti.try_number == 1:
                    raise RuntimeError("first try always fails")
                return "second try worked"

            work()
        """,
    )
    system.start()
    run_id, state = system.run_dag("flaky_once")

    assert state == "success"
    ti = system.tis("flaky_once", run_id)["work"]
    with system.c.sessions() as s:
        kept = s.get(TaskTry, (ti.id, 1))
    assert ti.try_number == 2 and ti.state == "success" and ti.error is None
    assert (
        kept is not None and kept.state == "up_for_retry" and "first try always fails" in (kept.error or "")
    )
    assert kept.worker and kept.hostname and kept.start_date and kept.end_date
