"""What a task process does with one task, run in-process over a real pipe."""

from __future__ import annotations

import multiprocessing
import textwrap
from pathlib import Path

from hareflow.worker.child import run_task


def payload(dag_file: Path, task_id: str, **extra: object) -> dict:
    return {
        "key": {
            "ti_id": 1,
            "dag_id": "d",
            "run_id": "r",
            "task_id": task_id,
            "map_index": -1,
            "try_number": 1,
        },
        "max_tries": 1,
        "dag_file": str(dag_file),
        "queue": "default",
        "params": {},
        "conf": {},
        "upstream_results": {},
        **extra,
    }


def output_of(conn) -> str:  # type: ignore[no-untyped-def]
    text = []
    while conn.poll(0):
        kind, _token, chunk = conn.recv()
        assert kind == "log"
        text.append(chunk)
    return "".join(text)


def test_a_failing_task_logs_its_own_frames_without_hareflow_plumbing(tmp_path: Path) -> None:
    dag_file = tmp_path / "boom.py"
    dag_file.write_text(
        textwrap.dedent(
            """
            from datetime import datetime
            from hareflow import DAG, task

            def helper():
                raise ValueError("no rows for today")

            with DAG("d", start_date=datetime(2026, 1, 1)):
                @task
                def t():
                    helper()
                t()
            """
        )
    )
    parent, child = multiprocessing.Pipe()
    outcome, result, error = run_task(payload(dag_file, "t"), 1024, child)
    log = output_of(parent)
    assert (outcome, result, error) == ("failed", None, "ValueError: no rows for today")
    assert f'File "{dag_file}", line 6, in helper' in log and f'File "{dag_file}", line 11, in t' in log
    assert "worker/child.py" not in log and "common/dag" not in log


def test_a_task_result_over_the_size_limit_fails_with_both_sizes(tmp_path: Path) -> None:
    dag_file = tmp_path / "big.py"
    dag_file.write_text(
        textwrap.dedent(
            """
            from datetime import datetime
            from hareflow import DAG, task
            with DAG("d", start_date=datetime(2026, 1, 1)):
                @task
                def t():
                    return "x" * 5000
                t()
            """
        )
    )
    parent, child = multiprocessing.Pipe()
    outcome, _, error = run_task(payload(dag_file, "t"), 1024, child)
    assert outcome == "failed"
    assert "5,002 bytes" in (error or "") and "limit of 1,024 bytes" in (error or "")
