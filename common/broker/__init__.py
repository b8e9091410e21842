"""The executor port and its two adapters: RabbitMQ (distributed) and local (one process)."""

from hareflow.common.broker.base import (
    BrokerError,
    BrokerUnavailable,
    Delivery,
    Executor,
    NoBrokerTriggers,
    QueueStats,
    TriggerSource,
)
from hareflow.common.broker.factory import make_executor

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "Delivery",
    "Executor",
    "NoBrokerTriggers",
    "QueueStats",
    "TriggerSource",
    "make_executor",
]
