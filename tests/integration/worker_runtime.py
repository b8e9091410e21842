"""A one-slot :class:`Worker` on a real executor, and everything it reports (worker tests).

``runtime_for(dag_source)`` writes the DAG file and starts the worker on the executor the fixture's
parameter names: the in-process one and a real RabbitMQ.
"""

from __future__ import annotations

import collections
import textwrap
import threading
from pathlib import Path

import pytest
from hareflow.common.broker import Delivery, Executor
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.broker.rabbitmq import RabbitMQExecutor
from hareflow.common.messages import LogMessage, ResultMessage, TaskKey, TaskMessage, decode
from hareflow.worker.runtime import Worker

from tests.conftest import fast_settings


class Runtime:
    """A one-slot worker and everything it reports, by task-instance id."""

    def __init__(self, executor: Executor, settings, dag_file: Path) -> None:  # type: ignore[no-untyped-def]
        self.executor = executor
        self.dag_file = dag_file
        self.finals: dict[int, ResultMessage] = {}
        self.final_count: collections.Counter[int] = collections.Counter()
        self.logs: dict[int, dict[int, str]] = {}
        self._cond = threading.Condition()
        self._next_id = 0
        executor.consume_results(100, self._on_result)
        self.worker = Worker(executor=executor, settings=settings, queues=["iso"], concurrency=1)
        self._stop = threading.Event()
        self.worker.start_pool()
        self.worker.start()
        self._thread = threading.Thread(target=self.worker.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def _on_result(self, delivery: Delivery) -> None:
        message = decode(delivery.body)
        with self._cond:
            if isinstance(message, ResultMessage) and message.outcome != "running":
                self.finals[message.key.ti_id] = message
                self.final_count[message.key.ti_id] += 1
            elif isinstance(message, LogMessage):
                self.logs.setdefault(message.key.ti_id, {})[message.seq] = message.text
            self._cond.notify_all()
        delivery.ack()

    def publish(self, task_id: str, **fields: object) -> int:
        self._next_id += 1
        values: dict = {
            "key": TaskKey(self._next_id, "iso", "r1", task_id, -1, 1),
            "max_tries": 1,
            "dag_file": str(self.dag_file),
            "queue": "iso",
            "execution_timeout": None,
            "logical_date": None,
            "data_interval_start": None,
            "data_interval_end": None,
        }
        values.update(fields)
        message = TaskMessage(**values)
        self.executor.publish_tasks([message])
        return message.key.ti_id

    def result(self, ti_id: int, timeout: float = 60.0) -> ResultMessage:
        with self._cond:
            if not self._cond.wait_for(lambda: ti_id in self.finals, timeout):
                pytest.fail(f"no final result for task instance {ti_id} within {timeout}s")
            return self.finals[ti_id]

    def run(self, task_id: str, **fields: object) -> ResultMessage:
        return self.result(self.publish(task_id, **fields))

    def log(self, ti_id: int) -> str:
        with self._cond:
            chunks = self.logs.get(ti_id, {})
            return "".join(chunks[seq] for seq in sorted(chunks))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture(params=["local", "rabbitmq"])
def runtime_for(request: pytest.FixtureRequest, tmp_path: Path, dags_folder: Path, broker_prefix: str):  # type: ignore[no-untyped-def]
    """``runtime_for(dag_source)``: a one-slot worker on the executor named by the parameter."""
    started: list[tuple[Runtime, Executor]] = []

    def make(source: str, **setting_changes: object) -> Runtime:
        dag_file = dags_folder / "iso.py"
        dag_file.write_text(textwrap.dedent(source))
        if request.param == "rabbitmq":
            url = request.getfixturevalue("rabbitmq_url")
            settings = fast_settings(tmp_path, broker_url=url, broker_prefix=broker_prefix)
            executor: Executor = RabbitMQExecutor(settings, connection_name="hareflow-test")
        else:
            settings = fast_settings(tmp_path)
            executor = LocalExecutor()
        settings = settings.replace(dags_folder=str(dags_folder), **setting_changes)
        executor.start()
        runtime = Runtime(executor, settings, dag_file)
        started.append((runtime, executor))
        return runtime

    yield make
    for runtime, executor in started:
        runtime.stop()
        executor.close()
