"""Copies of a task message this worker is already running, or has just finished.

When a worker's broker connection drops (a broker restart, a partition that heals), every task
message it held unacked goes back to its queue, although the worker goes on running those tasks.
The copy may come back to this same worker. Running it again would run the task twice for no
reason, so the worker checks every redelivered message against what it runs:

- a copy of a try it is running joins that run: it is settled together with the first delivery
  (acked once the final result is confirmed, or at once if the run was already acked early);
- a copy of a try whose final result the broker has confirmed (remembered for the last
  ``RECENT`` tries) is acked without running: that result is safely in the results queue.

A copy that reaches another worker is run there (nothing tells that worker); docs/reliability.md
counts those re-runs.
"""

from __future__ import annotations

import collections
import logging
import threading

from hareflow.common.broker import Delivery

log = logging.getLogger(__name__)

#: How many confirmed tries to remember.
RECENT = 10_000

TryKey = tuple[int, int, int]  # (task instance id, try number, reschedules: which delivery of the try)


class Run(Delivery):
    """Every delivery of one try this worker runs, settled together."""

    def __init__(self, copies: Copies, key: TryKey, first: Delivery) -> None:
        self._copies = copies
        self.key = key
        self.first = first
        self.body = first.body
        self.delivery_count = first.delivery_count
        self.redelivered = first.redelivered
        self.message_id = first.message_id
        self.queue = first.queue
        self.deliveries = [first]
        self.acked = False
        #: Set once the final result is submitted: the next ack settles the run for good.
        self.final = False

    def ack(self) -> None:
        with self._copies.lock:
            self.acked = True
            deliveries = list(self.deliveries)
            if self.final:
                self._copies.finished(self)
        for delivery in deliveries:
            delivery.ack()

    def requeue(self) -> None:
        self._release(lambda d: d.requeue())

    def hand_back(self) -> None:
        self._release(lambda d: d.hand_back())

    def abandon(self) -> None:
        """Leave every delivery unacked (the broker redelivers them) and forget the run."""
        self._release(lambda d: None)

    def _release(self, settle) -> None:  # type: ignore[no-untyped-def]
        with self._copies.lock:
            self._copies.forget(self)
            deliveries = list(self.deliveries)
        for delivery in deliveries:
            settle(delivery)


class Copies:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._runs: dict[TryKey, Run] = {}
        self._recent: collections.OrderedDict[TryKey, None] = collections.OrderedDict()

    def start(self, key: TryKey, delivery: Delivery) -> Run | None:
        """Register the run of ``key`` with its first delivery; None if ``delivery`` is a copy of
        a try already running or finished here (then it has been joined to that run or acked)."""
        with self.lock:
            if self._absorbed(key, delivery):
                return None
            run = Run(self, key, delivery)
            self._runs[key] = run
            return run

    def absorb(self, key: TryKey, delivery: Delivery) -> bool:
        """For a redelivered message on arrival: True if it was joined to a run or acked."""
        with self.lock:
            return self._absorbed(key, delivery)

    def _absorbed(self, key: TryKey, delivery: Delivery) -> bool:
        run = self._runs.get(key)
        if run is not None:
            run.deliveries.append(delivery)
            log.info("task instance %d try %d (%d): a copy arrived while it runs here; not run again", *key)
            if run.acked:
                delivery.ack()
            return True
        if key in self._recent:
            log.info("task instance %d try %d (%d): a copy arrived after it finished here; acked", *key)
            delivery.ack()
            return True
        return False

    def finished(self, run: Run) -> None:
        """The run's final result is confirmed (called under ``lock``)."""
        self._runs.pop(run.key, None)
        self._recent[run.key] = None
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def forget(self, run: Run) -> None:
        """The run ends without a confirmed result (called under ``lock``)."""
        if self._runs.get(run.key) is run:
            del self._runs[run.key]
