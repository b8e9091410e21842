"""Dynamic task mapping end to end: DAG files in, a real scheduler and real workers, each mapped
instance a task instance of its own in a real metastore.

Every test runs on both executors over PostgreSQL; the core one also on SQLite with the local
executor and MariaDB with RabbitMQ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hareflow.common.db import TaskInstance, TaskLog, TaskResult
from sqlalchemy import select

from tests.integration.conftest import System

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dags"
CORE_SYSTEMS = pytest.mark.parametrize(
    "system", ["local", "rabbitmq", "sqlite-local", "mariadb-rabbitmq"], indirect=True
)


def instances(system: System, dag_id: str, run_id: str, task_id: str) -> list[TaskInstance]:
    """A task's instances in one run, in map-index order."""
    with system.c.sessions() as session:
        return list(
            session.scalars(
                select(TaskInstance)
                .where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == task_id,
                )
                .order_by(TaskInstance.map_index)
            )
        )


def results(system: System, tis: list[TaskInstance]) -> list[object]:
    """The stored return value of each instance's latest try."""
    with system.c.sessions() as session:
        values = dict(
            session.execute(
                select(TaskResult.ti_id, TaskResult.value_json).where(
                    TaskResult.ti_id.in_([ti.id for ti in tis])
                )
            ).all()
        )
    return [json.loads(values[ti.id]) for ti in tis]


def log_of(system: System, ti: TaskInstance) -> str:
    with system.c.sessions() as session:
        return "".join(
            session.scalars(
                select(TaskLog.text).where(TaskLog.ti_id == ti.id).order_by(TaskLog.try_number, TaskLog.seq)
            )
        )


@CORE_SYSTEMS
def test_a_task_mapped_over_an_upstream_output_runs_once_per_element_and_the_total_gets_every_result(
    system: System, write_dag
) -> None:
    write_dag(
        "partitions.py",
        """
        from hareflow import DAG, task

        with DAG("partitions"):
            @task
            def partitions():
                return ["2026-01-01", "2026-01-02", "2026-01-03"]

            @task
            def rows_in(partition, scale, ctx):
                print(f"counting {partition} as instance {ctx.map_index}")
                return {"partition": partition, "rows": scale * int(partition[-1])}

            @task
            def total(counts):
                return sum(c["rows"] for c in counts)

            total(rows_in.partial(scale=10).expand(partition=partitions()))
        """,
    )
    system.start()
    run_id, state = system.run_dag("partitions")

    assert state == "success"
    mapped = instances(system, "partitions", run_id, "rows_in")
    assert [(ti.map_index, ti.state, ti.try_number) for ti in mapped] == [
        (0, "success", 1),
        (1, "success", 1),
        (2, "success", 1),
    ]
    assert results(system, mapped) == [
        {"partition": "2026-01-01", "rows": 10},
        {"partition": "2026-01-02", "rows": 20},
        {"partition": "2026-01-03", "rows": 30},
    ]
    assert "counting 2026-01-02 as instance 1" in log_of(system, mapped[1])
    assert "2026-01-02" not in log_of(system, mapped[0])
    assert system.result("partitions", run_id, "total") == 60


def test_each_instance_retries_on_its_own_and_mapping_over_a_mapped_task_follows_its_instances(
    system: System, write_dag
) -> None:
    write_dag(
        "retries.py",
        """
        from hareflow import DAG, task

        with DAG("mapped_retries"):
            @task(retries=1, retry_delay=0)
            def square(x, ctx):
                if x == 2 and ctx.try_number == 1:
                    raise RuntimeError("first try of 2 fails")
                return x * x

            @task
            def label(value):
                return f"v={value}"

            @task
            def joined(labels):
                return ",".join(labels)

            joined(label.expand(value=square.expand(x=[1, 2, 3])))
        """,
    )
    system.start()
    run_id, state = system.run_dag("mapped_retries")

    assert state == "success"
    squares = instances(system, "mapped_retries", run_id, "square")
    assert [ti.try_number for ti in squares] == [1, 2, 1]
    assert "first try of 2 fails" in log_of(system, squares[1])
    labels = instances(system, "mapped_retries", run_id, "label")
    assert results(system, labels) == ["v=1", "v=4", "v=9"]
    assert system.result("mapped_retries", run_id, "joined") == "v=1,v=4,v=9"


def test_an_empty_expansion_skips_the_task_and_one_past_max_map_length_fails_clearly(
    system: System, write_dag
) -> None:
    write_dag(
        "limits.py",
        """
        from hareflow import DAG, task

        with DAG("limits"):
            @task
            def nothing():
                return []

            @task
            def each(x):
                return x

            @task
            def after(values):
                return values

            @task
            def too_many():
                return list(range(5))

            after(each.expand(x=nothing()))
            each.override(task_id="wide").expand(x=too_many())
        """,
    )
    system.start(max_map_length=4)
    run_id, state = system.run_dag("limits")

    assert state == "failed"
    tis = system.tis("limits", run_id)
    assert (tis["each"].map_index, tis["each"].state) == (-1, "skipped")
    assert tis["after"].state == "skipped"
    assert (tis["wide"].map_index, tis["wide"].state) == (-1, "failed")
    assert "expands to 5 instances, over max_map_length (4)" in (tis["wide"].error or "")


def test_the_mapping_example_transforms_each_partition_and_totals_them(
    system: System, dags_folder: Path
) -> None:
    shutil.copy(EXAMPLES / "example_mapping.py", dags_folder / "example_mapping.py")
    system.start()
    run_id, state = system.run_dag("example_mapping", conf={"partitions": 3})

    assert state == "success"
    transforms = instances(system, "example_mapping", run_id, "transform")
    assert [ti.map_index for ti in transforms] == [0, 1, 2]
    assert [r["rows"] for r in results(system, transforms)] == [100, 110, 120]  # type: ignore[index]
    assert system.result("example_mapping", run_id, "total") == {"files": 3, "rows": 330, "revenue": 825.0}


REEXPAND_DAG = """
import json
from pathlib import Path

from hareflow import DAG, task

with DAG("reexpand"):
    @task
    def items():
        return json.loads(Path({items!r}).read_text())

    @task
    def double(x):
        return 2 * x

    @task
    def total(values):
        return values

    total(double.expand(x=items()))
"""


@pytest.mark.parametrize("system", ["local", "rabbitmq"], indirect=True)
def test_a_mapped_task_cleared_with_its_upstream_expands_again_over_the_new_length(
    system: System, write_dag, tmp_path: Path
) -> None:
    from tests.integration.test_cli import invoke_hareflow

    items = tmp_path / "items.json"
    items.write_text("[1, 2, 3]")
    write_dag("reexpand.py", REEXPAND_DAG.format(items=str(items)))
    system.start()
    run_id, state = system.run_dag("reexpand")
    assert state == "success"
    env = {
        "HAREFLOW_DATABASE_URL": system.settings.effective_database_url,
        "HAREFLOW_HOME": str(system.settings.home),
    }

    def clear_and_rerun(*args: str) -> None:
        cleared = invoke_hareflow(env, "tasks", "clear", "reexpand", "--run-id", run_id, *args, "--yes")
        assert cleared.exit_code == 0, cleared.output
        assert system.c.wait_for_run("reexpand", run_id, timeout=60) == "success"

    def states() -> dict[int, str]:
        return {ti.map_index: ti.state for ti in instances(system, "reexpand", run_id, "double")}

    # Longer: clearing the upstream with its downstream creates the missing instances.
    items.write_text("[1, 2, 3, 4, 5]")
    clear_and_rerun("--task", "^items$", "--downstream")
    assert states() == {i: "success" for i in range(5)}
    assert system.result("reexpand", run_id, "total") == [2, 4, 6, 8, 10]
    assert [ti.try_number for ti in instances(system, "reexpand", run_id, "double")] == [2, 2, 2, 1, 1]

    # Shorter: clearing the mapped task with its upstream removes the instances past the end, and
    # the downstream task receives only the remaining ones.
    items.write_text("[7, 8]")
    clear_and_rerun("--task", "^(double|total)$", "--upstream")
    assert states() == {0: "success", 1: "success", 2: "removed", 3: "removed", 4: "removed"}
    assert system.result("reexpand", run_id, "total") == [14, 16]

    # Longer again: instances the shorter expansion removed wait again and run.
    items.write_text("[1, 2, 3, 4]")
    clear_and_rerun("--task", "^items$", "--downstream")
    assert states() == {0: "success", 1: "success", 2: "success", 3: "success", 4: "removed"}
    assert system.result("reexpand", run_id, "total") == [2, 4, 6, 8]
