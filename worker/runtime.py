"""The worker process: consume, run in the pool, report, ack.

Threads, and what each owns:
- the executor's own thread owns the broker connection; it only hands deliveries to ``inbox``;
- one slot thread per concurrency slot runs one task at a time, each in a fresh task process
  forked by the zygote (``pool.py``), and owns that process's pipe;
- the reporter thread publishes final results in batches and acks their task messages;
- the calling thread runs :meth:`Worker.run`: heartbeats and the stop sequence.

Stopping a running try: the worker subscribes to the events exchange and watches for ``stop``
events (the scheduler sends one for each try of a run that passed its ``dagrun_timeout``). The
executor's thread only flags the try; its slot thread, which polls its task process every
``log_chunk_interval``, kills the process group and reports the try failed with the reason. The
metastore already holds the try's final state, so that report changes nothing (compare-and-set).

Ordering per task: ``running`` (unconfirmed, and only once the task has run for
``running_report_delay``) -> log chunks (unconfirmed) -> final result (confirmed) -> ack. The
message is acked only once its final result is safely with the broker, so a worker that dies
mid-task leaves it unacked and the broker hands it to another worker.

Long tasks: RabbitMQ closes a channel whose delivery stays unacked past ``consumer_timeout``
(30 minutes by default). A task still running after ``long_task_ack_after`` (20 minutes by
default) is acked early; from then on the scheduler's lost-worker check (heartbeats) protects it
instead of redelivery.

A delivery is always settled: a task that cannot be started (a message the pool cannot take, a
bad ``execution_timeout``) is a failed result with the reason, acked like any other result.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import pickle
import queue
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hareflow.common import metrics
from hareflow.common.broker import Delivery, Executor
from hareflow.common.config import Settings
from hareflow.common.messages import (
    STOP_EVENT,
    HeartbeatMessage,
    LogMessage,
    MessageError,
    ResultMessage,
    StateEvent,
    TaskKey,
    TaskMessage,
    decode,
)
from hareflow.worker.copies import Copies
from hareflow.worker.dag_folder import DagFolder
from hareflow.worker.lookups import LookupRelay
from hareflow.worker.pool import TaskProcess, TaskProcessPool, TaskStartError, pool_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerIdentity:
    name: str
    hostname: str
    pid: int


def default_identity(name: str | None = None, hostname: str | None = None) -> WorkerIdentity:
    host = hostname or socket.gethostname()
    pid = os.getpid()
    return WorkerIdentity(name=name or f"{host}.{pid}", hostname=host, pid=pid)


class Worker:
    def __init__(
        self,
        *,
        executor: Executor,
        settings: Settings,
        queues: Sequence[str],
        concurrency: int,
        identity: WorkerIdentity | None = None,
    ) -> None:
        self._executor = executor
        self._settings = settings
        self.queues = list(queues)
        self.concurrency = concurrency
        self.identity = identity or default_identity(hostname=settings.hostname or None)
        self._inbox = _Inbox()
        self._copies = Copies()
        self._stop = threading.Event()
        self._immediate = threading.Event()
        self._running: dict[int, int] = {}  # slot -> ti_id
        #: tries running here -> why they must stop (None until a stop event names them)
        self._stops: dict[tuple[int, int], str | None] = {}
        #: stop events for tries not running here (yet): one still queued is not started
        self._early_stops: collections.OrderedDict[tuple[int, int], str] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._slots: list[threading.Thread] = []
        self._pool = TaskProcessPool(
            pool_context(),
            dags_folder=settings.dags_folder,
            preload_timeout=min(settings.dag_file_processor_timeout, 10.0),
            spares=concurrency,
        )
        self._dag_folder = DagFolder(settings.effective_dags_folder())
        self._consumer: object | None = None
        self._reporter = _Reporter(executor)
        self._lookups = LookupRelay(executor, settings.lookup_timeout, threads=concurrency)
        #: monotonic time a heartbeat last reached the broker (read by the health probe)
        self.last_heartbeat_sent = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------

    def start_pool(self) -> None:
        """Start the zygote that forks the task processes (from the fork server: it inherits none
        of this process's threads or connections)."""
        self._pool.start()

    def start(self) -> None:
        """Start the slot threads and begin consuming."""
        self.start_pool()
        for slot in range(self.concurrency):
            t = threading.Thread(
                target=self._slot_loop, args=(slot,), name=f"hareflow-slot-{slot}", daemon=True
            )
            t.start()
            self._slots.append(t)
        self._reporter.start()
        metrics.WORKER_SLOTS.labels(self.identity.name).set(self.concurrency)
        # Read when scraped: nothing to keep up to date on the task path.
        metrics.WORKER_SLOTS_USED.labels(self.identity.name).set_function(lambda: len(self._running))
        try:
            self._executor.subscribe_events(self._on_event)
        except Exception as exc:  # tries then run to their end, as before stop events existed
            log.warning("not subscribed to stop events: %s", exc)
        prefetch = self.concurrency * self._settings.worker_prefetch_multiplier
        self._consumer = self._executor.consume_tasks(self.queues, prefetch, self._on_delivery)
        self._heartbeat("active")
        log.info(
            "worker %s consuming %s with %d slots",
            self.identity.name,
            ",".join(self.queues),
            self.concurrency,
        )

    def run(self, stop: threading.Event | None = None) -> None:
        """Heartbeat until ``stop`` (or :meth:`request_stop`), then stop gracefully."""
        interval = self._settings.heartbeat_interval
        next_beat = time.monotonic() + interval
        while not (self._stop.is_set() or (stop is not None and stop.is_set())):
            self._stop.wait(0.2)
            if time.monotonic() >= next_beat:
                self._heartbeat("active")
                next_beat = time.monotonic() + interval
            self._hand_back_stale()
        self.shutdown()

    def _hand_back_stale(self) -> None:
        """A task held but not started (all slots busy) must not wait past the broker's
        consumer_timeout either: after ``long_task_ack_after`` it goes back to the queue, where
        another worker, or this one later, takes it."""
        for delivery in self._inbox.take_older_than(self._settings.long_task_ack_after):
            log.info(
                "handing back a task that waited %.0fs for a free slot", self._settings.long_task_ack_after
            )
            delivery.hand_back()

    def request_stop(self, *, immediate: bool = False) -> None:
        """First call: finish running tasks, hand back the rest. ``immediate``: hand back all now."""
        if immediate:
            self._immediate.set()
        self._stop.set()

    def shutdown(self) -> None:
        self._stop.set()
        try:
            self._executor.stop_consuming_tasks(self._consumer)
        except Exception as exc:
            log.warning("could not cancel consumers cleanly: %s", exc)
        self._heartbeat("stopping")
        if self._immediate.is_set():
            self._pool.kill_all()
        for _ in self._slots:
            self._inbox.put(None)
        for t in self._slots:
            while t.is_alive():
                t.join(timeout=0.5)
                if self._immediate.is_set():
                    self._pool.kill_all()
        self._drain_inbox()
        self._reporter.close(abandon=self._immediate.is_set())
        self._heartbeat("stopped")
        self._pool.close()
        self._lookups.close()
        for gauge in (metrics.WORKER_SLOTS, metrics.WORKER_SLOTS_USED):
            try:
                gauge.remove(self.identity.name)
            except KeyError:  # never started
                pass
        log.info("worker %s stopped", self.identity.name)

    def _drain_inbox(self) -> None:
        for delivery in self._inbox.take_older_than(-1.0):
            delivery.hand_back()

    def _heartbeat(self, state: str) -> None:
        with self._lock:
            running = sorted(self._running.values())
        beat = HeartbeatMessage(
            worker=self.identity.name,
            hostname=self.identity.hostname,
            pid=self.identity.pid,
            queues=self.queues,
            concurrency=self.concurrency,
            running=running,
            at=time.time(),
            state=state,
        )
        try:
            self._executor.publish_results([beat], confirm=state != "active")
            if self._executor.is_connected():  # an unconfirmed publish "succeeds" on a dead link
                self.last_heartbeat_sent = time.monotonic()
        except Exception as exc:
            log.warning("heartbeat not sent: %s", exc)

    # -- one slot ------------------------------------------------------------------------------

    def _slot_loop(self, slot: int) -> None:
        while True:
            delivery = self._inbox.get()
            if delivery is None:
                return
            if self._stop.is_set():
                delivery.hand_back()  # not started: goes back without counting as an attempt
                continue
            try:
                self._handle(slot, delivery)
            except _HandedBack:
                log.info("slot %d abandoned its task; the broker will redeliver it", slot)
            except Exception:
                # Reached only when even reporting failed (the broker is out of reach): requeue, so
                # the message is redelivered instead of holding this slot's credit until the
                # broker's consumer_timeout.
                log.exception("slot %d failed handling a delivery; requeueing it", slot)
                delivery.requeue()
            finally:
                with self._lock:
                    self._running.pop(slot, None)

    def _on_delivery(self, delivery: Delivery) -> None:
        """On the executor's thread: a redelivered copy of a try running or just finished here is
        settled with it (``copies.py``); everything else waits for a slot."""
        if delivery.delivery_count > 1 or delivery.redelivered:
            try:
                message = decode(delivery.body)
            except MessageError:
                message = None  # the slot dead-letters it
            if isinstance(message, TaskMessage) and self._copies.absorb(copy_key(message), delivery):
                return
        self._inbox.put(delivery)

    def _on_event(self, event: StateEvent) -> None:
        """On the executor's thread: flag a try this worker runs that a ``stop`` event names."""
        if event.kind != STOP_EVENT or event.ti_id is None:
            return
        key = (event.ti_id, event.try_number)
        with self._lock:
            if key in self._stops:
                self._stops[key] = event.state or "stopped"
            else:
                self._early_stops[key] = event.state or "stopped"
                while len(self._early_stops) > EARLY_STOPS:
                    self._early_stops.popitem(last=False)

    def _stop_reason(self, key: TaskKey) -> str | None:
        with self._lock:
            return self._stops.get((key.ti_id, key.try_number))

    def _handle(self, slot: int, delivery: Delivery) -> None:
        try:
            message = decode(delivery.body)
        except MessageError as exc:
            log.error("dead-lettering a malformed task message: %s", exc)
            self._executor.dead_letter(delivery, f"malformed message: {exc}")
            metrics.DEAD_LETTERED.labels("malformed_task").inc()
            return
        if not isinstance(message, TaskMessage):
            self._executor.dead_letter(delivery, f"not a task message: {message.type!r}")
            metrics.DEAD_LETTERED.labels("not_a_task").inc()
            return
        if delivery.delivery_count > self._settings.max_deliveries:
            reason = (
                f"task message delivered {delivery.delivery_count} times "
                f"(max_deliveries={self._settings.max_deliveries}); moved to the dead-letter queue"
            )
            log.error("%s: %s", message.key.label(), reason)
            self._report(message.key, "failed", error=reason, reschedules=message.reschedules)
            self._executor.dead_letter(delivery, reason)
            metrics.DEAD_LETTERED.labels("too_many_deliveries").inc()
            return
        refusal = self._dag_folder.refusal(message.dag_file)
        if refusal is not None:
            log.error("%s: %s; moved to the dead-letter queue", message.key.label(), refusal)
            self._report(message.key, "failed", error=refusal, reschedules=message.reschedules)
            self._executor.dead_letter(delivery, refusal)
            metrics.DEAD_LETTERED.labels("outside_dags_folder").inc()
            return
        with self._lock:
            stopped = self._early_stops.pop((message.key.ti_id, message.key.try_number), None)
        if stopped is not None:
            text = f"{stop_text(stopped)} (before it started)"
            log.info("%s: %s", message.key.label(), text)
            self._report(message.key, "failed", error=text, reschedules=message.reschedules)
            delivery.ack()
            return
        run = self._copies.start(copy_key(message), delivery)
        if run is None:
            return  # a copy of a try (a delivery of it) this worker runs or has just finished
        with self._lock:
            self._running[slot] = message.key.ti_id
            key = (message.key.ti_id, message.key.try_number)
            self._stops[key] = self._early_stops.pop(key, None)  # one just arrived: stopped at once
        started_at = time.time()
        metrics.task_started(message.queue, message.published_at, started_at)
        logs = _LogBuffer(
            self._executor,
            message.key,
            self._settings.log_chunk_interval,
            first_seq=first_log_seq(delivery.delivery_count, message.reschedules),
        )
        if delivery.delivery_count > 1:
            logs.add(self._redelivery_banner(message, delivery.delivery_count))
        try:
            outcome, result_json, error, extras = self._run_in_child(message, run, logs)
        except TaskStartError as exc:
            log.error("%s: %s", message.key.label(), exc)
            outcome, result_json, error, extras = "failed", None, str(exc), {}
            logs.add(f"{exc}\n")
            logs.flush()
        except _HandedBack:
            run.abandon()
            raise
        except Exception as exc:  # a defect of ours: the task fails with it, the slot stays free
            log.exception("%s: the worker failed running the task", message.key.label())
            outcome, result_json, error = "failed", None, f"the worker failed running the task: {exc!r}"
            extras = {}
        finally:
            with self._lock:
                self._stops.pop((message.key.ti_id, message.key.try_number), None)
        try:
            metrics.task_finished(message.queue, outcome, time.time() - started_at)
            final = self._result(
                message.key,
                outcome,
                result_json=result_json,
                error=error,
                started_at=started_at,
                reschedules=message.reschedules,
                **extras,
            )
            run.final = True
            self._reporter.submit(final, run)  # every copy acked once the broker confirms the result
        except BaseException:
            run.requeue()
            raise

    def _redelivery_banner(self, message: TaskMessage, delivery_count: int) -> str:
        """The line that opens a redelivered try's log: which delivery this is, where and when."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return (
            f"\n--- delivery {delivery_count} of try {message.key.try_number}, on worker "
            f"{self.identity.name} ({self.identity.hostname}) at {at}: an earlier delivery of this "
            "try did not finish (its worker was lost or restarted); its output, if any, is above ---\n"
        )

    def _report(
        self,
        key: TaskKey,
        outcome: str,
        *,
        error: str | None = None,
        confirm: bool = True,
        reschedules: int = 0,
    ) -> None:
        result = self._result(key, outcome, error=error, reschedules=reschedules)
        self._executor.publish_results([result], confirm=confirm)

    def _result(
        self,
        key: TaskKey,
        outcome: str,
        *,
        result_json: str | None = None,
        error: str | None = None,
        started_at: float | None = None,
        **extras: Any,
    ) -> ResultMessage:
        return ResultMessage(
            key=key,
            outcome=outcome,
            worker=self.identity.name,
            hostname=self.identity.hostname,
            pid=self.identity.pid,
            at=time.time(),
            result_json=result_json,
            error=error,
            started_at=started_at,
            **extras,
        )

    def _run_in_child(
        self, message: TaskMessage, delivery: Delivery, logs: _LogBuffer
    ) -> tuple[str, str | None, str | None, dict[str, Any]]:
        """Run the try in a task process; return its outcome, result, error and extras (the
        result message's optional fields the task decided, see ``hareflow.worker.child``, and its
        rendered template fields)."""
        timeout = execution_timeout_of(message)
        max_bytes = self._settings.max_result_bytes
        proc = self._pool.start_task(
            lambda token: ("run", token, message.to_dict(), max_bytes), dag_file=message.dag_file
        )
        try:
            outcome, result_json, error = self._supervise(proc, message, delivery, logs, timeout)
            extras = _extras_for(outcome, proc.extras)
            if proc.rendered_json is not None:  # stored whatever the outcome
                extras["rendered_json"] = proc.rendered_json
            return outcome, result_json, error, extras
        finally:
            proc.close()
            self._pool.finished(proc)

    def _supervise(
        self,
        proc: TaskProcess,
        message: TaskMessage,
        delivery: Delivery,
        logs: _LogBuffer,
        timeout: float | None,
    ) -> tuple[str, str | None, str | None]:
        """Relay the task process's records until it is done, dies, times out or is abandoned."""
        started = time.monotonic()
        acked_early = False
        # A task done within running_report_delay goes straight from queued to its outcome: one
        # report instead of two on the hot path; anything longer is shown running at once after.
        running_due: float | None = started + self._settings.running_report_delay
        while True:
            now = time.monotonic()
            # The task process interrupts itself at its timeout and runs its callbacks (worker/child.py);
            # this kill is the backstop for a task that does not return to Python in time.
            if timeout is not None and now - started > timeout + self._settings.task_timeout_grace:
                proc.kill()
                proc.wait_exit()
                text = f"Task exceeded its execution_timeout of {timeout:g}s and was killed"
                logs.add(f"\n{text}\n")
                logs.flush()
                return "failed", None, text
            if self._immediate.is_set():
                proc.kill()
                raise _HandedBack()
            stopped = self._stop_reason(message.key)
            if stopped is not None:
                proc.kill()
                how = proc.wait_exit()
                text = f"{stop_text(stopped)}: the worker stopped the task ({how})"
                log.info("%s: %s", message.key.label(), text)
                logs.add(f"\n{text}\n")
                logs.flush()
                return "failed", None, text
            if not acked_early and now - started > self._settings.long_task_ack_after:
                delivery.ack()  # see the module docstring: heartbeats protect it from here on
                acked_early = True
            if running_due is not None and now >= running_due:
                self._report(message.key, "running", confirm=False, reschedules=message.reschedules)
                running_due = None
            wait = self._settings.log_chunk_interval
            if running_due is not None:
                wait = min(wait, max(0.0, running_due - now))
            if timeout is not None:
                deadline = timeout + self._settings.task_timeout_grace
                wait = min(wait, max(0.0, deadline - (now - started)))
            try:
                ready = proc.conn.poll(wait)
                while ready:
                    done = _take_record(proc, proc.conn.recv(), logs, message.key, self._lookups)
                    if done is not None:
                        # It exits on its own right after; the zygote reaps it and sweeps up
                        # anything it left. The result need not wait for that.
                        proc.forget()
                        logs.flush()
                        return done
                    ready = proc.conn.poll(0)
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                how = proc.wait_exit()
                if not isinstance(exc, EOFError | OSError):
                    proc.kill()
                    how = f"its output could not be read: {exc}"
                text = f"the task process died while running the task ({how})"
                logs.add(f"\n{text}\n")
                logs.flush()
                return "failed", None, text
            logs.maybe_flush()


#: How many stop events for tries not running here a worker remembers (a try still queued when
#: its run timed out is acked unstarted when it arrives).
EARLY_STOPS = 10_000

#: Log chunk numbers each delivery of a rescheduled sensor's try starts from (chunks are unique
#: per try and number): 10,000 chunks of up to 64 KiB each per poke, 200,000 pokes per try.
LOG_SEQ_PER_RESCHEDULE = 10_000
#: ... and each broker delivery of one message (a redelivery after its worker died): the lost
#: delivery's chunks keep their numbers, the new delivery's follow them, both stored.
LOG_SEQ_PER_DELIVERY = 2**32


def first_log_seq(delivery_count: int, reschedules: int) -> int:
    """The number a delivery's first log chunk follows."""
    return max(0, delivery_count - 1) * LOG_SEQ_PER_DELIVERY + reschedules * LOG_SEQ_PER_RESCHEDULE


def stop_text(state: str) -> str:
    """What a stopped try's log and error say, from the state its stop event gave the try."""
    return f"the try was stopped: its task instance was set to {str(state)!r}"


def copy_key(message: TaskMessage) -> tuple[int, int, int]:
    """What makes two deliveries copies of one another: the same try of the same task instance,
    and the same delivery of that try (a rescheduled sensor's next poke is a new delivery of its
    try, not a copy of the previous one)."""
    return (message.key.ti_id, message.key.try_number, message.reschedules)


def execution_timeout_of(message: TaskMessage) -> float | None:
    """The message's ``execution_timeout`` in seconds; a value that is not one fails the task."""
    value = message.execution_timeout
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise TaskStartError(
            f"bad execution_timeout {value!r} in the task message: expected a number of seconds or null"
        )
    return float(value)


def _take_record(
    proc: TaskProcess,
    item: object,
    logs: _LogBuffer,
    key: TaskKey | None = None,
    lookups: LookupRelay | None = None,
) -> tuple[str, str | None, str | None] | None:
    """Apply one record from a task process; return the outcome once it is ``done``.

    A record that does not name this task's request is discarded: nothing another process writes
    into this pipe can become this task's result or log.
    """
    if not (isinstance(item, tuple) and len(item) >= 3 and item[1] == proc.token):
        log.warning("discarding a record that does not answer request %s: %.200r", proc.token, item)
        return None
    kind = item[0]
    if kind == "log" and isinstance(item[2], str):
        logs.add(item[2])
    elif kind == "started":
        proc.pid = item[2]
    elif kind == "extras" and isinstance(item[2], dict):
        proc.extras = item[2]
    elif kind == "rendered" and isinstance(item[2], str):
        proc.rendered_json = item[2]
    elif kind == "lookup" and len(item) == 5 and lookups is not None and key is not None:
        lookups.submit(proc, key, item[2], item[3], item[4])
    elif kind == "done" and len(item) == 5:
        return item[2], item[3], item[4]
    else:
        log.warning("discarding a malformed record for request %s: %.200r", proc.token, item)
    return None


_EXTRAS = {
    "success": ("skip_task_ids", "skip_reason", "outlet_events"),
    "failed": ("no_retry",),
    "up_for_reschedule": ("reschedule_at", "first_poke_at"),
}


def _extras_for(outcome: str, extras: dict[str, Any]) -> dict[str, Any]:
    """The extras that go with ``outcome`` (a task that reported a decision and then died, or
    timed out, fails like any other)."""
    return {k: v for k, v in extras.items() if k in _EXTRAS.get(outcome, ())}


class _Inbox:
    """Deliveries waiting for a free slot, oldest first, each with the time it arrived."""

    def __init__(self) -> None:
        self._items: collections.deque[tuple[float, Delivery | None]] = collections.deque()
        self._cond = threading.Condition()

    def put(self, delivery: Delivery | None) -> None:
        with self._cond:
            self._items.append((time.monotonic(), delivery))
            self._cond.notify()

    def get(self) -> Delivery | None:
        with self._cond:
            while not self._items:
                self._cond.wait()
            return self._items.popleft()[1]

    def take_older_than(self, seconds: float) -> list[Delivery]:
        """Remove and return the deliveries (not stop markers) that arrived over ``seconds`` ago."""
        cutoff = time.monotonic() - seconds
        with self._cond:
            taken = [d for t, d in self._items if d is not None and t < cutoff]
            if taken:
                self._items = collections.deque((t, d) for t, d in self._items if d is None or t >= cutoff)
            return taken


class _Reporter:
    """Publishes final results in pipelined batches and acks each task message once the broker has
    confirmed its result.

    A persistent message is confirmed only once the broker has synced it to disk or its consumer
    has acked it, which can take tens of milliseconds. Slots hand their final result here and take
    their next task at once instead of idling through that wait; the prefetch (concurrency x
    ``worker_prefetch_multiplier``) keeps the next task ready for them.
    """

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._queue: queue.Queue[tuple[ResultMessage, Delivery] | None] = queue.Queue()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hareflow-reporter", daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def submit(self, result: ResultMessage, delivery: Delivery) -> None:
        self._queue.put((result, delivery))

    def close(self, *, abandon: bool = False) -> None:
        """Flush what is pending (or, with ``abandon``, leave it unacked for redelivery)."""
        if abandon:
            self._abandon.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        done = False
        while not done:
            item = self._queue.get()
            batch = []
            while item is not None:
                batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            else:
                done = True
            if batch:
                self._publish(batch)

    def _publish(self, batch: list[tuple[ResultMessage, Delivery]]) -> None:
        delay = 0.5
        while not self._abandon.is_set():
            try:
                self._executor.publish_results([r for r, _ in batch], confirm=True)
                break
            except Exception as exc:  # keep the results: the task must not be acked without them
                log.warning("final results not confirmed yet (%s); retrying in %.1fs", exc, delay)
                self._abandon.wait(delay)
                delay = min(delay * 2, 10.0)
        else:
            return
        for _, delivery in batch:
            delivery.ack()


class _HandedBack(Exception):
    """Immediate stop: the task is abandoned unacked, so the broker redelivers it."""


class _LogBuffer:
    """Collects a try's output and publishes it in numbered chunks at most every ``interval``."""

    MAX_CHUNK = 64 * 1024

    def __init__(self, executor: Executor, key: TaskKey, interval: float, first_seq: int = 0) -> None:
        self._executor = executor
        self._key = key
        self._interval = interval
        self._parts: list[str] = []
        self._size = 0
        self._seq = first_seq
        self._last = time.monotonic()

    def add(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self.MAX_CHUNK:
            self.flush()

    def maybe_flush(self) -> None:
        if self._parts and time.monotonic() - self._last >= self._interval:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._seq += 1
        message = LogMessage(key=self._key, seq=self._seq, text=text, at=time.time())
        try:
            self._executor.publish_results([message], confirm=False)
        except Exception as exc:
            log.debug("log chunk not sent: %s", exc)
