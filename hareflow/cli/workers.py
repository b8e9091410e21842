"""``hareflow workers list`` and ``hareflow queues list``: who is consuming, and what waits."""

from __future__ import annotations

from datetime import datetime

import click

from hareflow.cli.common import (
    CONTEXT_SETTINGS,
    UserError,
    get_settings,
    metastore,
    output_option,
    print_json,
    print_table,
    when,
)


@click.group(context_settings=CONTEXT_SETTINGS)
def workers() -> None:
    """Inspect the workers that have reported a heartbeat.

    \b
    Example:
      hareflow workers list
    """


@workers.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also workers stopped or lost for over a day.")
@output_option
def workers_list(show_all: bool, output: str) -> None:
    """List workers: name, host, queues, concurrency, tasks running, state and last heartbeat.

    Tasks running are counted from the metastore, so they are right the moment a task finishes.
    Workers stopped or lost for over a day are left out unless --all (the scheduler deletes them
    after worker_retention_days).

    \b
    Example:
      hareflow workers list -o json
    """
    settings = get_settings()
    from hareflow.common.workers import list_workers

    with metastore(settings) as sessions, sessions() as session:
        listed = list_workers(session, include_gone=show_all)
    if output == "json":
        print_json([{k: v for k, v in w.items() if k != "heartbeat_age"} for w in listed.workers])
        return
    print_table(
        ["name", "host", "queues", "concurrency", "running", "state", "last heartbeat"],
        [
            [
                w["name"],
                w["hostname"],
                ",".join(w["queues"]),
                w["concurrency"],
                w["running"],
                w["state"],
                f"{when(datetime.fromisoformat(w['last_heartbeat']))} ({w['heartbeat_age']:.0f}s ago)",
            ]
            for w in listed.workers
        ],
        empty="no workers have reported yet",
    )
    if listed.hidden:
        click.echo(f"({listed.hidden} stopped or lost for over a day not shown: --all)", err=True)


@click.group(context_settings=CONTEXT_SETTINGS)
def queues() -> None:
    """Inspect the task queues on the broker.

    \b
    Example:
      hareflow queues list
    """


@queues.command("list")
@output_option
def queues_list(output: str) -> None:
    """Show each task queue's depth and consumers, read from the broker.

    The queues shown: every queue an active DAG's tasks name, every queue a worker consumes, and
    the dead-letter queue.

    \b
    Example:
      hareflow queues list -o json
    """
    settings = get_settings()
    if settings.effective_executor != "rabbitmq":
        click.echo(
            "the local executor keeps its queues inside the `hareflow standalone` process: nothing to show "
            "from here (set HAREFLOW_BROKER_URL to use RabbitMQ)",
            err=True,
        )
        if output == "json":
            print_json([])
        return
    from sqlalchemy import select

    from hareflow.common.broker import BrokerUnavailable, make_executor
    from hareflow.common.db import Dag, Worker

    names: set[str] = {settings.default_queue}
    with metastore(settings) as sessions, sessions() as session:
        for serialized in session.scalars(select(Dag.serialized).where(Dag.is_active.is_(True))):
            names.update(t.get("queue") or settings.default_queue for t in serialized.get("tasks", []))
        for worker_queues in session.scalars(select(Worker.queues)):
            names.update(worker_queues or [])
    executor = make_executor(settings, connection_name="hareflow-cli")
    try:
        executor.start(timeout=5)  # type: ignore[call-arg]
        stats = executor.queue_stats(sorted(names))
    except BrokerUnavailable as exc:
        raise UserError(str(exc)) from None
    finally:
        executor.close()
    if output == "json":
        print_json([{"name": s.name, "messages": s.messages, "consumers": s.consumers} for s in stats])
        return
    print_table(["queue", "messages", "consumers"], [[s.name, s.messages, s.consumers] for s in stats])
