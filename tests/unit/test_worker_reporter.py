"""The worker's reporter acks a task message only after its final result is confirmed."""

from __future__ import annotations

import threading

from hareflow.common.broker import BrokerUnavailable
from hareflow.common.broker.local import LocalDelivery
from hareflow.common.messages import ResultMessage, TaskKey
from hareflow.worker.runtime import _Reporter


class FlakyBroker:
    """Refuses the first ``failures`` publishes, then confirms; records what it confirmed."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.confirmed: list[ResultMessage] = []
        self.attempts = 0
        self.lock = threading.Lock()

    def publish_results(self, messages: list[ResultMessage], *, confirm: bool = True) -> None:
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.failures:
                raise BrokerUnavailable("broker down")
            self.confirmed.extend(messages)


class Tracked(LocalDelivery):
    def __init__(self, broker: FlakyBroker, log: list[str]) -> None:
        super().__init__(b"{}", None)
        self._broker = broker
        self._log = log

    def ack(self) -> None:
        self._log.append(f"ack after {len(self._broker.confirmed)} confirmed")
        super().ack()


def result(n: int) -> ResultMessage:
    return ResultMessage(
        key=TaskKey(n, "d", "r", f"t{n}", -1, 1), outcome="success", worker="w", hostname="h", pid=1, at=0.0
    )


def test_results_are_retried_until_confirmed_and_only_then_acked() -> None:
    broker = FlakyBroker(failures=2)
    reporter = _Reporter(broker)  # type: ignore[arg-type]
    events: list[str] = []
    reporter.start()
    reporter.submit(result(1), Tracked(broker, events))
    reporter.submit(result(2), Tracked(broker, events))
    reporter.close()
    assert broker.attempts >= 3
    assert [m.key.ti_id for m in broker.confirmed] == [1, 2]
    assert events and all(e != "ack after 0 confirmed" for e in events)
    assert len(events) == 2


def test_an_abandoned_result_is_never_acked() -> None:
    broker = FlakyBroker(failures=10**6)
    reporter = _Reporter(broker)  # type: ignore[arg-type]
    events: list[str] = []
    reporter.start()
    reporter.submit(result(1), Tracked(broker, events))
    reporter.close(abandon=True)
    assert events == [] and broker.confirmed == []
