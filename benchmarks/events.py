"""Broker events turned into DAG runs: events/s from the first publish to the last run committed.

10,000 events (10% of them a second publish of an earlier event, same ``message_id``) are published
to the exchange of a DAG with a ``BrokerTrigger``, then the clock runs until the metastore holds one
run per unique key. Two ways the scheduler runs:

- ``inprocess``: the scheduler's ``TriggerConsumer`` alone, in this process (the consumer's own
  cost: decode, batch insert, commit, ack);
- ``process``: a real ``hareflow scheduler`` process (DAG processing, the scheduling loop and the
  consumer sharing its CPU), started after the events are published; counted from its start.

The DAG is paused for tasks: ``max_active_runs=1`` and a task that sleeps, so the scheduler keeps
starting one run at a time and what is measured is run creation, not task execution. Runs are
counted at the end and must equal the unique keys.

    python -m benchmarks.events [--events 10000] [--duplicates 0.1] [--repeat 3] [--db postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXCHANGE_SUFFIX = "bench-orders"
ROUTING_KEY = "order.created"

DAG_SOURCE = """
from hareflow import DAG, BrokerTrigger, task

with DAG(
    "bench_events",
    trigger=BrokerTrigger(exchange="{exchange}", routing_key="order.created"),
    max_active_runs=1,
    params={{"amount": 0}},
):
    @task
    def handle(params=None):
        import time
        time.sleep(3600)
"""


def make_events(count: int, duplicates: float, seed: int = 7) -> list[tuple[str, bytes]]:
    """``count`` (message_id, body) pairs; a ``duplicates`` share repeat an earlier event exactly."""
    rng = random.Random(seed)
    unique = count - int(count * duplicates)
    events = [(f"order-{i}", json.dumps({"order_id": i, "amount": i % 97}).encode()) for i in range(unique)]
    repeats = [events[rng.randrange(unique)] for _ in range(count - unique)]
    mixed = events + repeats
    rng.shuffle(mixed)
    return mixed


def publish(url: str, exchange: str, routing_key: str, events: Sequence[tuple[str, bytes]]) -> None:
    """Publish persistent messages with confirms (pika, as an outside publisher would)."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.confirm_delivery()
        for message_id, body in events:
            channel.basic_publish(
                exchange,
                routing_key,
                body,
                pika.BasicProperties(message_id=message_id, delivery_mode=2, content_type="application/json"),
            )
    finally:
        conn.close()


def count_runs(sessions: Any, dag_id: str) -> int:
    from hareflow.common.db import DagRun
    from sqlalchemy import func, select

    with sessions() as session:
        return int(
            session.scalar(select(func.count()).select_from(DagRun).where(DagRun.dag_id == dag_id)) or 0
        )


def _setup(workdir: Path, db: str) -> tuple[Any, Any, str, str]:
    from hareflow.common.config import load_settings
    from hareflow.common.db import create_engine_for, make_session_factory
    from hareflow.common.db.migrate import migrate

    from benchmarks import env

    prefix = env.new_prefix()
    db_name = env.new_db_name()
    env.create_database(db, db_name)
    dags = workdir / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    exchange = f"{prefix}.{EXCHANGE_SUFFIX}"
    (dags / "bench_events.py").write_text(DAG_SOURCE.format(exchange=exchange))
    settings = load_settings(
        env={},
        overrides={
            "home": str(workdir / "home"),
            "database_url": env.database_url(db, db_name, workdir),
            "broker_url": env.AMQP_URL,
            "executor": "rabbitmq",
            "broker_prefix": prefix,
            "dags_folder": str(dags),
            "dags_are_paused_at_creation": False,
        },
    )
    engine = create_engine_for(settings.effective_database_url)
    migrate(engine)
    return settings, make_session_factory(engine), exchange, db_name


def _store_dag(settings: Any, sessions: Any) -> None:
    from hareflow.scheduler.dag_processor import DagProcessor

    processor = DagProcessor(settings=settings, session_factory=sessions)
    processor.run_once()
    processor.close()


def run_inprocess(events: list[tuple[str, bytes]], db: str, workdir: Path) -> dict[str, Any]:
    from hareflow.common.broker.rabbitmq import RabbitMQExecutor
    from hareflow.scheduler.event_triggers import TriggerConsumer

    from benchmarks import env

    settings, sessions, exchange, db_name = _setup(workdir, db)
    unique = len({m for m, _ in events})
    executor = RabbitMQExecutor(settings, connection_name="bench-events")
    executor.start()
    try:
        _store_dag(settings, sessions)
        consumer = TriggerConsumer(settings=settings, session_factory=sessions, executor=executor)
        consumer.sync_consumers()  # declares and binds the DAG's queue before anything is published
        publish(env.AMQP_URL, exchange, ROUTING_KEY, events)
        started = time.perf_counter()
        made = 0
        while made < unique:
            report = consumer.run_once(wait=0.2)
            if report is not None:
                made += report.created
            if time.perf_counter() - started > 600:
                raise TimeoutError(f"{made} of {unique} runs after 600 s")
        took = time.perf_counter() - started
        consumer.close()
        runs = count_runs(sessions, "bench_events")
    finally:
        executor.close()
        env.delete_topology(
            settings.broker_prefix,
            extra_queues=(f"{settings.broker_prefix}.trigger.bench_events",),
            extra_exchanges=(exchange,),
        )
        env.drop_database(db, db_name)
    return {"mode": "inprocess", "events": len(events), "unique": unique, "runs": runs, "seconds": took}


def run_process(events: list[tuple[str, bytes]], db: str, workdir: Path) -> dict[str, Any]:
    from hareflow.common.broker.rabbitmq import RabbitMQExecutor
    from hareflow.scheduler.event_triggers import TriggerConsumer

    from benchmarks import env

    settings, sessions, exchange, db_name = _setup(workdir, db)
    unique = len({m for m, _ in events})
    # Declare and bind the DAG's queue first (as a scheduler would), then publish, then start the
    # scheduler: it finds a full queue, and the clock runs from its start to the last run.
    executor = RabbitMQExecutor(settings, connection_name="bench-events")
    executor.start()
    _store_dag(settings, sessions)
    binder = TriggerConsumer(settings=settings, session_factory=sessions, executor=executor)
    binder.sync_consumers()
    binder.close()
    executor.close()
    publish(env.AMQP_URL, exchange, ROUTING_KEY, events)
    environ = {**os.environ, **settings.as_environment(), "HAREFLOW_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hareflow.cli", "scheduler"], env=environ)
    try:
        while (runs := count_runs(sessions, "bench_events")) < unique:
            if proc.poll() is not None:
                raise RuntimeError(f"the scheduler exited with {proc.returncode}")
            if time.perf_counter() - started > 600:
                raise TimeoutError(f"{runs} of {unique} runs after 600 s")
            time.sleep(0.05)
        took = time.perf_counter() - started
        time.sleep(1.0)  # anything still in flight would show up as an extra run
        runs = count_runs(sessions, "bench_events")
    finally:
        proc.terminate()
        proc.wait(30)
        env.delete_topology(
            settings.broker_prefix,
            extra_queues=(f"{settings.broker_prefix}.trigger.bench_events",),
            extra_exchanges=(exchange,),
        )
        env.drop_database(db, db_name)
    return {"mode": "process", "events": len(events), "unique": unique, "runs": runs, "seconds": took}


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks import env

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--duplicates", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", default="postgres", choices=["postgres", "sqlite"])
    parser.add_argument("--mode", action="append", choices=["inprocess", "process"])
    args = parser.parse_args(argv)
    events = make_events(args.events, args.duplicates)
    results: dict[str, list[dict[str, Any]]] = {}
    with env.quiet_logging():
        for mode in args.mode or ["inprocess", "process"]:
            runner = run_inprocess if mode == "inprocess" else run_process
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as tmp:
                    result = runner(events, args.db, Path(tmp))
                assert result["runs"] == result["unique"], result
                result["events_per_s"] = result["events"] / result["seconds"]
                print(json.dumps(result), flush=True)
                results.setdefault(mode, []).append(result)
    summary = {
        mode: {
            "median_events_per_s": round(statistics.median(r["events_per_s"] for r in rs)),
            "runs_equal_unique_keys": all(r["runs"] == r["unique"] for r in rs),
        }
        for mode, rs in results.items()
    }
    print(json.dumps({"db": args.db, "machine": env.machine_info(), "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
