"""End to end on PostgreSQL, both executors: a grouped ``@dag`` whose tasks pass ``["key"]`` values.

The scheduler sends each consumer the upstream's whole stored result; the worker picks the keys out.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import System

GROUPED = """
from datetime import datetime

from hareflow import BashTask, TaskGroup, chain, dag, task, task_group


@dag(start_date=datetime(2026, 1, 1), schedule=None)
def grouped(factor=2):
    with TaskGroup("extract", tooltip="read the orders"):

        @task(multiple_outputs=True)
        def fetch():
            print("fetching orders")
            return {"rows": [1, 2, 3], "meta": {"source": "orders"}}

        raw = fetch()

    @task_group
    def transform(rows, factor):
        @task
        def scale(rows, factor):
            return [r * factor for r in rows]

        @task
        def total(rows) -> dict[str, int]:
            return {"sum": sum(rows), "count": len(rows)}

        return total(scale(rows, factor))

    totals = transform(raw["rows"], factor)

    @task
    def load(total, source, count):
        return f"{source}: {count} rows, total {total}"

    done = BashTask("report", "echo reported")
    chain(load(totals["sum"], raw["meta"]["source"], totals["count"]), done)


grouped()
"""

MISSING_KEY = """
from hareflow import DAG, TaskGroup, task

with DAG("missing_key"):
    with TaskGroup("g"):
        @task
        def produce():
            return {"rows": []}

        produced = produce()

    @task
    def consume(value):
        return value

    consume(produced["colums"])
"""


def test_a_grouped_dag_passes_keyed_values_through_real_workers(system: System, write_dag) -> None:
    write_dag("grouped.py", GROUPED)
    system.start()
    run_id, state = system.run_dag("grouped", conf={"factor": 10})

    assert state == "success"
    tis = system.tis("grouped", run_id)
    assert {t: ti.state for t, ti in tis.items()} == {
        "extract.fetch": "success",
        "transform.scale": "success",
        "transform.total": "success",
        "load": "success",
        "report": "success",
    }
    assert system.result("grouped", run_id, "extract.fetch") == {
        "rows": [1, 2, 3],
        "meta": {"source": "orders"},
    }
    assert system.result("grouped", run_id, "transform.scale") == [10, 20, 30]
    assert system.result("grouped", run_id, "transform.total") == {"sum": 60, "count": 3}
    assert system.result("grouped", run_id, "load") == "orders: 3 rows, total 60"
    assert "fetching orders" in system.log_text("grouped", run_id, "extract.fetch")


def test_a_missing_key_fails_the_consuming_task_naming_the_upstream_and_the_key(
    system: System, write_dag
) -> None:
    write_dag("missing_key.py", MISSING_KEY)
    system.start()
    run_id, state = system.run_dag("missing_key")

    assert state == "failed"
    tis = system.tis("missing_key", run_id)
    assert tis["g.produce"].state == "success"
    assert tis["consume"].state == "failed"
    error = tis["consume"].error or ""
    assert "upstream task 'g.produce'" in error and "no key 'colums'" in error, error


def test_the_grouped_example_runs_with_its_param_from_the_conf(system: System, write_dag) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "dags" / "example_grouped_etl.py"
    write_dag("example_grouped_etl.py", example.read_text())
    system.start()
    run_id, state = system.run_dag("example_grouped_etl", conf={"min_amount": 50})

    assert state == "success"
    assert system.result("example_grouped_etl", run_id, "transform.summarise") == {
        "totals": {"north": 120.0, "south": 80.5, "west": 310.0},
        "count": 3,
    }
    assert system.result("example_grouped_etl", run_id, "load.audit") == 3
    assert system.result("example_grouped_etl", run_id, "report") == "3 regions written to sales_by_region"
    assert system.tis("example_grouped_etl", run_id)["transform.keep"].max_tries == 3  # the group's retries
