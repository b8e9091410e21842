"""A worker SIGKILLed mid-task: the broker redelivers its unacked task to another worker, and the
killed worker's task process does not go on running the task as an orphan."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hareflow.common.db import TaskLog, Worker
from sqlalchemy import select

from tests.fault.conftest import (
    describe_tis,
    fault_settings,
    process_alive,
    run_states,
    running_cluster,
    start_worker_process,
    wait_for,
    wait_for_run,
)
from tests.fault.report import record_fault

pytestmark = pytest.mark.fault

DAG_SOURCE = """
    import os
    import time
    from datetime import datetime

    from hareflow import DAG, task

    RUNS = {runs!r}

    def note(what):
        with open(RUNS, "a") as f:
            f.write(f"{{what}} {{os.getpid()}}\\n")

    with DAG("fault_worker_killed", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

        @task
        def slow(ctx):
            note("start")
            print(f"slow starts try {{ctx.try_number}}", flush=True)
            time.sleep(4)
            note("end")
            print("slow ends", flush=True)
            return "slow-done"

        @task
        def after(value):
            return value + "!"

        after(slow())
"""


def test_a_task_whose_worker_is_killed_is_redelivered_and_finished_by_the_other_worker(
    private_rabbitmq, postgres_url, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    write_dag("killed.py", DAG_SOURCE.format(runs=str(runs)))
    settings = fault_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=private_rabbitmq.url,
        prefix=broker_prefix,
        dags=dags_folder,
    )
    workers = {}
    with running_cluster(settings) as cluster:
        try:
            for name in ("w1", "w2"):
                workers[name] = start_worker_process(
                    name,
                    broker_url=private_rabbitmq.url,
                    prefix=broker_prefix,
                    dags=dags_folder,
                    log_dir=tmp_path,
                )

            def both_active() -> bool:
                with cluster.sessions() as session:
                    rows = session.scalars(select(Worker).where(Worker.name.in_(workers))).all()
                return {w.name for w in rows if w.state == "active"} == set(workers)

            wait_for(both_active, timeout=90, what="both worker processes to heartbeat")
            cluster.wait_for_dag("fault_worker_killed", timeout=60)
            run_id = cluster.trigger("fault_worker_killed")

            def running_on() -> str | None:
                _, tis = run_states(cluster, "fault_worker_killed", run_id)
                ti = tis.get("slow")
                return ti.worker if ti is not None and ti.state == "running" and ti.worker else None

            victim_name = wait_for(
                running_on, timeout=60, what="'slow' to be running on a worker", interval=0.05
            )
            victim = workers[victim_name]
            survivor_name = next(n for n in workers if n != victim_name)
            wait_for(
                lambda: runs.exists() and runs.read_text().count("start") == 1,
                timeout=30,
                what="the task to start",
            )
            (victim_child,) = [int(line.split()[1]) for line in runs.read_text().splitlines()]
            killed_at = time.monotonic()
            below = victim.kill_process_group()
            assert victim_child in below, "the task runs in a task process below the worker"
            assert victim.proc.returncode == -9

            # The worker's zygote notices its worker is gone and ends the task process.
            wait_for(
                lambda: not process_alive(victim_child),
                timeout=30,
                what="the killed worker's task process to end",
            )
            assert wait_for_run(cluster, "fault_worker_killed", run_id, timeout=120) == "success"
            recovery = time.monotonic() - killed_at
            _, tis = run_states(cluster, "fault_worker_killed", run_id)
            assert {t: ti.state for t, ti in tis.items()} == {"slow": "success", "after": "success"}, (
                describe_tis(tis)
            )
            slow = tis["slow"]
            assert slow.worker == survivor_name
            assert slow.try_number == 1, "a redelivery runs the same try again, not a retry"
            assert slow.error is None
            # The survivor started the task after the kill and finished it; the victim's copy never
            # finished (an orphan would have written its "end" before the survivor's).
            lines = [line.split() for line in runs.read_text().splitlines()]
            starts = [int(pid) for what, pid in lines if what == "start"]
            ends = [int(pid) for what, pid in lines if what == "end"]
            figures = record_fault(
                "worker SIGKILL mid-task",
                tasks=len(tis),
                lost=sum(1 for ti in tis.values() if ti.state != "success"),
                more_than_once=int(len(starts) > 1),  # the killed attempt, then the redelivery
                completed_more_than_once=int(len(ends) > 1),
                recovery_s=round(recovery, 2),
            )
            assert len(starts) == 2 and starts[0] == victim_child, figures
            assert ends == [starts[1]], figures
            # The try's log keeps the redelivery apart: a banner naming the delivery, the worker
            # and the time, then the whole of the second delivery's output.
            with cluster.sessions() as session:
                log = "".join(
                    session.scalars(
                        select(TaskLog.text).where(TaskLog.ti_id == slow.id).order_by(TaskLog.seq)
                    )
                )
            banner = log.index(f"--- delivery 2 of try 1, on worker {survivor_name} ")
            assert log.index("slow starts try 1", banner) < log.index("slow ends", banner), log
            assert log.count("slow ends") == 1, log
            assert workers[survivor_name].proc.poll() is None, "the surviving worker keeps running"
        finally:
            for w in workers.values():
                w.stop()
