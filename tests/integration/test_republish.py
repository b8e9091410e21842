"""A message the broker confirmed is never published again; one it never confirmed is, once.

Executions are counted from the tasks' own side: every execution of a task leaves a file of its own,
so a task published twice and run twice shows up as two files, whatever the metastore recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.db import make_session_factory
from hareflow.common.messages import TaskMessage
from hareflow.common.runs import trigger_run
from hareflow.scheduler.dag_processor import DagProcessor
from hareflow.scheduler.loop import Scheduler

from hareflow.cluster import Cluster, WorkerSpec
from tests.fault.report import record_fault
from tests.integration.conftest import System

PARTS = 40
PART_SECONDS = 1.0
#: Far shorter than a part waits in the backlog (40 parts, 2 slots: up to 20 s).
QUEUED_TIMEOUT = 2.0

BACKLOG_DAG = """
    import os
    import time
    import uuid

    from hareflow import DAG, task

    MARKS = {marks!r}

    with DAG("{dag_id}", max_active_tasks=1000):

        @task
        def start():
            return 0

        @task
        def part(ctx, _):
            # One file per execution, named by task: two executions of a task are two files.
            open(os.path.join(MARKS, f"{{ctx.task_id}}@{{uuid.uuid4().hex}}"), "w").close()
            time.sleep({seconds})
            return ctx.task_id

        @task
        def join(*parts):
            return len(parts)

        first = start()
        join(*[part(first) for _ in range({parts})])
"""


def _executions(marks: Path) -> Counter[str]:
    return Counter(path.name.split("@")[0] for path in marks.iterdir())


@pytest.mark.parametrize("system", ["rabbitmq", "local"], indirect=True)
def test_a_backlog_far_deeper_than_the_workers_runs_each_task_exactly_once(
    system: System, write_dag, tmp_path: Path
) -> None:
    """40 one-second parts behind two slots wait up to 20 s in the queue, ten times queued_timeout:
    their messages are confirmed, so none is published again (before, about half ran twice)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    write_dag(
        "backlog.py",
        BACKLOG_DAG.format(marks=str(marks), dag_id="backlog", seconds=PART_SECONDS, parts=PARTS),
    )
    system.start([WorkerSpec(concurrency=2)], queued_timeout=QUEUED_TIMEOUT)
    run_id, state = system.run_dag("backlog", timeout=240)
    assert state == "success"
    executions = _executions(marks)
    tis = system.tis("backlog", run_id)
    parts = [task_id for task_id in tis if task_id.startswith("part")]
    assert len(parts) == PARTS
    twice = {task_id: n for task_id, n in executions.items() if n != 1}
    record_fault(
        f"backlog ten times longer than queued_timeout ({system.executor} executor)",
        tasks=PARTS,
        lost=PARTS - len(executions),
        more_than_once=len(twice),
    )
    assert not twice, f"parts run more than once: {twice}"
    assert sorted(executions) == sorted(parts)
    assert all(ti.state == "success" and ti.try_number == 1 for ti in tis.values())
    assert all(ti.confirmed_at is not None for ti in tis.values())
    assert system.result("backlog", run_id, "join") == PARTS


class DiesWhilePublishing(LocalExecutor):
    """The executor of a scheduler that dies right after committing its task instances as queued,
    before anything reached the broker (the error is none the scheduler handles)."""

    durable = True

    def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        raise SystemError("the scheduler died while publishing")


@pytest.mark.parametrize("system", ["rabbitmq", "local", "mariadb-rabbitmq", "sqlite-local"], indirect=True)
def test_tasks_a_dead_scheduler_committed_but_never_published_run_once(
    system: System, write_dag, tmp_path: Path
) -> None:
    """The crash between commit and publish: the next scheduler finds queued task instances with no
    confirmed message and publishes each once (after queued_timeout; with the local executor, whose
    queue died with the process, at once)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    write_dag("crash.py", BACKLOG_DAG.format(marks=str(marks), dag_id="crash", seconds=0.1, parts=3))
    settings = system.settings.replace(queued_timeout=QUEUED_TIMEOUT)
    cluster = Cluster(settings, workers=[])
    cluster.migrate()
    sessions = make_session_factory(cluster.engine)
    DagProcessor(settings=settings, session_factory=sessions).run_once()
    with sessions() as session, session.begin():
        run_id = trigger_run(session, "crash").run_id
    dying = Scheduler(settings=settings, session_factory=sessions, executor=DiesWhilePublishing())
    with pytest.raises(SystemError):
        dying.run_once()
    queued = {ti.task_id: ti.confirmed_at for ti in _tis(sessions, run_id) if ti.state == "queued"}
    assert queued == {"start": None}
    cluster.engine.dispose()

    system.start([WorkerSpec(concurrency=2)], queued_timeout=QUEUED_TIMEOUT)
    assert system.c.wait_for_run("crash", run_id, timeout=120) == "success"
    executions = _executions(marks)
    record_fault(
        "scheduler dies between committing queued and publishing",
        tasks=3,
        lost=3 - len(executions),
        more_than_once=sum(1 for n in executions.values() if n > 1),
    )
    assert executions == Counter({task_id: 1 for task_id in executions}) and len(executions) == 3
    tis = system.tis("crash", run_id)
    assert all(ti.state == "success" and ti.try_number == 1 for ti in tis.values())
    assert all(ti.confirmed_at is not None for ti in tis.values())  # the mark matched on this database


def _tis(sessions, run_id: str) -> list:
    from hareflow.common.db import TaskInstance
    from sqlalchemy import select

    with sessions() as session:
        return list(session.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)))
