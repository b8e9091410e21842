"""A task the worker cannot hand to a task process fails with the reason, and its slot is free.

End to end, through the scheduler, the executor and the metastore: nothing here is left unacked
until the broker's ``consumer_timeout``.
"""

from __future__ import annotations

import pytest

from hareflow.cluster import WorkerSpec
from tests.integration.conftest import System

pytestmark = pytest.mark.integration

DAG_SOURCE = """
    from hareflow import DAG, task

    with DAG("deep_conf", params={"depth": 0}):
        @task
        def reads_conf(ctx):
            print("reads_conf ran")
            return "ran"

        reads_conf()
"""


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("system", ["rabbitmq", "local"], indirect=True)
def test_a_run_whose_conf_is_nested_900_deep_fails_its_task_and_the_next_run_on_that_worker_succeeds(
    system: System, write_dag
) -> None:
    write_dag("deep_conf.py", DAG_SOURCE)
    system.start(workers=[WorkerSpec(concurrency=1, name="only-slot")])
    system.c.wait_for_dag("deep_conf")
    # Triggers refuse a conf nested over 32 levels; a run stored by another way (an older version,
    # a hand-written row) still reaches the worker, which must fail it cleanly.
    from hareflow.common.runs import trigger_run

    with system.c.sessions() as session, session.begin():
        run = trigger_run(session, "deep_conf", triggered_by="test")
        run.conf = {"depth": 900, "payload": nested(900)}
        deep_run = run.run_id
    assert system.c.wait_for_run("deep_conf", deep_run, timeout=60) == "failed"
    ti = system.tis("deep_conf", deep_run)["reads_conf"]
    assert ti.state == "failed"
    assert (ti.error or "").startswith(
        "the task could not be handed to a task process: RecursionError: maximum recursion depth exceeded"
    ), ti.error
    assert ti.error in system.log_text("deep_conf", deep_run, "reads_conf")

    run_id, state = system.run_dag("deep_conf", conf={"depth": 1})
    assert state == "success"
    after = system.tis("deep_conf", run_id)["reads_conf"]
    assert (after.worker, system.result("deep_conf", run_id, "reads_conf")) == ("only-slot", "ran")
