"""Metrics: what the scheduler, the results consumer and the exporter record, read back from the
process's registry. The registry is shared by every test in the process, so counters are compared
before and after, and labels are made unique where a test needs an absolute value."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hareflow.common import metrics
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.config import load_settings
from hareflow.common.db import Base, DagRun, TaskInstance, create_engine_for, make_session_factory
from hareflow.common.messages import ResultMessage, StateEvent, TaskKey
from hareflow.common.runs import trigger_run
from hareflow.scheduler.results import ResultsConsumer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from tests.unit.test_scheduler_loop import Harness

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def value(name: str, **labels: str) -> float:
    """A sample's current value in this process (0 when it has not been created yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def event(kind: str, state: str) -> StateEvent:
    return StateEvent(kind=kind, dag_id="d", run_id="r", state=state, at=0.0, task_id="t")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_state_changes_are_counted_by_new_state_and_log_events_are_not() -> None:
    before = {
        s: value("hareflow_task_state_changes_total", state=s) for s in ("success", "failed", "running")
    }
    run_before = value("hareflow_run_state_changes_total", state="success")
    metrics.count_state_changes(
        [
            event("task", "success"),
            event("task", "success"),
            event("task", "failed"),
            event("log", "running"),
            event("run", "success"),
        ]
    )
    assert value("hareflow_task_state_changes_total", state="success") - before["success"] == 2
    assert value("hareflow_task_state_changes_total", state="failed") - before["failed"] == 1
    assert value("hareflow_task_state_changes_total", state="running") == before["running"]
    assert value("hareflow_run_state_changes_total", state="success") - run_before == 1


def test_a_start_before_its_publication_time_counts_as_no_wait_and_an_unstamped_message_is_skipped() -> None:
    queue = f"q_{uuid.uuid4().hex[:8]}"
    metrics.task_started(queue, published_at=1000.0, started_at=999.5)  # the worker's clock is behind
    metrics.task_started(queue, published_at=1000.0, started_at=1000.25)
    metrics.task_started(queue, published_at=0.0, started_at=1000.0)  # no publication time
    assert value("hareflow_task_dispatch_to_start_seconds_count", queue=queue) == 2
    assert value("hareflow_task_dispatch_to_start_seconds_sum", queue=queue) == 0.25


def test_a_scheduler_pass_records_its_time_dispatches_and_the_states_it_set(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    try:
        h.dag_file(
            "fan.py",
            """
            from datetime import datetime
            from hareflow import DAG, task
            with DAG("fan", start_date=datetime(2026, 1, 1)):
                @task
                def a():
                    return 1
                @task
                def b():
                    return 2
                @task
                def c(x, y):
                    return x + y
                c(a(), b())
            """,
        )
        with h.sessions() as s, s.begin():
            trigger_run(s, "fan", now=NOW)
        passes = value("hareflow_scheduler_loop_seconds_count")
        dispatched = value("hareflow_scheduler_tasks_dispatched_total")
        queued = value("hareflow_task_state_changes_total", state="queued")
        running_runs = value("hareflow_run_state_changes_total", state="running")

        report = h.scheduler.run_once(NOW)

        assert report.dispatched == 2
        assert value("hareflow_scheduler_loop_seconds_count") - passes == 1
        assert value("hareflow_scheduler_tasks_dispatched_total") - dispatched == 2
        assert value("hareflow_task_state_changes_total", state="queued") - queued == 2
        assert value("hareflow_run_state_changes_total", state="running") - running_runs == 1
    finally:
        h.close()


def test_the_scheduler_recounts_task_states_and_queue_depths_at_most_every_refresh_interval(
    tmp_path: Path,
) -> None:
    queue = f"q_{uuid.uuid4().hex[:8]}"
    h = Harness(tmp_path, metrics_refresh_interval=30.0)
    h.executor.start()
    try:
        h.dag_file(
            "pair.py",
            f"""
            from datetime import datetime
            from hareflow import DAG, task
            with DAG("pair", start_date=datetime(2026, 1, 1)):
                @task(queue="{queue}")
                def first():
                    return 1
                @task(queue="{queue}")
                def second(x):
                    return x
                second(first())
            """,
        )
        with h.sessions() as s, s.begin():
            trigger_run(s, "pair", now=NOW)
        h.scheduler.run_once(NOW)  # dispatches "first" (captured), then recounts
        assert value("hareflow_task_instances", state="queued") == 1
        assert value("hareflow_task_instances", state="none") == 1
        assert value("hareflow_task_instances", state="success") == 0

        with h.sessions() as s, s.begin():  # "first" starts, as the results consumer would record
            s.execute(update(TaskInstance).where(TaskInstance.state == "queued").values(state="running"))
        h.scheduler.refresh_gauges(NOW + timedelta(seconds=10))  # within the interval: no recount
        assert value("hareflow_task_instances", state="queued") == 1

        later = NOW + timedelta(seconds=30)
        LocalExecutor.publish_tasks(h.executor, h.published)  # really queue the captured message
        h.scheduler.refresh_gauges(later)
        assert value("hareflow_task_instances", state="queued") == 0
        assert value("hareflow_task_instances", state="running") == 1
        assert REGISTRY.get_sample_value("hareflow_queue_messages", {"queue": queue}) == 1
        assert REGISTRY.get_sample_value("hareflow_queue_consumers", {"queue": queue}) == 0

        with h.sessions() as s, s.begin():
            s.execute(update(DagRun).values(state="success"))
        h.scheduler.refresh_gauges(later + timedelta(seconds=30))
        assert value("hareflow_task_instances", state="running") == 0  # finished runs are not counted
    finally:
        h.close()


def test_the_results_consumer_records_batch_size_commit_time_and_the_states_it_applied(
    tmp_path: Path,
) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'r.db'}")
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    with sessions() as s, s.begin():
        run = DagRun(dag_id="d", run_id="r", run_type="manual", state="running", queued_at=NOW, conf={})
        s.add(run)
        s.flush()
        for task_id in ("t1", "t2"):
            s.add(
                TaskInstance(
                    run_pk=run.id, dag_id="d", run_id="r", task_id=task_id, state="queued", try_number=1
                )
            )
    executor = LocalExecutor()
    consumer = ResultsConsumer(executor=executor, session_factory=sessions, settings=load_settings(env={}))
    consumer.start()
    with sessions() as s:
        tis = list(s.scalars(select(TaskInstance).order_by(TaskInstance.id)))
    reports = [
        ResultMessage(
            key=TaskKey(ti.id, "d", "r", ti.task_id, -1, 1),
            outcome="success",
            worker="w",
            hostname="h",
            pid=1,
            at=100.0,
        )
        for ti in tis
    ]
    batches = value("hareflow_results_batch_size_count")
    reports_recorded = value("hareflow_results_batch_size_sum")
    commits = value("hareflow_results_commit_seconds_count")
    successes = value("hareflow_task_state_changes_total", state="success")

    executor.publish_results(reports + reports[:1])  # the duplicate changes nothing
    assert consumer.run_once(timeout=1) == 3

    assert value("hareflow_results_batch_size_count") - batches == 1
    assert value("hareflow_results_batch_size_sum") - reports_recorded == 3
    assert value("hareflow_results_commit_seconds_count") - commits == 1
    assert value("hareflow_task_state_changes_total", state="success") - successes == 2
    engine.dispose()


def test_the_exporter_is_off_at_port_zero_shared_by_the_services_of_a_process_and_closed_by_the_last(
    tmp_path: Path,
) -> None:
    assert metrics.start_exporter(load_settings(env={})).address is None
    port = free_port()
    settings = load_settings(env={}, overrides={"metrics_port": port})
    url = f"http://127.0.0.1:{port}/metrics"
    scheduler_side = metrics.start_exporter(settings)
    worker_side = metrics.start_exporter(settings)  # standalone: a second service, same settings
    with urllib.request.urlopen(url, timeout=5) as response:
        names = {f.name for f in text_string_to_metric_families(response.read().decode())}
    assert {"hareflow_scheduler_loop_seconds", "hareflow_task_duration_seconds"} <= names
    scheduler_side.close()
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
    worker_side.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_a_metrics_port_in_use_is_logged_and_the_service_runs_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = metrics.start_exporter(load_settings(env={}, overrides={"metrics_port": port}))
    assert exporter.address is None
    assert "metrics exporter not started" in caplog.text
    exporter.close()


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    defined = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            defined.add(obj._name + ("_total" if obj._type == "counter" else ""))
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(hareflow_\w+)` \|", text, flags=re.MULTILINE))
    assert defined == documented


def test_the_dead_letters_gauge_counts_waiting_dead_letters_by_queue_and_drops_to_zero(
    tmp_path: Path,
) -> None:
    from hareflow.common import dead_letters

    queue = f"q_{uuid.uuid4().hex[:8]}"
    h = Harness(tmp_path, metrics_refresh_interval=30.0)
    try:
        rows = [
            dead_letters.describe(
                b"x",
                {"x-hareflow-queue": queue, "x-hareflow-reason": "r", "x-hareflow-dead-id": str(n)},
                message_id=None,
                content_type=None,
                now=NOW,
            )
            for n in range(3)
        ]
        with h.sessions() as s, s.begin():
            stored = dead_letters.record(s, rows)
        h.scheduler.refresh_gauges(NOW)
        assert REGISTRY.get_sample_value("hareflow_dead_letters", {"queue": queue}) == 3

        with h.sessions() as s, s.begin():
            for row in stored:
                dead_letters.discard(s, row.id, username="tests", origin=None, now=NOW)
        h.scheduler.refresh_gauges(NOW + timedelta(seconds=30))
        assert REGISTRY.get_sample_value("hareflow_dead_letters", {"queue": queue}) == 0
    finally:
        h.close()
