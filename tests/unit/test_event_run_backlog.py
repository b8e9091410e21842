"""A backlog of queued runs (a burst of events) costs a scheduling pass only the runs it can start."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hareflow.common.db import Dag
from hareflow.common.event_runs import Event, insert_event_runs
from hareflow.scheduler.scheduling import _active_runs, schedule_pass

from tests.unit.test_scheduler_loop import NOW, Harness

DAGS = """
    from hareflow import DAG, WebhookTrigger, task

    @task
    def noop():
        return 1

    with DAG("busy", trigger=WebhookTrigger(), max_active_runs=2):
        noop()

    with DAG("quiet", trigger=WebhookTrigger(), max_active_runs=1):
        noop()
"""


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    h.dag_file("dags.py", DAGS)
    yield h
    h.close()


def _events(harness: Harness, dag_id: str, keys: list[str], when: object) -> None:
    with harness.sessions() as s, s.begin():
        dag = s.get(Dag, dag_id)
        assert dag is not None
        insert_event_runs(s, dag, [Event({}, k) for k in keys], when, triggered_by="test")  # type: ignore[arg-type]


def test_a_pass_reads_only_the_queued_runs_each_limit_lets_start_and_starves_no_dag(harness: Harness) -> None:
    _events(harness, "busy", [f"b{i:02d}" for i in range(50)], NOW)
    _events(harness, "quiet", ["q0", "q1"], NOW + timedelta(seconds=1))  # newer than the whole backlog

    with harness.sessions() as s:
        candidates = _active_runs(s)
    with harness.sessions() as s, s.begin():
        schedule_pass(s, NOW, harness.scheduler._serialized_dag)

    assert sorted(r.run_id for r in candidates) == ["event__b00", "event__b01", "event__q0"]
    running = {
        (r.dag_id, r.run_id) for d in ("busy", "quiet") for r in harness.runs(d) if r.state == "running"
    }
    assert running == {("busy", "event__b00"), ("busy", "event__b01"), ("quiet", "event__q0")}
    with harness.sessions() as s:
        # after the pass: the running runs, and again at most `limit` of each DAG's queued ones
        assert sorted(r.run_id for r in _active_runs(s)) == [
            "event__b00",
            "event__b01",
            "event__b02",
            "event__b03",
            "event__q0",
            "event__q1",
        ]
