"""What a task process reports besides its outcome: a self-skip, a failure without retry, a
branch's skips (the ``extras`` record), run in-process over a real pipe."""

from __future__ import annotations

import multiprocessing
import textwrap
from pathlib import Path

from hareflow.worker.child import run_task

from tests.unit.test_worker_child import payload

DAG_FILE = """
from datetime import datetime
from hareflow import DAG, BashTask, FailTask, SkipTask, task

def on_failure(ctx, exc):
    print("failure callback:", exc)

def on_retry(ctx, exc):
    print("retry callback:", exc)

with DAG("d", start_date=datetime(2026, 1, 1)):
    @task
    def skip_me():
        raise SkipTask("nothing to do")

    @task(on_failure_callback=on_failure, on_retry_callback=on_retry)
    def give_up():
        raise FailTask("credentials revoked")

    @task.branch
    def pick():
        return ["a"]

    @task.branch
    def bad_pick():
        return "z"

    skip_me()
    give_up()
    pick() >> [BashTask("a", "true"), BashTask("b", "true")]
    bad_pick() >> BashTask("c", "true")
"""


def records(conn) -> tuple[str, list]:  # type: ignore[no-untyped-def]
    text, extras = [], []
    while conn.poll(0):
        kind, _token, item = conn.recv()
        (text if kind == "log" else extras).append(item)
    return "".join(text), extras


def run(tmp_path: Path, task_id: str, max_tries: int = 1) -> tuple[tuple, str, list]:
    dag_file = tmp_path / "decisions.py"
    dag_file.write_text(textwrap.dedent(DAG_FILE))
    parent, child = multiprocessing.Pipe()
    outcome = run_task(payload(dag_file, task_id, max_tries=max_tries), 1024, child)
    return (outcome, *records(parent))


def test_skip_task_ends_the_try_skipped_with_its_message(tmp_path: Path) -> None:
    outcome, log, extras = run(tmp_path, "skip_me")
    assert outcome == ("skipped", None, "nothing to do")
    assert "Skipping the task: nothing to do" in log and extras == []


def test_fail_task_asks_for_no_retry_and_runs_the_failure_callback_not_the_retry_one(tmp_path: Path) -> None:
    outcome, log, extras = run(tmp_path, "give_up", max_tries=3)
    assert outcome == ("failed", None, "FailTask: credentials revoked")
    assert extras == [{"no_retry": True}]
    assert "failure callback: credentials revoked" in log and "retry callback" not in log


def test_a_branch_reports_the_direct_downstream_tasks_it_skips(tmp_path: Path) -> None:
    outcome, _, extras = run(tmp_path, "pick")
    assert outcome == ("success", '["a"]', None)
    assert extras == [{"skip_task_ids": ["b"], "skip_reason": "skipped by branch 'pick' (it followed 'a')"}]


def test_a_branch_naming_a_task_that_is_not_downstream_fails_with_the_valid_ones(tmp_path: Path) -> None:
    (outcome_name, _, error), _, extras = run(tmp_path, "bad_pick")
    assert outcome_name == "failed" and extras == []
    assert error == (
        "BranchError: branch 'bad_pick' chose 'z', which is not one of its direct downstream tasks; "
        "the valid ones are: c"
    )
