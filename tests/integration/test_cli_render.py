"""``hareflow tasks render`` and ``tasks test --from-run`` against a running system on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hareflow.common.db import DagRun
from sqlalchemy import select

from tests.integration.test_cli import CliSystem, assert_user_error, cli_system

DAGS = """
    from hareflow import DAG, BashTask, task

    with DAG("templated", params={"region": "north"}):
        @task
        def rows():
            return [4, 5, 6]

        @task
        def total(values, ds):
            print("total for", ds)
            return sum(values)

        BashTask("greet", "echo hello {{ params.region }} on {{ ds }}", env={"DAY": "{{ ds_nodash }}"})
        total(rows())

    with DAG("gated"):
        @task
        def gate():
            raise RuntimeError("closed")

        later = BashTask("later", "echo later {{ run_id }} {{ params }}")
        gate() >> later
"""


def logical_ds(hf: CliSystem, dag_id: str, run_id: str) -> str:
    with hf.cluster.sessions() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        return run.logical_date.strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliSystem]:
    yield from cli_system(tmp_path_factory, {"render_dags.py": DAGS}, wait_for=["templated", "gated"])


def test_tasks_render_prints_the_values_the_worker_stored_for_the_latest_try(hf: CliSystem) -> None:
    run_id = hf.run_to_end("templated", conf={"region": "eu"})
    ds = logical_ds(hf, "templated", run_id)

    result = hf.ok("tasks", "render", run_id, "greet", "--dag", "templated")

    assert "stored by the worker for try 1" in result.stderr
    assert f"bash_command:\n  echo hello eu on {ds}\n" in result.stdout
    assert f'"DAY": "{ds.replace("-", "")}"' in result.stdout
    data = hf.json("tasks", "render", run_id, "greet", "--dag", "templated")
    assert data == {
        "source": "stored",
        "rendered": {"bash_command": f"echo hello eu on {ds}", "env": {"DAY": ds.replace("-", "")}},
    }


def test_tasks_render_of_a_task_that_never_ran_renders_it_here_with_the_run_s_context(hf: CliSystem) -> None:
    run_id = hf.run_to_end("gated")
    assert hf.tis("gated", run_id)["later"].state == "upstream_failed"

    result = hf.ok("tasks", "render", run_id, "later", "--dag", "gated")

    assert "rendered here from the DAG file (it has not run yet)" in result.stderr
    assert f"echo later {run_id} {{}}" in result.stdout


def test_tasks_render_of_an_unknown_task_is_one_clear_line(hf: CliSystem) -> None:
    run_id = hf.run_to_end("gated")
    assert_user_error(hf.invoke("tasks", "render", run_id, "nope", "--dag", "gated"), "nope")


def test_tasks_test_from_run_takes_upstream_values_and_the_date_from_that_run(hf: CliSystem) -> None:
    run_id = hf.run_to_end("templated")
    ds = logical_ds(hf, "templated", run_id)

    result = hf.ok("tasks", "test", "templated", "total", "--from-run", run_id)

    assert f"total for {ds}" in result.stdout
    assert result.stdout.rstrip().endswith("15")
    overridden = hf.ok("tasks", "test", "templated", "total", "--from-run", run_id, "--input", "rows=[1]")
    assert overridden.stdout.rstrip().endswith("1")
