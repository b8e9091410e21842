"""Pick the executor the settings ask for."""

from __future__ import annotations

from hareflow.common.broker.base import Executor
from hareflow.common.config import Settings


def make_executor(settings: Settings, *, connection_name: str = "hareflow") -> Executor:
    if settings.effective_executor == "rabbitmq":
        from hareflow.common.broker.rabbitmq import RabbitMQExecutor

        return RabbitMQExecutor(settings, connection_name=connection_name)
    from hareflow.common.broker.local import LocalExecutor

    return LocalExecutor()
