"""Data-aware scheduling end to end: producers' successes record asset events, and DAGs scheduled
on assets run once per set of new events, on both executors over PostgreSQL (the core test also on
MariaDB with RabbitMQ and SQLite with the local executor)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.db import AssetEvent, AssetRow, DagRun
from hareflow.scheduler.loop import LoopReport, Scheduler
from sqlalchemy import func, select

from tests.integration.conftest import System, wait_until

CORE_SYSTEMS = pytest.mark.parametrize(
    "system", ["local", "rabbitmq", "sqlite-local", "mariadb-rabbitmq"], indirect=True
)

PRODUCERS = """
from hareflow import DAG, Asset, task

orders = Asset("warehouse://sales/orders")
customers = Asset("warehouse://sales/customers")

with DAG("make_orders"):
    @task(outlets=[orders])
    def write_orders(outlet_events=None):
        outlet_events[orders].extra = {"rows": 42}
        return "written"

    write_orders()

with DAG("make_customers"):
    @task(outlets=[customers])
    def write_customers():
        return "written"

    write_customers()
"""


def consumer(dag_id: str, schedule: str) -> str:
    return f"""
from hareflow import DAG, Asset, task

orders = Asset("warehouse://sales/orders")
customers = Asset("warehouse://sales/customers")

with DAG("{dag_id}", schedule={schedule}):
    @task
    def read(triggering_asset_events=None):
        return {{
            uri: [
                {{"dag": e.source_dag_id, "run": e.source_run_id, "task": e.source_task_id, "extra": e.extra}}
                for e in events
            ]
            for uri, events in sorted(triggering_asset_events.items())
        }}

    read()
"""


def extra_scheduler_creates_nothing(system: System) -> None:
    """More asset steps (another scheduler, on top of the cluster's own) create no run."""
    extra = Scheduler(settings=system.settings, session_factory=system.c.sessions, executor=LocalExecutor())
    for _ in range(3):
        report = LoopReport()
        extra.create_asset_runs(datetime.now(UTC), report)
        assert report.runs_created == 0


def asset_runs(system: System, dag_id: str) -> list[DagRun]:
    return [r for r in system.runs(dag_id) if r.run_type == "asset_triggered"]


def events_of(system: System, uri: str) -> list[AssetEvent]:
    with system.c.sessions() as session:
        return list(
            session.scalars(
                select(AssetEvent)
                .join(AssetRow, AssetRow.id == AssetEvent.asset_id)
                .where(AssetRow.uri == uri)
            )
        )


def finished_asset_run(system: System, dag_id: str, count: int = 1) -> DagRun:
    runs = wait_until(
        lambda: [r for r in asset_runs(system, dag_id) if r.state in ("success", "failed")][count - 1 :],
        message=f"{count} finished asset-triggered run(s) of {dag_id}",
    )
    return runs[0]


@CORE_SYSTEMS
def test_a_producer_success_triggers_its_consumer_once_and_the_consumer_sees_the_event(
    system: System, write_dag: Any
) -> None:
    write_dag("producers.py", PRODUCERS)
    write_dag("consumer.py", consumer("orders_report", "[orders]"))
    system.start()
    system.c.wait_for_dag("orders_report")
    run_id, state = system.run_dag("make_orders")
    assert state == "success"

    run = finished_asset_run(system, "orders_report")
    assert run.state == "success" and run.conf == {}
    seen = system.result("orders_report", run.run_id, "read")
    assert seen == {
        "warehouse://sales/orders": [
            {"dag": "make_orders", "run": run_id, "task": "write_orders", "extra": {"rows": 42}}
        ]
    }
    events = events_of(system, "warehouse://sales/orders")
    assert [(e.source_dag_id, e.source_run_id, e.source_task_id, e.extra) for e in events] == [
        ("make_orders", run_id, "write_orders", {"rows": 42})
    ]
    # Nothing new: the consumer is not started again, whatever the number of scheduler passes.
    extra_scheduler_creates_nothing(system)
    assert len(asset_runs(system, "orders_report")) == 1


def test_a_consumer_of_all_of_two_assets_waits_for_both(system: System, write_dag: Any) -> None:
    write_dag("producers.py", PRODUCERS)
    write_dag("consumer.py", consumer("both", "[orders, customers]"))
    system.start()
    system.c.wait_for_dag("both")
    assert system.run_dag("make_orders")[1] == "success"
    extra_scheduler_creates_nothing(system)
    assert asset_runs(system, "both") == []

    assert system.run_dag("make_customers")[1] == "success"
    run = finished_asset_run(system, "both")
    seen = system.result("both", run.run_id, "read")
    assert sorted(seen) == ["warehouse://sales/customers", "warehouse://sales/orders"]


def test_a_consumer_of_either_asset_runs_on_each(system: System, write_dag: Any) -> None:
    write_dag("producers.py", PRODUCERS)
    write_dag("consumer.py", consumer("either", "orders | customers"))
    system.start()
    system.c.wait_for_dag("either")
    assert system.run_dag("make_orders")[1] == "success"
    first = finished_asset_run(system, "either")
    assert list(system.result("either", first.run_id, "read")) == ["warehouse://sales/orders"]

    assert system.run_dag("make_customers")[1] == "success"
    second = finished_asset_run(system, "either", count=2)
    assert list(system.result("either", second.run_id, "read")) == ["warehouse://sales/customers"]
    assert len(asset_runs(system, "either")) == 2


def test_an_asset_with_many_events_since_the_last_run_starts_one_run_with_all_of_them(
    system: System, write_dag: Any
) -> None:
    write_dag("producers.py", PRODUCERS)
    write_dag("consumer.py", consumer("both", "[orders, customers]"))
    system.start()
    system.c.wait_for_dag("both")
    assert system.run_dag("make_orders")[1] == "success"
    assert system.run_dag("make_orders")[1] == "success"
    assert system.run_dag("make_customers")[1] == "success"
    run = finished_asset_run(system, "both")
    seen = system.result("both", run.run_id, "read")
    assert len(seen["warehouse://sales/orders"]) == 2 and len(seen["warehouse://sales/customers"]) == 1
    with system.c.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AssetEvent)) == 3


def test_an_event_posted_over_the_api_triggers_the_consumer_with_its_extra(
    system: System, write_dag: Any
) -> None:
    from hareflow.web import create_app

    from tests.web.conftest import add_user, login

    write_dag("producers.py", PRODUCERS)
    write_dag("consumer.py", consumer("orders_report", "[orders]"))
    system.start(secret_key="asset-tests-secret-key-0123")
    add_user(system.c.sessions, "op", "op")
    system.c.wait_for_dag("orders_report")
    app = create_app(system.settings, sessions=system.c.sessions, executor=system.c._shared)
    client = login(app.test_client(), "op")

    posted = client.api(
        "POST", "/assets/events", {"uri": "warehouse://sales/orders", "extra": {"from": "api"}}
    )
    assert posted.status_code == 201, posted.text

    run = finished_asset_run(system, "orders_report")
    assert run.state == "success"
    assert system.result("orders_report", run.run_id, "read") == {
        "warehouse://sales/orders": [{"dag": None, "run": None, "task": None, "extra": {"from": "api"}}]
    }


def test_an_event_emitted_from_the_command_line_triggers_the_consumer(system: System, write_dag: Any) -> None:
    from tests.integration.test_cli import invoke_hareflow

    write_dag("producers.py", PRODUCERS)
    write_dag("consumer.py", consumer("orders_report", "orders | customers"))
    system.start()
    system.c.wait_for_dag("orders_report")
    env = {
        "HAREFLOW_DATABASE_URL": system.settings.effective_database_url,
        "HAREFLOW_HOME": str(system.settings.home),
    }

    unknown = invoke_hareflow(env, "assets", "emit", "warehouse://sales/typo")
    assert unknown.exit_code == 2 and "no asset 'warehouse://sales/typo'" in unknown.output
    emitted = invoke_hareflow(env, "assets", "emit", "warehouse://sales/customers", "--extra", '{"batch": 3}')
    assert emitted.exit_code == 0, emitted.output

    run = finished_asset_run(system, "orders_report")
    seen = system.result("orders_report", run.run_id, "read")
    assert seen == {
        "warehouse://sales/customers": [{"dag": None, "run": None, "task": None, "extra": {"batch": 3}}]
    }
    listed = invoke_hareflow(env, "assets", "events", "warehouse://sales/customers", "-o", "json")
    assert [e["extra"] for e in json.loads(listed.output)] == [{"batch": 3}]
    table = invoke_hareflow(env, "assets", "list")
    assert "warehouse://sales/customers" in table.output and "make_customers.write_customers" in table.output


def test_an_asset_or_time_schedule_runs_on_the_asset_and_keeps_its_timetable(
    system: System, write_dag: Any
) -> None:
    from hareflow.common.db import Dag

    write_dag("producers.py", PRODUCERS)
    write_dag(
        "consumer.py",
        """
from datetime import datetime
from hareflow import DAG, Asset, AssetOrTimeSchedule, task

with DAG("yearly_or_fresh", start_date=datetime(2026, 1, 1),
         schedule=AssetOrTimeSchedule(timetable="@yearly", assets=[Asset("warehouse://sales/orders")])):
    @task
    def read():
        return 1
    read()
""",
    )
    system.start()
    system.c.wait_for_dag("yearly_or_fresh")
    with system.c.sessions() as s:
        before = s.get(Dag, "yearly_or_fresh").next_run_after  # type: ignore[union-attr]
    assert system.run_dag("make_orders")[1] == "success"
    run = finished_asset_run(system, "yearly_or_fresh")
    assert run.state == "success"
    assert [r.run_type for r in system.runs("yearly_or_fresh")] == ["asset_triggered"]
    with system.c.sessions() as s:
        assert s.get(Dag, "yearly_or_fresh").next_run_after == before  # type: ignore[union-attr]
    assert before is not None and before > datetime.now(UTC)  # the yearly run is still ahead
