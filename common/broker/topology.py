"""Names and arguments of every exchange and queue, in one place.

Every component declares what it uses with exactly these arguments: RabbitMQ refuses a
re-declaration whose arguments differ. Declarations are valid on RabbitMQ 3.10 and 4.x: durable
queues everywhere except each subscriber's private events queue, which is exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Topology:
    prefix: str = "hareflow"
    queue_type: str = "classic"  # classic | quorum
    max_deliveries: int = 5

    @property
    def tasks_exchange(self) -> str:
        return f"{self.prefix}.tasks"

    @property
    def results_exchange(self) -> str:
        return f"{self.prefix}.results"

    @property
    def results_queue(self) -> str:
        return f"{self.prefix}.results"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def lookups_queue(self) -> str:
        return f"{self.prefix}.lookups"

    def trigger_queue(self, dag_id: str, index: int = 0) -> str:
        """The queue a DAG's ``index``-th BrokerTrigger binding declares (the first has no suffix)."""
        return f"{self.prefix}.trigger.{dag_id}" + (f".{index}" if index else "")

    def task_queue(self, name: str) -> str:
        return f"{self.prefix}.q.{name}"

    def durable_queue_arguments(self, *, dead_letter: bool = True) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": self.queue_type}
        if dead_letter:
            # A message rejected without requeue (or over the delivery limit on 4.x quorum queues)
            # lands in the dead-letter queue instead of vanishing.
            args["x-dead-letter-exchange"] = self.dead_exchange
        if self.queue_type == "quorum":
            # Quorum queues count deliveries themselves; we dead-letter one past our own limit so
            # the worker sees the count first and fails the task instance with a clear reason.
            args["x-delivery-limit"] = self.max_deliveries + 1
        return args

    def task_queue_arguments(self) -> dict[str, Any]:
        return self.durable_queue_arguments()
