"""A copy of a task message this worker is already running, or has just finished, is not run again
(``worker/copies.py``): it is what the broker hands back after the worker's connection dropped."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hareflow.common.messages import TaskKey

from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

DAG = """
    import os
    import time
    from datetime import datetime
    from pathlib import Path

    from hareflow import DAG, task

    RUNS = Path({runs!r})

    with DAG("iso", schedule=None, start_date=datetime(2026, 1, 1)):
        @task
        def slow(ctx):
            (RUNS / f"{{ctx.try_number}}-{{os.getpid()}}").touch()
            time.sleep(1.5)
            return ctx.try_number

        slow()
"""


def _runtime(runtime_for, tmp_path: Path):  # type: ignore[no-untyped-def]
    runs = tmp_path / "runs"
    runs.mkdir()
    return runtime_for(textwrap.dedent(DAG.format(runs=str(runs)))), runs


def test_a_copy_arriving_while_the_try_runs_joins_it_and_is_settled_with_it(runtime_for, tmp_path) -> None:
    rt, runs = _runtime(runtime_for, tmp_path)
    key = TaskKey(7, "iso", "r1", "slow", -1, 1)
    rt.publish("slow", key=key)
    wait_until(lambda: len(list(runs.iterdir())) == 1, message="the try to start")
    rt.publish("slow", key=key)  # the same try again, as the broker redelivers it
    assert rt.result(7).result_json == "1"
    rt.publish("slow", key=key)  # and once more after it finished
    # The one slot's worker holds at most two unacked messages (prefetch 1 x 2): the next task is
    # delivered only if both copies were acked.
    second = rt.publish("slow", key=TaskKey(8, "iso", "r1", "slow", -1, 1))
    assert rt.result(second).outcome == "success"
    # Each try ran once: the copies were settled without running.
    assert sorted(p.name.split("-")[0] for p in runs.iterdir()) == ["1", "1"]
    assert rt.final_count[7] == 1


def test_a_new_try_of_the_same_task_instance_is_not_taken_for_a_copy(runtime_for, tmp_path) -> None:
    rt, runs = _runtime(runtime_for, tmp_path)
    assert rt.run("slow", key=TaskKey(9, "iso", "r1", "slow", -1, 1)).result_json == "1"
    rt.publish("slow", key=TaskKey(9, "iso", "r1", "slow", -1, 2))
    wait_until(lambda: rt.final_count[9] == 2, message="the second try's result")
    assert rt.finals[9].result_json == "2"
    assert sorted(p.name.split("-")[0] for p in runs.iterdir()) == ["1", "2"]
