"""Prometheus metrics: every metric hareflow exports, defined once, and the HTTP exporter.

Each metric lives in prometheus-client's default registry, created when this module is first
imported (by the scheduler, the results consumer, the worker or the web server; never by
``import hareflow``, so DAG files do not load prometheus-client). A process exports the metrics of
everything it runs: ``hareflow standalone`` shows all of them on one page. docs/metrics.md lists
them with their labels and meaning; keep it in step with this module.

Values are observed where they are already at hand (a pass that just ended, a batch just
committed, a task whose result was just built): no metric costs a query or a broker call on the
hot path. The gauges that need one (task instances by state, queue depths) are recounted by the
scheduler every ``metrics_refresh_interval``.

``metrics_port`` starts an exporter in the scheduler, results and worker processes
(:func:`start_exporter`); the web server serves ``/metrics`` on its own port instead.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hareflow.common.config import Settings
from hareflow.common.messages import StateEvent
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client import start_http_server as _start_http_server

log = logging.getLogger(__name__)

#: Seconds, for things that take milliseconds normally and seconds when something is wrong.
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds a task runs: from a no-op (milliseconds) to a nightly job (hours).
TASK_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
)  # fmt: skip
#: Seconds a task waits between its publication and its start: milliseconds on an idle system,
#: up to hours behind a backlog.
WAIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0, 14400.0,
)  # fmt: skip

# -- task instances (scheduler, results consumer, worker) ------------------------------------------

TASK_INSTANCES = Gauge(
    "hareflow_task_instances",
    "Task instances of active (queued or running) DAG runs, by state; recounted by the scheduler "
    "every metrics_refresh_interval.",
    ["state"],
)
TASK_STATE_CHANGES = Counter(
    "hareflow_task_state_changes_total",
    "Task-instance state changes made by this process, by new state (the scheduler: scheduled, "
    "queued (a sensor's next poke too), upstream_failed, skipped, removed, and failed or up_for_retry "
    "for the tasks of a lost worker; the results consumer: running, success, failed, up_for_retry, "
    "up_for_reschedule).",
    ["state"],
)
RUN_STATE_CHANGES = Counter(
    "hareflow_run_state_changes_total",
    "DAG-run state changes made by the scheduler (queued when it creates a scheduled run, running, "
    "success, failed), by new state.",
    ["state"],
)
EVENTS = Counter(
    "hareflow_events_total",
    "Trigger events (broker messages and webhook calls) handled by this process, by outcome: "
    "run_created, duplicate (a run with the event's key existed: a redelivery or a repeat), "
    "rejected (a bad body: dead-lettered, or answered 400).",
    ["source", "outcome"],
)
TASK_DISPATCH_TO_START = Histogram(
    "hareflow_task_dispatch_to_start_seconds",
    "Seconds from the scheduler building a task message to a worker starting the task (the "
    "scheduler's clock against the worker's: keep hosts' clocks in sync), by queue.",
    ["queue"],
    buckets=WAIT_BUCKETS,
)
TASK_DURATION = Histogram(
    "hareflow_task_duration_seconds",
    "Seconds a worker spent running one try of a task, by queue and the worker's outcome (success, "
    "failed, skipped, or up_for_reschedule for one poke of a sensor in reschedule mode; a failed try "
    "with retries left becomes up_for_retry in the metastore).",
    ["queue", "outcome"],
    buckets=TASK_BUCKETS,
)
STATE_WRITES_LOST = Counter(
    "hareflow_state_writes_lost_total",
    "State writes that lost a compare-and-set race and changed nothing (another results consumer, "
    "scheduler or operator moved the row on since it was read), by transition.",
    ["transition"],
)
DEAD_LETTERED = Counter(
    "hareflow_dead_lettered_total",
    "Messages moved to the dead-letter queue, by reason (malformed_task, not_a_task, "
    "too_many_deliveries, outside_dags_folder: by a worker; malformed_result, unappliable_result: "
    "by the results consumer).",
    ["reason"],
)

# -- scheduler ---------------------------------------------------------------------------------------

SCHEDULER_LOOP = Histogram(
    "hareflow_scheduler_loop_seconds",
    "Seconds one scheduler pass (Scheduler.run_once: due runs, scheduling and dispatch, and the "
    "timers when due) took.",
    buckets=FAST_BUCKETS,
)
SCHEDULER_LOOP_ERRORS = Counter(
    "hareflow_scheduler_loop_errors_total",
    "Scheduler passes that failed (metastore or broker unreachable, or a bug; see the log) and were retried.",
)
TASKS_DISPATCHED = Counter(
    "hareflow_scheduler_tasks_dispatched_total",
    "Task messages the scheduler published for a new try.",
)
MAPPED_EXPANSIONS = Counter(
    "hareflow_scheduler_mapped_expansions_total",
    "Mapped tasks the scheduler expanded, by outcome: expanded (into instances), empty (skipped), "
    "failed (over max_map_length, or over a value that is not a list or dict), revised (a cleared "
    "mapped task expanded again to a new length).",
    ["outcome"],
)
MAPPED_INSTANCES = Counter(
    "hareflow_scheduler_mapped_instances_created_total",
    "Task instances created by expanding mapped tasks.",
)
TASKS_REPUBLISHED = Counter(
    "hareflow_scheduler_tasks_republished_total",
    "Task messages published again because the broker never confirmed them: their publication "
    "failed, or their scheduler died before publishing them (found after queued_timeout).",
)
LOST_WORKERS = Counter(
    "hareflow_scheduler_lost_workers_total",
    "Workers the scheduler declared lost (no heartbeat for worker_timeout).",
)
QUEUE_MESSAGES = Gauge(
    "hareflow_queue_messages",
    "Task messages waiting in a task queue (ready, not held by a worker), as the broker (or the "
    "local executor) reports it; refreshed by the scheduler every metrics_refresh_interval.",
    ["queue"],
)
QUEUE_CONSUMERS = Gauge(
    "hareflow_queue_consumers",
    "Consumers (worker connections) of a task queue; refreshed with hareflow_queue_messages.",
    ["queue"],
)
DEAD_LETTER_MESSAGES = Gauge(
    "hareflow_dead_letter_messages",
    "Messages waiting in the dead-letter queue, not yet recorded in the metastore; refreshed with "
    "hareflow_queue_messages.",
)
DEAD_LETTERS = Gauge(
    "hareflow_dead_letters",
    "Dead letters recorded in the metastore and neither requeued nor discarded, by the queue they "
    "were dead-lettered from; refreshed with hareflow_queue_messages.",
    ["queue"],
)

# -- results consumer ------------------------------------------------------------------------------------

RESULTS_BATCH_SIZE = Histogram(
    "hareflow_results_batch_size",
    "Worker reports (results, log chunks, heartbeats) applied in one metastore transaction; the "
    "_sum is the number of reports recorded.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
RESULTS_COMMIT = Histogram(
    "hareflow_results_commit_seconds",
    "Seconds to apply one batch of reports and commit it.",
    buckets=FAST_BUCKETS,
)
RESULTS_COMMIT_ERRORS = Counter(
    "hareflow_results_commit_errors_total",
    "Batch commits that failed because the metastore was unreachable (the batch is retried, "
    "nothing is acked meanwhile).",
)

# -- worker ----------------------------------------------------------------------------------------------

WORKER_SLOTS = Gauge("hareflow_worker_slots", "Task slots (concurrency) of a worker.", ["worker"])
WORKER_SLOTS_USED = Gauge(
    "hareflow_worker_slots_used", "Slots of a worker running a task right now.", ["worker"]
)

# -- web -----------------------------------------------------------------------------------------------

WEB_REQUESTS = Counter(
    "hareflow_web_requests_total",
    "HTTP requests the web server answered, by method, Flask endpoint and status code.",
    ["method", "endpoint", "status"],
)
WEB_REQUEST_SECONDS = Histogram(
    "hareflow_web_request_seconds",
    "Seconds the web server took to answer a request, by method and Flask endpoint.",
    ["method", "endpoint"],
)
WEB_SOCKETIO_CLIENTS = Gauge(
    "hareflow_web_socketio_clients", "Browsers and scripts connected over Socket.IO for live updates."
)
WEB_EVENTS_RELAYED = Counter(
    "hareflow_web_events_relayed_total", "State events relayed to Socket.IO clients."
)


# -- recording helpers -----------------------------------------------------------------------------------


def count_state_changes(events: Iterable[StateEvent]) -> None:
    """Count the task and run state changes among ``events`` (published after a commit)."""
    tasks: Tally[str] = Tally()
    runs: Tally[str] = Tally()
    for e in events:
        if e.kind == "task":
            tasks[e.state] += 1
        elif e.kind == "run":
            runs[e.state] += 1
    for state, n in tasks.items():
        TASK_STATE_CHANGES.labels(state).inc(n)
    for state, n in runs.items():
        RUN_STATE_CHANGES.labels(state).inc(n)


def task_started(queue: str, published_at: float, started_at: float) -> None:
    """A worker starts a task: observe how long it waited since it was published. A message
    without a publication time (older senders) is skipped; clock skew between hosts never makes
    a negative wait."""
    if published_at > 0:
        TASK_DISPATCH_TO_START.labels(queue).observe(max(0.0, started_at - published_at))


def task_finished(queue: str, outcome: str, seconds: float) -> None:
    TASK_DURATION.labels(queue, outcome).observe(max(0.0, seconds))


def set_task_instance_counts(counts: dict[str, int], states: Iterable[str]) -> None:
    """Set the gauge for every state in ``states`` (0 where none), so a state that empties shows 0
    rather than its last count."""
    for state in states:
        TASK_INSTANCES.labels(state).set(counts.get(state, 0))


def render() -> tuple[bytes, str]:
    """The exposition of this process's metrics and its content type (the web's ``/metrics``)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# -- the exporter ---------------------------------------------------------------------------------------


@dataclass
class _Listener:
    server: Any
    thread: threading.Thread
    users: int = 0


_lock = threading.Lock()
_listeners: dict[tuple[str, int], _Listener] = {}


class Exporter:
    """One service's claim on the process's metrics HTTP server; :meth:`close` releases it.

    ``hareflow standalone`` runs the scheduler and a worker in one process with the same settings:
    the first to start opens the server, the last to stop closes it.
    """

    def __init__(self, address: tuple[str, int] | None) -> None:
        self.address = address

    def close(self) -> None:
        address, self.address = self.address, None
        if address is None:
            return
        with _lock:
            listener = _listeners.get(address)
            if listener is None:
                return
            listener.users -= 1
            if listener.users > 0:
                return
            del _listeners[address]
        listener.server.shutdown()
        listener.server.server_close()
        listener.thread.join(timeout=5)


def start_exporter(settings: Settings) -> Exporter:
    """Serve this process's metrics on ``metrics_host:metrics_port`` (``/metrics``, or any path)
    unless the port is 0. A port that cannot be bound is logged and skipped: metrics are not worth
    stopping a scheduler or a worker for."""
    if not settings.metrics_port:
        return Exporter(None)
    address = (settings.metrics_host, settings.metrics_port)
    with _lock:
        listener = _listeners.get(address)
        if listener is None:
            try:
                server, thread = _start_http_server(settings.metrics_port, addr=settings.metrics_host)
            except OSError as exc:
                log.error(
                    "metrics exporter not started: cannot listen on %s:%s: %s",
                    settings.metrics_host,
                    settings.metrics_port,
                    exc,
                )
                return Exporter(None)
            listener = _listeners[address] = _Listener(server, thread)
            log.info("metrics on http://%s:%s/metrics", settings.metrics_host, settings.metrics_port)
        listener.users += 1
    return Exporter(address)
