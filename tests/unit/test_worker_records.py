"""Records from a task process are applied only if they answer the request the slot sent."""

from __future__ import annotations

import logging
import multiprocessing

import pytest
from hareflow.common.broker import Delivery
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.messages import LogMessage, TaskKey, decode
from hareflow.worker.pool import TaskProcess, describe_exit
from hareflow.worker.runtime import _LogBuffer, _take_record

KEY = TaskKey(1, "d", "r", "t", -1, 1)


def test_a_record_naming_another_request_is_discarded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    executor = LocalExecutor()
    logged: list[str] = []

    def collect(delivery: Delivery) -> None:
        message = decode(delivery.body)
        assert isinstance(message, LogMessage)
        logged.append(message.text)

    executor.consume_results(10, collect)
    ours, _theirs = multiprocessing.Pipe()
    proc = TaskProcess("req-2", ours, zygote=None)  # type: ignore[arg-type]
    logs = _LogBuffer(executor, KEY, interval=0.0)
    with caplog.at_level(logging.WARNING, logger="hareflow.worker.runtime"):
        assert _take_record(proc, ("done", "req-1", "success", '"stale"', None), logs) is None
        assert _take_record(proc, ("log", "req-1", "a line of another task\n"), logs) is None
        assert _take_record(proc, ("log", "req-2", "our line\n"), logs) is None
        assert _take_record(proc, ("done", "req-2", "success", '"ours"', None), logs) == (
            "success",
            '"ours"',
            None,
        )
    logs.flush()
    assert logged == ["our line\n"]
    discarded = [r.getMessage() for r in caplog.records if "does not answer request req-2" in r.getMessage()]
    assert len(discarded) == 2 and "'req-1'" in discarded[0]


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (0, "exit code 0"),
        (1 << 8, "exit code 1"),
        (9, "killed by signal SIGKILL"),
        (None, "exit status unknown"),
    ],
)
def test_an_exit_status_is_described_as_an_exit_code_or_a_signal_name(status: int | None, text: str) -> None:
    assert describe_exit(status) == text
