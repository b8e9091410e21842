"""End to end: context by parameter name and templates rendered on the worker, stored per try.

Both executors on PostgreSQL; the core test also on SQLite (local) and MariaDB (RabbitMQ).
"""

from __future__ import annotations

import json

import pytest
from hareflow.common.db import TaskInstance, TaskRendered
from sqlalchemy import select

from tests.integration.conftest import System

CORE_SYSTEMS = pytest.mark.parametrize(
    "system", ["local", "rabbitmq", "sqlite-local", "mariadb-rabbitmq"], indirect=True
)


def rendered_rows(system: System, dag_id: str, run_id: str, task_id: str) -> dict[int, dict]:
    """Stored rendered fields of a task instance, by try number."""
    with system.c.sessions() as session:
        rows = session.execute(
            select(TaskRendered.try_number, TaskRendered.fields_json)
            .join(TaskInstance, TaskInstance.id == TaskRendered.ti_id)
            .where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id,
            )
        ).all()
    return {try_number: json.loads(text) for try_number, text in rows}


@CORE_SYSTEMS
def test_context_names_and_templates_reach_the_task_and_the_rendered_values_are_stored_per_try(
    system: System, write_dag
) -> None:
    write_dag(
        "ctx.py",
        """
        from datetime import datetime
        from hareflow import DAG, BashTask, task

        with DAG("ctx", params={"region": "north"}, default_args={"retry_delay": 0}):
            @task
            def named(ds, params, run_id, ti, ds_nodash=None):
                return {"ds": ds, "region": params["region"], "run": run_id, "try": ti.try_number,
                        "nodash": ds_nodash}

            @task
            def everything(**context):
                return sorted(context)

            templated = BashTask(
                "templated",
                "echo day={{ ds }} region=$REGION try={{ ti.try_number }}; "
                "test {{ ti.try_number }} -gt 1",
                env={"REGION": "{{ params.region }}"},
                retries=1,
            )
            named() >> templated
            everything()
        """,
    )
    system.start()
    run_id, state = system.run_dag("ctx", conf={"region": "eu"})

    assert state == "success"
    run = system.runs("ctx")[-1]
    ds = run.logical_date.strftime("%Y-%m-%d")
    named = system.result("ctx", run_id, "named")
    assert named == {"ds": ds, "region": "eu", "run": run_id, "try": 1, "nodash": ds.replace("-", "")}
    assert "ds" in system.result("ctx", run_id, "everything")
    assert "params" in system.result("ctx", run_id, "everything")

    assert system.tis("ctx", run_id)["templated"].try_number == 2
    assert system.result("ctx", run_id, "templated") == f"day={ds} region=eu try=2"
    log = system.log_text("ctx", run_id, "templated")
    assert f"day={ds} region=eu try=1" in log and "{{" not in log
    command = "echo day={} region=$REGION try={}; test {} -gt 1"
    assert rendered_rows(system, "ctx", run_id, "templated") == {
        1: {"bash_command": command.format(ds, 1, 1), "env": {"REGION": "eu"}},
        2: {"bash_command": command.format(ds, 2, 2), "env": {"REGION": "eu"}},
    }
    assert rendered_rows(system, "ctx", run_id, "named") == {}  # no template fields, no row


def test_an_undefined_template_variable_fails_the_try_with_the_error_in_its_log_and_state(
    system: System, write_dag
) -> None:
    write_dag(
        "undefined.py",
        """
        from hareflow import DAG, BashTask

        with DAG("undefined"):
            BashTask("b", "echo {{ params.missing }}")
        """,
    )
    system.start()
    run_id, state = system.run_dag("undefined")

    assert state == "failed"
    ti = system.tis("undefined", run_id)["b"]
    assert ti.state == "failed"
    assert ti.error is not None and "task 'b', field 'bash_command'" in ti.error and "missing" in ti.error
    assert "echo {{ params.missing }}" in ti.error
    assert "'missing'" in system.log_text("undefined", run_id, "b")
    assert rendered_rows(system, "undefined", run_id, "b") == {}


@pytest.mark.parametrize("system", ["local", "rabbitmq"], indirect=True)
def test_python_task_arguments_and_templates_dict_are_rendered_and_stored_with_the_try(
    system: System, write_dag
) -> None:
    write_dag(
        "pyargs.py",
        """
        from hareflow import DAG, PythonTask, task

        def show(day, region, templates_dict, options=None):
            return {"day": day, "region": region, "options": options, "templates": templates_dict}

        with DAG("pyargs", params={"region": "north"}):
            @task
            def source():
                return "{{ ds }} is data, not a template"

            @task
            def decorated(label, upstream, numbers):
                return [label, upstream, numbers]

            PythonTask(
                "classic",
                show,
                op_args=["{{ ds }}"],
                op_kwargs={"region": "{{ params.region }}", "options": {"paths": ["/in/{{ ds_nodash }}", 7]}},
                templates_dict={"query": "select {{ ti.try_number }}"},
            )
            decorated("run {{ run_id }}", source(), [1, 2])
        """,
    )
    system.start()
    run_id, state = system.run_dag("pyargs", conf={"region": "eu"})

    assert state == "success"
    ds = system.runs("pyargs")[-1].logical_date.strftime("%Y-%m-%d")
    nodash = ds.replace("-", "")
    assert system.result("pyargs", run_id, "classic") == {
        "day": ds,
        "region": "eu",
        "options": {"paths": [f"/in/{nodash}", 7]},
        "templates": {"query": "select 1"},
    }
    # An upstream value is data: it is substituted after rendering, never rendered.
    assert system.result("pyargs", run_id, "decorated") == [
        f"run {run_id}",
        "{{ ds }} is data, not a template",
        [1, 2],
    ]
    assert rendered_rows(system, "pyargs", run_id, "classic") == {
        1: {
            "templates_dict": {"query": "select 1"},
            "op_args": [ds],
            "op_kwargs": {"region": "eu", "options": {"paths": [f"/in/{nodash}", 7]}},
        }
    }
    assert rendered_rows(system, "pyargs", run_id, "decorated") == {
        1: {"op_args": [f"run {run_id}", "<output of source>", [1, 2]]}
    }
    assert rendered_rows(system, "pyargs", run_id, "source") == {}  # nothing to render, nothing stored
