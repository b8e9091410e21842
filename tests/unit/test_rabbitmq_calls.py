"""The RabbitMQ adapter's blocking calls when the connection dies under them (no broker needed).

When a connection is found dead (missed heartbeats), aiormq cancels what was waiting on it, such
as a publisher confirm. To the caller that is the broker being unavailable, like any other
connection loss: the publish is retried, and if it never succeeds the caller gets
``BrokerUnavailable`` (the scheduler then re-publishes on its next pass), never a bare
cancellation that no caller expects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import pytest
from hareflow.common.broker import BrokerUnavailable
from hareflow.common.broker.rabbitmq import RabbitMQExecutor
from hareflow.common.config import load_settings
from hareflow.common.messages import HeartbeatMessage


@pytest.fixture
def executor(monkeypatch: pytest.MonkeyPatch) -> Iterator[RabbitMQExecutor]:
    """An adapter whose event-loop thread runs, with no broker behind it."""
    settings = load_settings(
        env={},
        overrides={"broker_url": "amqp://guest:guest@127.0.0.1:9/", "publish_confirm_timeout": 1.0},
    )
    adapter = RabbitMQExecutor(settings)

    async def no_connection() -> None:
        return None

    monkeypatch.setattr(adapter, "_connect", no_connection)
    adapter.start(timeout=5)
    yield adapter
    adapter.close()


def _beat() -> HeartbeatMessage:
    return HeartbeatMessage(
        worker="w", hostname="h", pid=1, queues=["default"], concurrency=1, running=[], at=time.time()
    )


def test_a_publish_cancelled_by_a_dead_connection_is_retried(
    executor: RabbitMQExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    async def cut_short_once(exchange: str, items: Sequence[object], *, persistent: bool) -> None:
        attempts.append(exchange)
        if len(attempts) == 1:
            raise asyncio.CancelledError()  # what a dying connection does to a pending confirm

    monkeypatch.setattr(executor, "_publish_many", cut_short_once)
    executor.publish_results([_beat()])
    assert attempts == ["results", "results"]


def test_a_publish_cancelled_every_time_ends_in_broker_unavailable(
    executor: RabbitMQExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def always_cut_short(exchange: str, items: Sequence[object], *, persistent: bool) -> None:
        raise asyncio.CancelledError()

    monkeypatch.setattr(executor, "_publish_many", always_cut_short)
    with pytest.raises(BrokerUnavailable, match="connection"):
        executor.publish_results([_beat()])
