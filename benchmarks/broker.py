"""The broker alone, through hareflow's own adapter (``RabbitMQExecutor``), for context.

- ``publish_tasks``: 2,000 task messages (the scheduler's real message shape) in one call: persistent,
  publisher confirms pipelined by the adapter.
- ``publish_results`` one message per call with a confirm, as a worker slot reports a final result:
  from one thread, and from 8 threads at once (8 slots sharing one worker connection).
- consuming the 2,000 task messages with ``consume_tasks`` and acking each from another thread (as a
  worker's slot threads do), with prefetch 8 (a worker of concurrency 8) and prefetch 2,000.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import env


def _settings(prefix: str, queue_type: str, workdir: Path) -> Any:
    from hareflow.common.config import load_settings

    return load_settings(
        env={},
        overrides={
            "home": str(workdir / "home"),
            "broker_url": env.AMQP_URL,
            "executor": "rabbitmq",
            "broker_prefix": prefix,
            "queue_type": queue_type,
        },
    )


def _task_messages(n: int) -> list[Any]:
    from hareflow.common.messages import TaskKey, TaskMessage

    now = time.time()
    return [
        TaskMessage(
            key=TaskKey(
                ti_id=i + 1,
                dag_id="bench_fanout",
                run_id="broker-bench",
                task_id=f"m{i:05d}",
                map_index=-1,
                try_number=1,
            ),
            max_tries=1,
            dag_file="/tmp/dags/bench_dags.py",
            queue="default",
            execution_timeout=None,
            logical_date="2026-01-01T00:00:00+00:00",
            data_interval_start="2026-01-01T00:00:00+00:00",
            data_interval_end="2026-01-01T00:00:00+00:00",
            published_at=now,
        )
        for i in range(n)
    ]


def _result(i: int) -> Any:
    from hareflow.common.messages import ResultMessage, TaskKey

    return ResultMessage(
        key=TaskKey(
            ti_id=i + 1,
            dag_id="bench_fanout",
            run_id="broker-bench",
            task_id=f"m{i:05d}",
            map_index=-1,
            try_number=1,
        ),
        outcome="success",
        worker="bench",
        hostname="bench",
        pid=1,
        at=time.time(),
        result_json="null",
        error=None,
    )


def _consume(executor_factory: Any, n: int, prefetch: int, timeout: float) -> float:
    """Consume ``n`` task messages with a fresh connection; each is acked by a separate thread."""
    consumer = executor_factory("hareflow-bench-consumer")
    consumer.start()
    inbox: queue.Queue[Any] = queue.Queue()
    got = 0
    done = threading.Event()

    def acker() -> None:
        nonlocal got
        while got < n:
            try:
                d = inbox.get(timeout=timeout)
            except queue.Empty:
                return
            d.ack()
            got += 1
        done.set()

    t = threading.Thread(target=acker, name="bench-acker", daemon=True)
    t.start()
    t0 = time.perf_counter()
    consumer.consume_tasks(["default"], prefetch, inbox.put)
    done.wait(timeout)
    elapsed = time.perf_counter() - t0
    time.sleep(0.5)  # let the last acks reach the broker before the connection closes (not timed)
    consumer.stop_consuming_tasks()
    consumer.close()
    if got < n:
        raise TimeoutError(f"consumed only {got}/{n} messages in {timeout}s")
    return elapsed


def run_broker_bench(queue_type: str, workdir: Path, n: int = 2000, timeout: float = 120.0) -> dict[str, Any]:
    from hareflow.common.broker.rabbitmq import RabbitMQExecutor

    prefix = env.new_prefix()
    settings = _settings(prefix, queue_type, workdir)

    def factory(name: str) -> RabbitMQExecutor:
        return RabbitMQExecutor(settings, connection_name=name)

    out: dict[str, Any] = {
        "bench": "broker",
        "executor": "rabbitmq",
        "queue_type": queue_type,
        "messages": n,
        "load_avg_before": env.load_average(),
    }
    pub = factory("hareflow-bench-publisher")
    try:
        pub.start()
        pub.declare_queues(["default"])
        msgs = _task_messages(n)
        # 1. the scheduler's path: one publish_tasks call for the whole batch
        t0 = time.perf_counter()
        pub.publish_tasks(msgs)
        el = time.perf_counter() - t0
        out["publish_tasks_batch"] = {"seconds": round(el, 3), "msgs_per_s": round(n / el)}
        # 2. consume them like a worker (prefetch 8), then publish again and consume with prefetch n
        el = _consume(factory, n, 8, timeout)
        out["consume_prefetch_8"] = {"seconds": round(el, 3), "msgs_per_s": round(n / el)}
        pub.publish_tasks(msgs)
        el = _consume(factory, n, n, timeout)
        out[f"consume_prefetch_{n}"] = {"seconds": round(el, 3), "msgs_per_s": round(n / el)}
        # 3. the worker's path: one confirmed publish per final result
        k = min(n, 1000)
        t0 = time.perf_counter()
        for i in range(k):
            pub.publish_results([_result(i)], confirm=True)
        el = time.perf_counter() - t0
        out["publish_result_confirmed_1_thread"] = {
            "seconds": round(el, 3),
            "msgs_per_s": round(k / el),
            "ms_per_msg": round(el / k * 1000, 3),
        }
        threads = 8
        per = k // threads

        def slot(j: int) -> None:
            for i in range(per):
                pub.publish_results([_result(j * per + i)], confirm=True)

        ts = [threading.Thread(target=slot, args=(j,)) for j in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout)
        el = time.perf_counter() - t0
        out["publish_result_confirmed_8_threads"] = {
            "seconds": round(el, 3),
            "msgs_per_s": round(per * threads / el),
        }
    finally:
        pub.close()
        env.delete_topology(prefix)
    return out
