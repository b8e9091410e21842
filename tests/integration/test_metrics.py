"""Metrics end to end: a DAG runs on a real scheduler and worker (both executors), and the
exporter started from ``metrics_port`` is scraped over HTTP as Prometheus would.

The process's registry outlives each test, so this test's queue and worker names are its own and
the counters it shares with other tests are compared before and after.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hareflow.cluster import WorkerSpec
from tests.integration.conftest import System, wait_until
from tests.integration.test_cli_web import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape_until(port: int, condition: Callable[[Samples], bool], message: str) -> Samples:
    """Scrape until ``condition`` holds (gauges are recounted every refresh interval); the samples."""

    def attempt() -> Samples | None:
        samples = scrape(port)
        return samples if condition(samples) else None

    return wait_until(attempt, message=message)


def test_a_run_shows_up_in_every_metric_of_the_scheduler_results_consumer_and_worker(
    system: System, write_dag, tmp_path: Path
) -> None:
    queue = f"m_{uuid.uuid4().hex[:8]}"
    worker = f"metrics-worker-{uuid.uuid4().hex[:6]}"
    flag = tmp_path / "release"
    write_dag(
        "measured.py",
        f"""
        import os, time
        from hareflow import DAG, task

        with DAG("measured"):
            @task(queue="{queue}")
            def first():
                return 1

            @task(queue="{queue}")
            def held(x):
                while not os.path.exists({str(flag)!r}):
                    time.sleep(0.02)
                return x

            @task(queue="{queue}")
            def last(x):
                return x

            last(held(first()))
        """,
    )
    port = free_port()
    cluster = system.start(
        workers=[WorkerSpec(queues=(queue,), concurrency=3, name=worker)],
        metrics_port=port,
        metrics_refresh_interval=0.1,
    )
    before = scrape(port)
    successes_before = sample(before, "hareflow_task_state_changes_total", state="success") or 0.0
    cluster.wait_for_dag("measured")
    run_id = cluster.trigger("measured")

    # While "held" runs: the scheduler's recount and the worker's slots show it.
    during = scrape_until(
        port,
        lambda s: (
            sample(s, "hareflow_task_instances", state="running") == 1
            and sample(s, "hareflow_task_instances", state="success") == 1
        ),
        "the held task counted as running",
    )
    assert sample(during, "hareflow_task_instances", state="none") == 1
    assert sample(during, "hareflow_worker_slots_used", worker=worker) == 1

    flag.touch()
    assert cluster.wait_for_run("measured", run_id) == "success"

    # After the run: nothing left in active runs, the queue is empty and consumed by our worker.
    after = scrape_until(
        port,
        lambda s: (
            sample(s, "hareflow_task_instances", state="success") == 0
            and sample(s, "hareflow_queue_consumers", queue=queue) == 1
        ),
        "the gauges recounted after the run",
    )
    assert sample(after, "hareflow_queue_messages", queue=queue) == 0
    assert sample(after, "hareflow_task_duration_seconds_count", queue=queue, outcome="success") == 3
    assert sample(after, "hareflow_task_duration_seconds_count", queue=queue, outcome="failed") is None
    held_for = sample(after, "hareflow_task_duration_seconds_sum", queue=queue, outcome="success")
    assert held_for is not None and held_for > 0
    assert sample(after, "hareflow_task_dispatch_to_start_seconds_count", queue=queue) == 3
    successes = sample(after, "hareflow_task_state_changes_total", state="success") or 0.0
    assert successes - successes_before == 3

    def grew(name: str) -> float:
        return (sample(after, name) or 0.0) - (sample(before, name) or 0.0)

    assert grew("hareflow_scheduler_loop_seconds_count") > 0
    assert grew("hareflow_scheduler_tasks_dispatched_total") == 3
    assert grew("hareflow_results_batch_size_sum") >= 3  # the three results, and heartbeats
    assert grew("hareflow_results_commit_seconds_count") > 0
    assert sample(after, "hareflow_worker_slots", worker=worker) == 3
    assert sample(after, "hareflow_worker_slots_used", worker=worker) == 0

    # Standalone: the web server of the same process shows the same registry on its own /metrics.
    from hareflow.web import create_app

    app = create_app(system.settings, sessions=cluster.sessions, executor=cluster.executor)
    page = app.test_client().get("/metrics")
    assert page.status_code == 200
    assert f'hareflow_worker_slots{{worker="{worker}"}} 3.0' in page.text
    assert f'hareflow_task_duration_seconds_count{{outcome="success",queue="{queue}"}} 3.0' in page.text
