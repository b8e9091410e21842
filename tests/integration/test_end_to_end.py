"""End to end: DAG files in, a real scheduler and real workers, results in a real metastore.

Every test runs on both executors (local and RabbitMQ) over PostgreSQL; the core ones (chain,
return values, retries) also on SQLite with the local executor and MariaDB with RabbitMQ.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.db import Dag, ImportError_, Pool, TaskResult
from hareflow.scheduler.loop import LoopReport, Scheduler
from sqlalchemy import select

from hareflow.cluster import WorkerSpec
from tests.fault.report import record_fault
from tests.integration.conftest import System, wait_until

CORE_SYSTEMS = pytest.mark.parametrize(
    "system", ["local", "rabbitmq", "sqlite-local", "mariadb-rabbitmq"], indirect=True
)


def assert_runs_in_order(tis: list, what: str) -> None:
    """Each task instance started after the previous one ended."""
    for before, after in zip(tis, tis[1:], strict=False):
        assert before.end_date is not None and after.start_date is not None
        assert after.start_date >= before.end_date, (
            f"{what}: {after.task_id} started at {after.start_date} before {before.task_id} "
            f"ended at {before.end_date}"
        )


# -- core: chain, values, retries (all four systems) -------------------------------------------------


@CORE_SYSTEMS
def test_a_chain_runs_each_task_after_its_upstream_has_finished(system: System, write_dag) -> None:
    write_dag(
        "chain.py",
        """
        from hareflow import DAG, task

        with DAG("chain"):
            @task
            def a():
                return "a"

            @task
            def b():
                return "b"

            @task
            def c():
                return "c"

            a() >> b() >> c()
        """,
    )
    system.start()
    run_id, state = system.run_dag("chain")

    assert state == "success"
    tis = system.tis("chain", run_id)
    assert {t: ti.state for t, ti in tis.items()} == {"a": "success", "b": "success", "c": "success"}
    assert all(ti.try_number == 1 for ti in tis.values())
    assert_runs_in_order([tis["a"], tis["b"], tis["c"]], "chain")


@CORE_SYSTEMS
def test_upstream_return_values_arrive_as_arguments_and_the_final_value_is_stored(
    system: System, write_dag
) -> None:
    write_dag(
        "values.py",
        """
        from hareflow import DAG, task

        with DAG("values"):
            @task
            def numbers():
                return [1, 2, 3]

            @task
            def total(rows):
                return sum(rows)

            @task
            def report(rows, total, label="sum"):
                types = [type(rows).__name__, type(total).__name__]
                return {"text": f"{label}: {rows} -> {total}", "types": types}

            rows = numbers()
            report(rows, total(rows), label="total")
        """,
    )
    system.start()
    run_id, state = system.run_dag("values")

    assert state == "success"
    assert system.result("values", run_id, "numbers") == [1, 2, 3]
    assert system.result("values", run_id, "total") == 6
    assert system.result("values", run_id, "report") == {
        "text": "total: [1, 2, 3] -> 6",
        "types": ["list", "int"],
    }


@CORE_SYSTEMS
def test_nul_characters_in_logs_errors_results_conf_and_dag_files_are_stored_visibly_and_wedge_nothing(
    system: System, write_dag
) -> None:
    write_dag(
        "nul.py",
        """
        from hareflow import DAG, task

        with DAG("nul", description="a description with a NUL: \\x00", params={"word": "p\\x00q"}):
            @task
            def prints(ctx):
                print("before\\x00after")
                return {"value": "x\\x00y", "word": ctx.params["word"]}

            @task
            def raises():
                raise ValueError("bad\\x00value")

            prints() >> raises()
        """,
    )
    system.start()
    run_id, state = system.run_dag("nul", conf={"word": "c\x00d"})

    assert state == "failed"
    tis = system.tis("nul", run_id)
    record_fault(
        "NUL bytes in a log line, an exception, a return value, conf and a DAG file",
        tasks=len(tis),
        lost=sum(1 for ti in tis.values() if ti.state not in ("success", "failed")),  # wedged
        more_than_once=sum(1 for ti in tis.values() if ti.try_number > 1),
    )
    assert {t: ti.state for t, ti in tis.items()} == {"prints": "success", "raises": "failed"}
    assert "before\u2400after" in system.log_text("nul", run_id, "prints")
    # Return values and conf are JSON: NUL travels and is stored escaped, and comes back intact.
    assert system.result("nul", run_id, "prints") == {"value": "x\x00y", "word": "c\x00d"}
    assert "bad\u2400value" in (tis["raises"].error or "")
    assert "bad\u2400value" in system.log_text("nul", run_id, "raises")
    with system.c.sessions() as session:
        assert session.get(Dag, "nul").description == "a description with a NUL: \u2400"


@CORE_SYSTEMS
def test_a_task_that_fails_once_is_retried_and_the_run_succeeds(system: System, write_dag) -> None:
    write_dag(
        "flaky.py",
        """
        from datetime import timedelta
        from hareflow import DAG, task

        with DAG("flaky"):
            @task(retries=2, retry_delay=timedelta(seconds=0.2))
            def flaky(ctx):
                if ctx.try_number < 2:
                    raise RuntimeError("first try fails on purpose")
                return {"try": ctx.try_number, "max_tries": ctx.max_tries}

            flaky()
        """,
    )
    system.start()
    run_id, state = system.run_dag("flaky")

    assert state == "success"
    ti = system.tis("flaky", run_id)["flaky"]
    assert (ti.state, ti.try_number, ti.max_tries) == ("success", 2, 3)
    assert ti.error is None
    assert system.result("flaky", run_id, "flaky") == {"try": 2, "max_tries": 3}
    log = wait_until(lambda: system.log_text("flaky", run_id, "flaky"), message="the first try's log")
    assert "RuntimeError: first try fails on purpose" in log


# -- everything else (both executors on PostgreSQL) ---------------------------------------------------


def test_a_fan_out_and_fan_in_runs_twenty_parallel_tasks_between_two(system: System, write_dag) -> None:
    write_dag(
        "fan.py",
        """
        from hareflow import DAG, task

        with DAG("fan", max_active_tasks=32):
            @task
            def start():
                return 10

            @task
            def part(base, i):
                return base * i

            @task
            def gather(parts):
                return sum(parts)

            base = start()
            gather([part.override(task_id=f"part_{i:02d}")(base, i) for i in range(20)])
        """,
    )
    system.start()
    run_id, state = system.run_dag("fan")

    assert state == "success"
    tis = system.tis("fan", run_id)
    parts = [tis[f"part_{i:02d}"] for i in range(20)]
    assert len(tis) == 22
    assert all(ti.state == "success" for ti in tis.values())
    assert [system.result("fan", run_id, ti.task_id) for ti in parts] == [10 * i for i in range(20)]
    assert system.result("fan", run_id, "gather") == 10 * sum(range(20))
    for ti in parts:
        assert ti.start_date >= tis["start"].end_date
        assert tis["gather"].start_date >= ti.end_date


def test_a_task_over_its_execution_timeout_is_killed_and_the_worker_keeps_working(
    system: System, write_dag
) -> None:
    write_dag(
        "slow.py",
        """
        import time
        from datetime import timedelta
        from hareflow import DAG, task

        with DAG("slow"):
            @task(execution_timeout=timedelta(seconds=1))
            def sleepy():
                print("going to sleep", flush=True)
                time.sleep(60)

            sleepy()

        with DAG("quick"):
            @task
            def fast():
                return "still alive"

            fast()
        """,
    )
    # One slot: the task after the timeout runs on the very slot whose child was killed.
    system.start(workers=[WorkerSpec(concurrency=1)])
    slow_run, slow_state = system.run_dag("slow")

    assert slow_state == "failed"
    ti = system.tis("slow", slow_run)["sleepy"]
    assert ti.state == "failed"
    assert "execution_timeout" in ti.error
    assert ti.end_date - ti.start_date < timedelta(seconds=30)

    quick_run, quick_state = system.run_dag("quick")
    assert quick_state == "success"
    assert system.result("quick", quick_run, "fast") == "still alive"
    assert system.tis("quick", quick_run)["fast"].worker == ti.worker


def test_every_trigger_rule_decides_its_task_from_one_failed_and_one_successful_upstream(
    system: System, write_dag
) -> None:
    write_dag(
        "rules.py",
        """
        from hareflow import DAG, task

        RULES = ["all_success", "all_done", "one_success", "one_failed", "none_failed", "all_failed"]

        with DAG("rules"):
            @task
            def good():
                return "good"

            @task
            def bad():
                raise RuntimeError("bad on purpose")

            @task
            def after():
                return "ran"

            upstream = [good(), bad()]
            for rule in RULES:
                upstream >> after.override(task_id=f"on_{rule}", trigger_rule=rule)()
        """,
    )
    system.start()
    run_id, state = system.run_dag("rules")

    tis = system.tis("rules", run_id)
    assert {t: ti.state for t, ti in tis.items()} == {
        "good": "success",
        "bad": "failed",
        "on_all_success": "upstream_failed",
        "on_all_done": "success",
        "on_one_success": "success",
        "on_one_failed": "success",
        "on_none_failed": "upstream_failed",
        "on_all_failed": "skipped",
    }
    assert "RuntimeError: bad on purpose" in tis["bad"].error
    # Leaves ended upstream_failed, so the run failed.
    assert state == "failed"


def test_a_bash_task_stores_its_output_as_log_and_its_last_line_as_result(system: System, write_dag) -> None:
    write_dag(
        "bash.py",
        """
        from hareflow import DAG, BashTask

        with DAG("bash"):
            BashTask(
                "greet",
                "echo hello from bash; echo 'a warning' >&2; echo run=$HAREFLOW_RUN_ID; echo final-line",
            )
        """,
    )
    system.start()
    run_id, state = system.run_dag("bash")

    assert state == "success"
    assert system.result("bash", run_id, "greet") == "final-line"
    log = wait_until(
        lambda: (text := system.log_text("bash", run_id, "greet")) and "final-line" in text and text,
        message="the bash task's log",
    )
    assert "hello from bash" in log
    assert "a warning" in log
    assert f"run={run_id}" in log


def test_params_default_from_the_dag_and_are_overridden_by_the_run_conf(system: System, write_dag) -> None:
    write_dag(
        "params.py",
        """
        from hareflow import DAG, task

        with DAG("params", params={"greeting": "hello", "times": 1}):
            @task
            def show(ctx):
                return {"params": ctx.params, "conf": ctx.conf}

            show()
        """,
    )
    system.start()
    plain_run, plain_state = system.run_dag("params")
    conf_run, conf_state = system.run_dag("params", conf={"times": 3})

    assert (plain_state, conf_state) == ("success", "success")
    assert system.result("params", plain_run, "show") == {
        "params": {"greeting": "hello", "times": 1},
        "conf": {},
    }
    assert system.result("params", conf_run, "show") == {
        "params": {"greeting": "hello", "times": 3},
        "conf": {"times": 3},
    }


def test_a_result_over_the_size_limit_fails_the_task_with_an_error_naming_the_size(
    system: System, write_dag
) -> None:
    write_dag(
        "big.py",
        """
        from hareflow import DAG, task

        with DAG("big"):
            @task
            def big():
                return "x" * 1_100_000

            big()
        """,
    )
    system.start()
    run_id, state = system.run_dag("big")

    assert state == "failed"
    ti = system.tis("big", run_id)["big"]
    assert ti.state == "failed"
    size = len('"' + "x" * 1_100_000 + '"')
    assert f"{size:,} bytes" in ti.error
    assert f"{system.settings.max_result_bytes:,} bytes" in ti.error
    with system.c.sessions() as session:
        assert session.scalars(select(TaskResult).where(TaskResult.ti_id == ti.id)).all() == []


def _complete_daily_intervals(start: datetime, now: datetime) -> list[tuple[datetime, datetime]]:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    days = (today - start).days
    return [(start + timedelta(days=i), start + timedelta(days=i + 1)) for i in range(days)]


def test_a_daily_dag_with_catchup_creates_one_run_per_past_interval_and_never_duplicates(
    system: System, write_dag
) -> None:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    write_dag(
        "daily.py",
        f"""
        from datetime import datetime, timezone
        from hareflow import DAG, task

        with DAG("daily", schedule="@daily", start_date=datetime.fromisoformat("{start.isoformat()}"),
                 catchup=True):
            @task
            def seen(ctx):
                return [ctx.logical_date.isoformat(), ctx.data_interval_start.isoformat(),
                        ctx.data_interval_end.isoformat()]

            seen()
        """,
    )
    system.start()

    def intervals() -> list[tuple[datetime, datetime]]:
        return [(r.data_interval_start, r.data_interval_end) for r in system.runs("daily")]

    def all_runs_done() -> bool:
        runs = system.runs("daily")
        expected = _complete_daily_intervals(start, datetime.now(UTC))
        return len(runs) == len(expected) and all(r.state == "success" for r in runs)

    wait_until(all_runs_done, message="every past daily interval to have a finished run")
    # More scheduler iterations (on top of the cluster's own loop) create nothing more.
    extra = Scheduler(settings=system.settings, session_factory=system.c.sessions, executor=LocalExecutor())
    for _ in range(3):
        report = LoopReport()
        extra.create_due_runs(datetime.now(UTC), report)
        assert report.runs_created == 0

    runs = system.runs("daily")
    expected = _complete_daily_intervals(start, datetime.now(UTC))
    assert len(expected) >= 3
    assert sorted(intervals()) == expected
    assert len({r.logical_date for r in runs}) == len(runs)
    for run in runs:
        assert run.run_type == "scheduled"
        assert run.logical_date == run.data_interval_start
        assert run.run_id == f"scheduled__{run.logical_date.isoformat()}"
        assert system.result("daily", run.run_id, "seen") == [
            run.logical_date.isoformat(),
            run.data_interval_start.isoformat(),
            run.data_interval_end.isoformat(),
        ]


def test_max_active_runs_of_one_never_lets_two_runs_of_a_dag_overlap(system: System, write_dag) -> None:
    write_dag(
        "serial.py",
        """
        import time
        from hareflow import DAG, task

        with DAG("serial", max_active_runs=1):
            @task
            def step():
                time.sleep(0.2)

            step() >> step()
        """,
    )
    system.start()
    system.c.wait_for_dag("serial")
    run_ids = [system.c.trigger("serial", run_id=f"serial-{i}") for i in range(3)]

    def finished() -> bool:
        runs = system.runs("serial")
        assert sum(r.state == "running" for r in runs) <= 1, "two runs running at once"
        return all(r.state == "success" for r in runs)

    wait_until(finished, timeout=60, message="the three runs to finish")
    runs = sorted(system.runs("serial"), key=lambda r: r.start_date)
    assert [r.run_id for r in runs] == run_ids
    for before, after in zip(runs, runs[1:], strict=False):
        assert after.start_date >= before.end_date
    task_instances = sorted(
        (ti for r in runs for ti in system.tis("serial", r.run_id).values()), key=lambda ti: ti.start_date
    )
    assert len(task_instances) == 6
    assert_runs_in_order(task_instances, "tasks of serial runs")


def test_workers_on_distinct_queues_run_only_the_tasks_of_their_queue(system: System, write_dag) -> None:
    write_dag(
        "queues.py",
        """
        from hareflow import DAG, task

        with DAG("queues"):
            @task
            def work():
                return "done"

            for q in ["alpha", "beta"]:
                for i in range(3):
                    work.override(task_id=f"{q}_{i}", queue=q)()
        """,
    )
    system.start(
        workers=[
            WorkerSpec(queues=["alpha"], hostname="host-a", concurrency=2),
            WorkerSpec(queues=["beta"], hostname="host-b", concurrency=2),
        ]
    )
    run_id, state = system.run_dag("queues")

    assert state == "success"
    tis = system.tis("queues", run_id)
    assert len(tis) == 6
    expected_host = {"alpha": "host-a", "beta": "host-b"}
    for ti in tis.values():
        assert ti.hostname == expected_host[ti.queue], f"{ti.task_id} ({ti.queue}) ran on {ti.hostname}"
    assert {ti.queue for ti in tis.values()} == {"alpha", "beta"}


def test_tasks_in_a_one_slot_pool_never_run_at_the_same_time(system: System, write_dag) -> None:
    write_dag(
        "pooled.py",
        """
        import time
        from hareflow import DAG, task

        with DAG("pooled"):
            @task(pool="single")
            def hold():
                time.sleep(0.2)

            for i in range(3):
                hold.override(task_id=f"hold_{i}")()
        """,
    )
    system.start()
    with system.c.sessions() as session, session.begin():
        session.add(Pool(name="single", slots=1, description="one at a time"))
    run_id, state = system.run_dag("pooled")

    assert state == "success"
    tis = sorted(system.tis("pooled", run_id).values(), key=lambda ti: ti.start_date)
    assert [ti.pool for ti in tis] == ["single"] * 3
    assert_runs_in_order(tis, "pool 'single'")


def test_a_dag_file_with_a_syntax_error_is_reported_with_its_line_and_other_dags_still_run(
    system: System, write_dag
) -> None:
    broken = write_dag(
        "broken.py",
        """\
        from hareflow import DAG

        with DAG("broken"):
            def oops(:
                pass
        """,
    )
    write_dag(
        "good.py",
        """
        from hareflow import DAG, task

        with DAG("good"):
            @task
            def fine():
                return "fine"

            fine()
        """,
    )
    system.start()

    def import_errors() -> list[ImportError_]:
        with system.c.sessions() as session:
            return list(session.scalars(select(ImportError_)))

    errors = wait_until(import_errors, message="an import error row")
    assert len(errors) == 1
    assert errors[0].filename == str(broken.resolve())
    assert errors[0].line == 4
    assert "SyntaxError" in errors[0].message
    with system.c.sessions() as session:
        assert session.get(Dag, "broken") is None

    run_id, state = system.run_dag("good")
    assert state == "success"
    assert system.result("good", run_id, "fine") == "fine"


def test_dag_files_that_never_finish_importing_hold_up_neither_scheduling_nor_the_other_files(
    system: System, write_dag
) -> None:
    from tests.unit.test_dag_loader import _gone

    hanging = [
        write_dag(f"a_hang_{i}.py", "import time\nfrom hareflow import DAG\ntime.sleep(3600)\n")
        for i in range(3)
    ]
    write_dag(
        "z_good.py",
        """
        from hareflow import DAG, task

        with DAG("good"):
            @task
            def fine():
                return "fine"

            fine()
        """,
    )
    system.start(dag_file_processor_timeout=300)

    run_id, state = system.run_dag("good")  # parsed and run while the three still hang
    assert state == "success"
    with system.c.sessions() as session:
        assert list(session.scalars(select(ImportError_))) == []  # the hanging files are still parsing
    system.stop()
    assert all(_gone(str(path.resolve())) for path in hanging)  # stopping kills their parses


def _serialized_task_ids(system: System, dag_id: str) -> list[str]:
    with system.c.sessions() as session:
        dag = session.get(Dag, dag_id)
        return [t["task_id"] for t in dag.serialized["tasks"]] if dag is not None else []


def test_a_changed_dag_file_is_picked_up_within_seconds(system: System, write_dag) -> None:
    source = """
        from hareflow import DAG, task

        with DAG("growing"):
            @task
            def first():
                return 1
            {extra}
            first()
        """
    write_dag("growing.py", source.format(extra=""))
    system.start()
    system.c.wait_for_dag("growing")
    assert _serialized_task_ids(system, "growing") == ["first"]

    write_dag("growing.py", source.format(extra="first.override(task_id='second')()"))
    wait_until(
        lambda: sorted(_serialized_task_ids(system, "growing")) == ["first", "second"],
        timeout=10,
        message="the new task in the serialized DAG",
    )
    run_id, state = system.run_dag("growing")
    assert state == "success"
    assert set(system.tis("growing", run_id)) == {"first", "second"}


def test_a_deleted_dag_file_deactivates_its_dag(system: System, write_dag) -> None:
    doomed = write_dag(
        "doomed.py",
        """
        from hareflow import DAG, task

        with DAG("doomed"):
            @task
            def t():
                pass

            t()
        """,
    )
    write_dag(
        "kept.py",
        """
        from hareflow import DAG, task

        with DAG("kept"):
            @task
            def t():
                pass

            t()
        """,
    )
    system.start()
    system.c.wait_for_dag("doomed")
    system.c.wait_for_dag("kept")

    os.remove(doomed)

    def is_active(dag_id: str) -> bool | None:
        with system.c.sessions() as session:
            dag = session.get(Dag, dag_id)
            return None if dag is None else dag.is_active

    wait_until(lambda: is_active("doomed") is False, timeout=10, message="DAG 'doomed' to be deactivated")
    assert is_active("kept") is True


def test_the_scheduler_is_woken_by_events_not_by_its_idle_timer(system: System, write_dag) -> None:
    """With a 60 s idle wait, a four-task chain only finishes in time if every trigger and every
    finished task wakes the scheduler at once."""
    write_dag(
        "woken.py",
        """
        from datetime import datetime
        from hareflow import DAG, task
        with DAG("woken", start_date=datetime(2026, 1, 1)):
            @task
            def a():
                return 1
            @task
            def b(x):
                return x + 1
            @task
            def c(x):
                return x + 1
            @task
            def d(x):
                return x + 1
            d(c(b(a())))
        """,
    )
    cluster = system.start(scheduler_idle_wait=60.0)
    cluster.wait_for_dag("woken")
    run_id = cluster.trigger("woken")
    assert cluster.wait_for_run("woken", run_id, timeout=30) == "success"
    assert system.result("woken", run_id, "d") == 4
