"""The metastore goes down mid-run and comes back: nothing is acked before it is committed, so no
result and no log chunk is lost, and the run finishes."""

from __future__ import annotations

import importlib
import importlib.util
import threading
import time
from pathlib import Path

import pytest
from hareflow.common.db import TaskLog, TaskResult
from hareflow.scheduler.dispatch import build_messages
from sqlalchemy import select

from hareflow.cluster import WorkerSpec
from tests.fault.conftest import (
    describe_tis,
    fault_settings,
    run_states,
    running_cluster,
    wait_for,
    wait_for_run,
)
from tests.fault.report import executions, record_fault

pytestmark = pytest.mark.fault

PARTS = 12
#: How long the metastore stays down, from the moment it stops.
OUTAGE = 20.0
DAG_SOURCE = f"""
    import os
    import time
    from datetime import datetime
    from pathlib import Path

    from hareflow import DAG, task

    MARKERS = Path(__file__).resolve().parent.parent / "markers"

    with DAG("fault_db_outage", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
             max_active_tasks=32):

        @task
        def start():
            print("start working", flush=True)
            return 100

        @task
        def part(base, index):
            if MARKERS.is_dir():
                (MARKERS / f"part-{{index}}-{{os.getpid()}}-{{time.time_ns()}}").touch()
            print(f"part {{index}} working", flush=True)
            time.sleep(1.0)
            return base + index

        @task
        def join(*values):
            print(f"join of {{len(values)}} values", flush=True)
            return sum(values)

        base = start()
        join(*[part(base, i) for i in range({PARTS})])
"""


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_run_survives_the_metastore_going_down_and_loses_no_result(
    mode: str, private_rabbitmq, private_postgres, broker_prefix, write_dag, dags_folder: Path, tmp_path: Path
) -> None:
    write_dag("outage.py", DAG_SOURCE)
    markers = tmp_path / "markers"
    markers.mkdir()
    settings = fault_settings(
        tmp_path,
        database_url=private_postgres.url,
        broker_url=private_rabbitmq.url,
        prefix=broker_prefix,
        dags=dags_folder,
    )
    workers = [WorkerSpec(concurrency=3, name=f"db-{mode}-w{i}") for i in (1, 2)]
    with running_cluster(settings, workers) as cluster:
        cluster.wait_for_dag("fault_db_outage", timeout=60)
        run_id = cluster.trigger("fault_db_outage")

        def parts_in_flight() -> bool:
            _, tis = run_states(cluster, "fault_db_outage", run_id)
            states = [ti.state for t, ti in tis.items() if t.startswith("part")]
            return states.count("success") >= 1 and states.count("running") >= 2

        wait_for(parts_in_flight, timeout=90, what="some parts done and some running", interval=0.05)
        stopped = time.monotonic()
        private_postgres.stop(mode)
        # Workers keep reporting while the metastore is down: the reports wait in the queue, unacked.
        results_queue = f"{broker_prefix}.results"
        wait_for(
            lambda: sum(private_rabbitmq.queue_depths().get(results_queue, (0, 0))) >= 10,
            timeout=30,
            what="reports to pile up in the results queue while the metastore is down",
        )
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))  # the consumer keeps retrying
        private_postgres.start()
        back = time.monotonic()

        assert wait_for_run(cluster, "fault_db_outage", run_id, timeout=180) == "success"
        recovery = time.monotonic() - back
        _, tis = run_states(cluster, "fault_db_outage", run_id)
        ran = executions(markers)
        figures = record_fault(
            f"PostgreSQL {'stop' if mode == 'fast' else 'crash'} for {OUTAGE:g} s, tasks running",
            tasks=PARTS,
            lost=PARTS - len(ran),
            more_than_once=sum(1 for n in ran.values() if n > 1),
            recovery_s=round(recovery, 2),
        )
        assert figures["lost"] == 0 and figures["executed_more_than_once"] == 0, figures
        assert len(tis) == PARTS + 2
        assert all(ti.state == "success" and ti.try_number == 1 for ti in tis.values()), describe_tis(tis)
        ids = {ti.id: task_id for task_id, ti in tis.items()}

        def logs_by_task() -> dict[str, str]:
            with cluster.sessions() as session:
                rows = session.execute(
                    select(TaskLog.ti_id, TaskLog.text).where(TaskLog.ti_id.in_(ids)).order_by(TaskLog.seq)
                ).all()
            out: dict[str, str] = {}
            for ti_id, text in rows:
                out[ids[ti_id]] = out.get(ids[ti_id], "") + text
            return out

        wait_for(lambda: len(logs_by_task()) == len(tis), timeout=30, what="log chunks of every task")
        logs = logs_by_task()
        assert "start working" in logs["start"]
        assert "join of 12 values" in logs["join"]
        for t in tis:
            if t.startswith("part"):
                assert f"part {int(t.split('__')[1]) if '__' in t else 0} working" in logs[t], t
        with cluster.sessions() as session:
            results = dict(
                session.execute(
                    select(TaskResult.ti_id, TaskResult.value_json).where(TaskResult.ti_id.in_(ids))
                ).all()
            )
        assert len(results) == len(tis)
        assert results[tis["join"].id] == str(sum(100 + i for i in range(PARTS)))


def test_tasks_queued_just_before_the_metastore_dies_are_published_when_it_returns(
    private_rabbitmq,
    private_postgres,
    broker_prefix,
    write_dag,
    dags_folder: Path,
    tmp_path: Path,
    monkeypatch,
) -> None:
    """The narrowest window: the metastore dies while the scheduler marks task instances queued and
    builds their messages. They must go out once it is back, not after queued_timeout."""

    write_dag("outage.py", DAG_SOURCE.replace(f"range({PARTS})", "range(2)"))
    settings = fault_settings(
        tmp_path,
        database_url=private_postgres.url,
        broker_url=private_rabbitmq.url,
        prefix=broker_prefix,
        dags=dags_folder,
        queued_timeout=3600.0,
    )
    original = build_messages
    restarter: list[threading.Thread] = []

    def dying_build_messages(session, tis, *args, **kwargs):
        # The parts read their upstream result while their messages are built: die right there.
        if not restarter and any(ti.task_id.startswith("part") for ti in tis):
            private_postgres.stop("immediate")
            restarter.append(threading.Thread(target=lambda: (time.sleep(3), private_postgres.start())))
            restarter[0].start()
        return original(session, tis, *args, **kwargs)

    # Wherever the scheduler builds its messages (the pass, the re-publishing step).
    for name in ("hareflow.scheduler.loop", "hareflow.scheduler.scheduling"):
        module = importlib.import_module(name) if importlib.util.find_spec(name) else None
        if module is not None and getattr(module, "build_messages", None) is build_messages:
            monkeypatch.setattr(module, "build_messages", dying_build_messages)
    try:
        with running_cluster(settings, [WorkerSpec(concurrency=2, name="db-window-w1")]) as cluster:
            cluster.wait_for_dag("fault_db_outage", timeout=60)
            run_id = cluster.trigger("fault_db_outage")
            assert wait_for_run(cluster, "fault_db_outage", run_id, timeout=120) == "success"
            _, tis = run_states(cluster, "fault_db_outage", run_id)
            assert all(ti.state == "success" and ti.try_number == 1 for ti in tis.values()), describe_tis(tis)
            assert restarter, "the metastore died in the window under test"
    finally:
        for t in restarter:
            t.join(timeout=120)
