"""Tasks are isolated from each other on the worker runtime: real task processes, a real executor.

Each test drives a one-slot :class:`Worker` through both executors (the in-process one and a real
RabbitMQ) and reads back what the worker reported. One slot means every task below runs where the
previous one ran, which is where a leak from one task into the next would show.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hareflow.common.messages import TaskKey

from tests.fault.report import record_fault
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped (a zombie still counts as present)."""
    return not Path(f"/proc/{pid}").exists()


def pid_in(path: Path) -> int:
    return int(wait_until(lambda: path.exists() and path.read_text().strip(), message=f"a pid in {path}"))


HEADER = """
    import os
    import signal
    import subprocess
    import sys
    import time
    from datetime import datetime
    from pathlib import Path

    import hareflow
    from hareflow import DAG, task

    TMP = Path({tmp!r})
    SEEN = []

    with DAG("iso", schedule=None, start_date=datetime(2026, 1, 1)):
"""


def dag(tmp_path: Path, body: str) -> str:
    return textwrap.dedent(HEADER).format(tmp=str(tmp_path)) + textwrap.indent(textwrap.dedent(body), " " * 4)


def test_a_task_that_forks_does_not_shift_the_outcomes_of_the_tasks_after_it(runtime_for, tmp_path) -> None:
    rt = runtime_for(
        dag(
            tmp_path,
            """
            @task
            def forker():
                os.fork()  # both the task and its copy return normally
                print("forker ran")
                return "forked"

            @task
            def second():
                print("second's own line")
                return 2

            @task
            def third():
                raise ValueError("third fails on its own")

            forker(); second(); third()
            """,
        )
    )
    first = rt.publish("forker")
    two = rt.publish("second")
    three = rt.publish("third")
    got = {key: (rt.result(key).outcome, rt.result(key).result_json) for key in (first, two, three)}
    expected = {first: ("success", '"forked"'), two: ("success", "2"), three: ("failed", None)}
    record_fault(
        "a task that forks (its copy returns too)",
        tasks=3,
        lost=sum(1 for key in got if got[key] != expected[key]),  # answered with another's outcome
        more_than_once=sum(1 for n in rt.final_count.values() if n > 1),
    )
    assert (rt.result(first).outcome, rt.result(first).result_json) == ("success", '"forked"'), rt.result(
        first
    ).error
    assert (rt.result(two).outcome, rt.result(two).result_json, rt.result(two).error) == (
        "success",
        "2",
        None,
    )
    assert rt.result(three).outcome == "failed"
    assert rt.result(three).error == "ValueError: third fails on its own"
    wait_until(lambda: "second's own line" in rt.log(two), message="second's log")
    assert "forker ran" not in rt.log(two) and "third fails" not in rt.log(two)
    assert "second's own line" not in rt.log(three)


def test_processes_a_task_started_do_not_outlive_it_even_when_they_detach(runtime_for, tmp_path) -> None:
    rt = runtime_for(
        dag(
            tmp_path,
            """
            @task
            def starts_a_sleep():
                proc = subprocess.Popen(["sleep", "900"])
                (TMP / "sleep.pid").write_text(str(proc.pid))
                return "started"

            @task
            def daemonizes():
                # The classic daemon: fork, setsid, fork again; the grandchild leaves our process
                # group and session, and its parent exits at once.
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        (TMP / "daemon.pid").write_text(str(os.getpid()))
                        time.sleep(900)
                    os._exit(0)
                while not (TMP / "daemon.pid").exists():
                    time.sleep(0.01)
                return "daemonized"

            starts_a_sleep(); daemonizes()
            """,
        )
    )
    assert rt.run("starts_a_sleep").outcome == "success"
    sleep_pid = pid_in(tmp_path / "sleep.pid")
    wait_until(lambda: process_gone(sleep_pid), timeout=15, message="the task's sleep to be killed")
    assert rt.run("daemonizes").outcome == "success"
    daemon_pid = pid_in(tmp_path / "daemon.pid")
    wait_until(lambda: process_gone(daemon_pid), timeout=15, message="the task's daemon to be killed")
    record_fault(
        "a task that leaves a subprocess or a daemon behind",
        tasks=2,
        lost=0,
        more_than_once=0,
        leftovers_alive=sum(1 for pid in (sleep_pid, daemon_pid) if not process_gone(pid)),
    )


def test_output_of_a_leftover_process_never_lands_in_the_next_tasks_log(runtime_for, tmp_path) -> None:
    rt = runtime_for(
        dag(
            tmp_path,
            """
            @task
            def leaves_a_child():
                if os.fork() == 0:  # prints once the next task has started, then lingers
                    (TMP / "leftover.pid").write_text(str(os.getpid()))
                    while not (TMP / "next-started").exists():
                        time.sleep(0.01)
                    print("late line from the first task", flush=True)
                    (TMP / "printed").write_text("yes")
                    time.sleep(900)
                    os._exit(0)
                while not (TMP / "leftover.pid").exists():
                    time.sleep(0.01)
                return "first"

            @task
            def next_task():
                (TMP / "next-started").write_text("yes")
                pid = int((TMP / "leftover.pid").read_text())
                # Wait until the leftover has printed or is dead, whichever comes first.
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not (TMP / "printed").exists():
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.01)
                print("next task's own line")
                return "next"

            leaves_a_child(); next_task()
            """,
        )
    )
    first = rt.run("leaves_a_child")
    assert first.outcome == "success"
    second_id = rt.publish("next_task")
    assert rt.result(second_id).result_json == '"next"'
    wait_until(lambda: "next task's own line" in rt.log(second_id), message="the next task's log")
    assert "late line from the first task" not in rt.log(second_id)


def test_environment_working_directory_and_module_globals_do_not_carry_over(runtime_for, tmp_path) -> None:
    rt = runtime_for(
        dag(
            tmp_path,
            """
            @task
            def changes_everything():
                os.environ["HAREFLOW_TEST_LEAK"] = "leaked"
                os.chdir(TMP)
                hareflow.LEAKED = "leaked"
                SEEN.append("changes_everything")
                sys.modules["json"].LEAKED = "leaked"
                return "changed"

            @task
            def looks():
                import json
                return {
                    "env": os.environ.get("HAREFLOW_TEST_LEAK"),
                    "cwd_is_tmp": os.getcwd() == str(TMP),
                    "hareflow": getattr(hareflow, "LEAKED", None),
                    "json": getattr(json, "LEAKED", None),
                    "seen": SEEN,
                }

            changes_everything(); looks()
            """,
        )
    )
    assert rt.run("changes_everything").outcome == "success"
    looks = rt.run("looks")
    assert looks.outcome == "success", looks.error
    assert json.loads(looks.result_json or "") == {
        "env": None,
        "cwd_is_tmp": False,
        "hareflow": None,
        "json": None,
        "seen": [],
    }


SIMPLE = """
    @task
    def plain():
        print("plain ran")
        return "plain"

    @task
    def exits():
        os._exit(1)

    @task
    def killed():
        os.kill(os.getpid(), signal.SIGKILL)

    plain(); exits(); killed()
"""


def test_a_bad_execution_timeout_fails_that_task_with_the_reason_and_the_next_one_runs(
    runtime_for, tmp_path
) -> None:
    rt = runtime_for(dag(tmp_path, SIMPLE))
    bad = rt.publish("plain", execution_timeout="abc")
    good = rt.publish("plain")
    assert rt.result(bad).outcome == "failed"
    assert rt.result(bad).error == (
        "bad execution_timeout 'abc' in the task message: expected a number of seconds or null"
    )
    assert (rt.result(good).outcome, rt.result(good).result_json) == ("success", '"plain"')
    wait_until(lambda: "plain ran" in rt.log(good), message="the good task's log")
    assert "plain ran" not in rt.log(bad)


def test_a_task_process_that_exits_or_is_killed_is_reported_with_its_exit_code_or_signal(
    runtime_for, tmp_path
) -> None:
    rt = runtime_for(dag(tmp_path, SIMPLE))
    exits = rt.run("exits")
    assert (exits.outcome, exits.error) == (
        "failed",
        "the task process died while running the task (exit code 1)",
    )
    killed = rt.run("killed")
    assert killed.error == "the task process died while running the task (killed by signal SIGKILL)"
    assert rt.run("plain").outcome == "success"


def test_a_conf_too_deep_to_hand_to_a_task_process_fails_the_task_and_frees_the_slot(
    runtime_for, tmp_path
) -> None:
    rt = runtime_for(dag(tmp_path, SIMPLE))
    deep: dict = {}
    for _ in range(900):
        deep = {"a": deep}
    too_deep = rt.publish("plain", conf=deep)
    after = rt.publish("plain")
    failed = rt.result(too_deep)
    assert failed.outcome == "failed"
    assert failed.error is not None
    assert failed.error.startswith("the task could not be handed to a task process: RecursionError")
    assert rt.result(after).outcome == "success"


def test_the_worker_kills_no_process_outside_its_tasks(runtime_for, tmp_path) -> None:
    """The zygote kills only what tasks leave behind: a process the test started survives."""
    bystander = subprocess.Popen(["sleep", "900"])
    try:
        rt = runtime_for(dag(tmp_path, SIMPLE))
        assert rt.run("exits").outcome == "failed"
        assert rt.run("plain").outcome == "success"
        assert bystander.poll() is None
    finally:
        os.kill(bystander.pid, signal.SIGKILL)
        bystander.wait()


@pytest.fixture(autouse=True)
def _no_test_leak() -> Iterator[None]:
    yield
    os.environ.pop("HAREFLOW_TEST_LEAK", None)


def test_a_dag_file_edited_between_two_tasks_runs_its_new_version(runtime_for, tmp_path) -> None:
    rt = runtime_for(dag(tmp_path, 'task(lambda: "old", task_id="version")()\n'))
    assert rt.run("version").result_json == '"old"'
    source = rt.dag_file.read_text().replace('"old"', '"new, and longer"')
    rt.dag_file.write_text(source)
    assert rt.run("version").result_json == '"new, and longer"'


IMPORTED_HERE = """
    import os
    import time
    from datetime import datetime

    from hareflow import DAG, task

    IMPORTED_BY = os.getpid()
    time.sleep({import_seconds})

    with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1)):
        @task
        def where():
            return "own import" if IMPORTED_BY == os.getpid() else "inherited"

        where()
"""


def test_a_dag_file_is_imported_once_in_the_zygote_unless_its_import_is_too_slow(
    runtime_for, dags_folder: Path
) -> None:
    rt = runtime_for(IMPORTED_HERE.format(import_seconds=0, dag_id="iso"), dag_file_processor_timeout=0.5)
    slow = dags_folder / "slow.py"
    slow.write_text(textwrap.dedent(IMPORTED_HERE.format(import_seconds=1.5, dag_id="slow")))
    assert rt.run("where").result_json == '"inherited"'
    assert rt.run("where", dag_file=str(slow), key=TaskKey(99, "slow", "r1", "where", -1, 1)).result_json == (
        '"own import"'
    )
    assert rt.result(rt.publish("where")).result_json == '"inherited"'
