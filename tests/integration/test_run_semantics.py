"""Run semantics end to end: one run per logical date (CLI and the race of two triggers), timeout
callbacks and depends_on_past, on both executors over PostgreSQL, with subsets on SQLite and MariaDB."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hareflow.common.db import DagRun, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.common.runs import RunExistsError, trigger_run
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hareflow.cli import main
from hareflow.cluster import WorkerSpec
from tests.integration.conftest import System, wait_until
from tests.web.conftest import make_dag

ALL_DATABASES = pytest.mark.parametrize(
    "database_url", ["postgres_url", "mysql_url", "sqlite_url"], indirect=True
)
WHEN = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(request.param)


@pytest.fixture
def sessions(database_url: str) -> Any:
    engine = create_engine_for(database_url)
    migrate(engine)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


# -- one run per logical date -----------------------------------------------------------------------


@ALL_DATABASES
def test_the_cli_refuses_a_second_trigger_at_a_logical_date_another_run_has(
    database_url: str, sessions: Any, tmp_path: Path
) -> None:
    dag_id = make_dag(sessions, "dated")
    env = {
        "HAREFLOW_DATABASE_URL": database_url,
        "HAREFLOW_HOME": str(tmp_path / "home"),
        "HAREFLOW_BROKER_URL": "",
    }
    args = ["dags", "trigger", dag_id, "--logical-date", WHEN.isoformat()]

    first = CliRunner().invoke(main, [*args, "--run-id", "first"], env=env)
    second = CliRunner().invoke(main, [*args, "--run-id", "second"], env=env)

    assert first.exit_code == 0, first.output
    assert second.exit_code == 2
    assert f"already has a run at logical date {WHEN.isoformat()} ('first')" in second.output
    with sessions() as s:
        assert list(s.scalars(select(DagRun.run_id).where(DagRun.dag_id == dag_id))) == ["first"]


@ALL_DATABASES
def test_the_database_itself_refuses_two_runs_of_a_dag_at_one_logical_date(sessions: Any) -> None:
    dag_id = make_dag(sessions, "keyed")
    with sessions() as s, s.begin():
        trigger_run(s, dag_id, run_id="one", logical_date=WHEN)

    with pytest.raises(IntegrityError), sessions() as s, s.begin():
        s.add(
            DagRun(
                dag_id=dag_id,
                run_id="two",
                run_type="manual",
                state="queued",
                logical_date=WHEN,
                interval_key=WHEN,
                conf={},
                queued_at=WHEN,
            )
        )


@pytest.mark.parametrize("database_url", ["postgres_url", "mysql_url"], indirect=True)
def test_two_triggers_at_one_logical_date_at_the_same_moment_make_one_run(sessions: Any) -> None:
    dag_id = make_dag(sessions, "raced")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def trigger(run_id: str) -> None:
        with sessions() as s:
            try:
                with s.begin():
                    s.execute(select(DagRun.id).where(DagRun.dag_id == dag_id)).all()  # both look first
                    barrier.wait(10)
                    trigger_run(s, dag_id, run_id=run_id, logical_date=WHEN)
                outcomes.append("created")
            except RunExistsError as exc:
                outcomes.append(str(exc))

    threads = [threading.Thread(target=trigger, args=(name,)) for name in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert len(outcomes) == 2 and outcomes.count("created") == 1, outcomes
    assert any("logical date 2026-02-03T04:05:06+00:00" in o for o in outcomes), outcomes
    with sessions() as s:
        assert len(s.scalars(select(DagRun.id).where(DagRun.dag_id == dag_id)).all()) == 1


# -- execution_timeout runs the callbacks ---------------------------------------------------------------


@pytest.mark.parametrize("system", ["local", "rabbitmq", "sqlite-local"], indirect=True)
def test_a_task_over_its_execution_timeout_runs_its_retry_then_its_failure_callback(
    system: System, write_dag: Any, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    write_dag(
        "timeouts.py",
        f"""
        import pathlib, time
        from datetime import timedelta
        from hareflow import DAG, task

        MARKS = pathlib.Path({str(marks)!r})

        def on_retry(ctx, error):
            (MARKS / f"retry-{{ctx.try_number}}").write_text(str(error))

        def on_failure(ctx, error):
            (MARKS / f"failure-{{ctx.try_number}}").write_text(str(error))

        with DAG("timeouts"):
            @task(execution_timeout=timedelta(seconds=1), retries=1, retry_delay=0,
                  on_retry_callback=on_retry, on_failure_callback=on_failure)
            def sleepy():
                time.sleep(120)

            sleepy()
        """,
    )
    system.start()
    run_id, state = system.run_dag("timeouts", timeout=90)

    assert state == "failed"
    ti = system.tis("timeouts", run_id)["sleepy"]
    assert ti.try_number == 2 and "execution_timeout of 1s" in (ti.error or "")
    assert sorted(p.name for p in marks.iterdir()) == ["failure-2", "retry-1"]
    assert "execution_timeout of 1s" in (marks / "failure-2").read_text()
    # Interrupted in its own process: well before the worker's backstop kill (30 s later).
    assert ti.end_date - ti.start_date < timedelta(seconds=20)


# -- depends_on_past --------------------------------------------------------------------------------------


def _trigger_at(system: System, dag_id: str, when: datetime, conf: dict[str, Any]) -> str:
    with system.c.sessions() as s, s.begin():
        return trigger_run(s, dag_id, logical_date=when, conf=conf, triggered_by="test").run_id


@pytest.mark.parametrize("system", ["local", "rabbitmq", "mariadb-rabbitmq"], indirect=True)
def test_depends_on_past_holds_a_task_until_its_previous_instance_succeeded(
    system: System, write_dag: Any
) -> None:
    write_dag(
        "past.py",
        """
        from hareflow import DAG, task, TaskFailed

        with DAG("past"):
            @task
            def free():
                return "free"

            @task(depends_on_past=True)
            def held(ctx):
                if ctx.conf.get("fail"):
                    raise TaskFailed("asked to fail")
                return "held"

            free()
            held()

        with DAG("barrier"):
            @task
            def done():
                return "done"

            done()
        """,
    )
    system.start()
    system.c.wait_for_dag("past")
    first = _trigger_at(system, "past", WHEN, {})
    assert system.c.wait_for_run("past", first) == "success"  # the first run is free
    second = _trigger_at(system, "past", WHEN + timedelta(days=1), {"fail": True})
    assert system.c.wait_for_run("past", second) == "failed"  # its previous instance succeeded: it ran
    third = _trigger_at(system, "past", WHEN + timedelta(days=2), {})

    wait_until(
        lambda: (
            system.tis("past", third).get("free") and system.tis("past", third)["free"].state == "success"
        ),
        message="the third run's free task to succeed",
    )
    system.run_dag("barrier")  # the scheduler has made more passes since

    assert system.tis("past", second)["held"].state == "failed"
    assert system.tis("past", third)["held"].state == "none"
    assert [r.state for r in system.runs("past")] == ["success", "failed", "running"]


# -- dagrun_timeout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["local", "rabbitmq", "sqlite-local"], indirect=True)
def test_a_run_past_its_dagrun_timeout_fails_and_its_unfinished_tasks_are_skipped(
    system: System, write_dag: Any
) -> None:
    write_dag(
        "bounded.py",
        """
        import time
        from datetime import timedelta
        from hareflow import DAG, task

        with DAG("bounded", dagrun_timeout=timedelta(seconds=2)):
            @task
            def quick():
                return 1

            @task
            def slow(value):
                time.sleep(8)

            @task
            def after():
                return 2

            slow(quick()) >> after()
        """,
    )
    system.start()
    run_id, state = system.run_dag("bounded", timeout=25)

    assert state == "failed"
    tis = system.tis("bounded", run_id)
    assert {t: ti.state for t, ti in tis.items()} == {
        "quick": "success",
        "slow": "skipped",
        "after": "skipped",
    }
    run = next(r for r in system.runs("bounded") if r.run_id == run_id)
    assert run.end_date is not None and run.start_date is not None
    assert run.end_date - run.start_date < timedelta(seconds=7)


def _process_gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (gone, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("system", ["local", "rabbitmq"], indirect=True)
def test_a_try_running_when_its_run_passes_the_dagrun_timeout_is_stopped_on_its_worker(
    system: System, write_dag: Any, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    write_dag(
        "stopped.py",
        f"""
        import os, pathlib, subprocess, time
        from datetime import timedelta
        from hareflow import DAG, task

        with DAG("stopped", dagrun_timeout=timedelta(seconds=2)):
            @task
            def long():
                child = subprocess.Popen(["sleep", "60"])
                pathlib.Path({str(pids)!r}).write_text(f"{{os.getpid()}} {{child.pid}}")
                print("sleeping", flush=True)
                time.sleep(60)

            long()
        """,
    )
    system.start()
    run_id, state = system.run_dag("stopped", timeout=25)
    assert state == "failed"
    task_pid, child_pid = (int(p) for p in wait_until(pids.read_text, message="the pid file").split())

    # The task process and what it started are killed within a few seconds of the timeout.
    wait_until(lambda: _process_gone(task_pid) and _process_gone(child_pid), timeout=10, message="killed")
    log = wait_until(
        lambda: (text := system.log_text("stopped", run_id, "long")) and "was stopped" in text and text,
        timeout=10,
        message="the stop in the try's log",
    )
    assert "its task instance was set to 'skipped'" in log
    # The killed try's report (failed) changed nothing: the instance stays skipped, with the reason.
    ti = system.tis("stopped", run_id)["long"]
    assert ti.state == "skipped"
    assert ti.error == "the run passed its dagrun_timeout of 2s; try 1 was stopped"
    assert [r.state for r in system.runs("stopped")] == ["failed"]


@pytest.mark.parametrize("system", ["local", "rabbitmq"], indirect=True)
def test_a_try_still_waiting_for_a_slot_when_its_run_times_out_is_never_started(
    system: System, write_dag: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ran = tmp_path / "second-ran"
    write_dag(
        "waiting.py",
        f"""
        import pathlib, time
        from datetime import timedelta
        from hareflow import DAG, task

        with DAG("waiting", dagrun_timeout=timedelta(seconds=2)):
            @task
            def first():
                time.sleep(60)

            @task
            def second():
                pathlib.Path({str(ran)!r}).write_text("ran")

            first()
            second()
        """,
    )
    caplog.set_level("INFO", logger="hareflow.worker.runtime")
    system.start(workers=[WorkerSpec(concurrency=1)])  # one slot: the second try waits behind the first
    run_id, state = system.run_dag("waiting", timeout=25)
    assert state == "failed"
    tis = system.tis("waiting", run_id)
    assert {t: ti.state for t, ti in tis.items()} == {"first": "skipped", "second": "skipped"}
    assert tis["second"].error == "the run passed its dagrun_timeout of 2s; try 1 was stopped"

    wait_until(lambda: "(before it started)" in caplog.text, timeout=15, message="the waiting try settled")
    assert not ran.exists()


# -- DAG-level callbacks --------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["local", "rabbitmq", "mariadb-rabbitmq"], indirect=True)
def test_dag_callbacks_run_once_a_run_succeeds_fails_or_times_out(
    system: System, write_dag: Any, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    write_dag(
        "callbacks.py",
        f"""
        import os, pathlib, time
        from datetime import timedelta
        from hareflow import DAG, task, TaskFailed

        MARKS = pathlib.Path({str(marks)!r})

        def done(ctx, reason):
            text = f"{{ctx.run_id}} {{ctx.params['who']}} {{os.getpid()}}"
            (MARKS / f"{{ctx.dag_id}}-{{reason}}").write_text(text)

        for dag_id, body in (("good", "pass"), ("bad", "fail"), ("slow", "sleep")):
            with DAG(dag_id, params={{"who": "me"}}, on_success_callback=done, on_failure_callback=done,
                     dagrun_timeout=timedelta(seconds=2) if body == "sleep" else None):
                @task
                def work(what=body):
                    if what == "fail":
                        raise TaskFailed("no")
                    if what == "sleep":
                        time.sleep(8)

                work()
        """,
    )
    system.start()
    good, good_state = system.run_dag("good")
    bad, bad_state = system.run_dag("bad")
    slow, slow_state = system.run_dag("slow", timeout=25)

    assert (good_state, bad_state, slow_state) == ("success", "failed", "failed")
    expected = {"good-success": good, "bad-task_failure": bad, "slow-timed_out": slow}
    wait_until(lambda: {p.name for p in marks.iterdir()} == set(expected), message="the three DAG callbacks")
    for name, run_id in expected.items():
        text = (marks / name).read_text().split()
        assert text[:2] == [run_id, "me"]
        assert int(text[2]) != os.getpid()  # not in this process (the scheduler of the local system)


# -- @continuous ----------------------------------------------------------------------------------------


def test_a_continuous_dag_starts_a_new_run_as_soon_as_the_previous_one_finishes(
    system: System, write_dag: Any
) -> None:
    write_dag(
        "forever.py",
        """
        from datetime import datetime
        from hareflow import DAG, task

        with DAG("forever", schedule="@continuous", start_date=datetime(2026, 1, 1), max_active_runs=1):
            @task
            def step():
                return 1

            step()
        """,
    )
    system.start()

    def finished() -> list[DagRun]:
        return [r for r in system.runs("forever") if r.state == "success"]

    wait_until(lambda: len(finished()) >= 3, timeout=60, message="three continuous runs")
    runs = sorted(finished(), key=lambda r: r.logical_date)[:3]
    assert all(r.run_type == "scheduled" for r in runs)
    for before, after in zip(runs, runs[1:], strict=False):
        assert after.start_date >= before.end_date  # one at a time
        assert after.data_interval_start == before.logical_date


@ALL_DATABASES
def test_a_scheduled_interval_whose_logical_date_a_manual_run_took_is_passed_over(sessions: Any) -> None:
    from hareflow.common.db import Dag
    from hareflow.common.runs import refresh_next_run

    dag_id = make_dag(sessions, "taken", schedule="@daily")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with sessions() as s, s.begin():
        dag = s.get(Dag, dag_id)
        dag.serialized = {**dag.serialized, "catchup": True}
        before = refresh_next_run(s, dag, start + timedelta(days=5))
        trigger_run(s, dag_id, run_id="by_hand", logical_date=start)
        after = refresh_next_run(s, dag, start + timedelta(days=5))

    assert before is not None and before.logical_date == start
    assert after is not None and after.logical_date == start + timedelta(days=1)
