"""Runtime context by parameter name, and Jinja2 templates rendered on the worker."""

from __future__ import annotations

import json
import multiprocessing
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.dag import DAG, Context, DagDefinitionError, load_dag_file, task
from hareflow.common.dag.context import CONTEXT_NAMES
from hareflow.common.dag.macros import ds_add, ds_format
from hareflow.worker.child import run_task

LOGICAL = "2026-03-04T05:06:07+00:00"


def payload(dag_file: Path, task_id: str, **extra: object) -> dict[str, Any]:
    return {
        "key": {
            "ti_id": 1,
            "dag_id": "d",
            "run_id": "r1",
            "task_id": task_id,
            "map_index": -1,
            "try_number": 2,
        },
        "max_tries": 3,
        "dag_file": str(dag_file),
        "queue": "default",
        "logical_date": LOGICAL,
        "data_interval_start": "2026-03-03T05:06:07+00:00",
        "data_interval_end": LOGICAL,
        "params": {"region": "eu"},
        "conf": {"full": True},
        "upstream_results": {},
        **extra,
    }


def run(tmp_path: Path, body: str, task_id: str) -> tuple[str, Any, str | None, str, dict[str, Any] | None]:
    """Run ``task_id`` of a DAG file holding ``body`` the way a task process does."""
    dag_file = tmp_path / "dag.py"
    header = "from datetime import datetime\nfrom hareflow import DAG, BaseTask, BashTask, task\n"
    dag_file.write_text(header + textwrap.dedent(body))
    parent, child = multiprocessing.Pipe()
    outcome, result, error = run_task(payload(dag_file, task_id), 10_000, child)
    log, rendered = [], None
    while parent.poll(0):
        kind, _token, item = parent.recv()
        if kind == "rendered":
            rendered = json.loads(item)
        else:
            log.append(item)
    return outcome, None if result is None else json.loads(result), error, "".join(log), rendered


def test_a_function_taking_only_context_keywords_receives_every_context_value(tmp_path: Path) -> None:
    outcome, result, error, _, _ = run(
        tmp_path,
        """
        with DAG("d", start_date=datetime(2026, 1, 1)):
            @task
            def t(**context):
                return {k: str(v) for k, v in context.items() if k in ("ds", "run_id", "params", "conf")} | {
                    "names": sorted(context), "try": context["ti"].try_number, "map": context["ti"].map_index}
            t()
        """,
        "t",
    )
    assert (outcome, error) == ("success", None)
    assert result["ds"] == "2026-03-04" and result["run_id"] == "r1"
    assert result["params"] == "{'region': 'eu'}" and result["conf"] == "{'full': True}"
    assert result["names"] == sorted(CONTEXT_NAMES)
    assert (result["try"], result["map"]) == (2, -1)


def test_a_context_name_with_a_default_is_filled_from_the_context(tmp_path: Path) -> None:
    outcome, result, error, _, _ = run(
        tmp_path,
        """
        with DAG("d", start_date=datetime(2026, 1, 1)):
            @task
            def t(ds=None, ts_nodash=None, params=None, logical_date=None, dag_run=None, ti=None):
                return [ds, ts_nodash, params, logical_date.isoformat(), dag_run.run_id, ti.task_id]
            t()
        """,
        "t",
    )
    assert (outcome, error) == ("success", None)
    assert result == ["2026-03-04", "20260304T050607", {"region": "eu"}, LOGICAL, "r1", "t"]


def test_context_names_without_defaults_mix_with_upstream_values_and_ctx(tmp_path: Path) -> None:
    body = """
        with DAG("d", start_date=datetime(2026, 1, 1)):
            @task
            def up():
                return 5
            @task
            def t(rows, ctx, ds, *, data_interval_start, task_instance):
                return [rows, ctx.run_id, ds, data_interval_start.isoformat(), task_instance.max_tries]
            t(up())
        """
    dag_file = tmp_path / "dag.py"
    dag_file.write_text(
        "from datetime import datetime\nfrom hareflow import DAG, task\n" + textwrap.dedent(body)
    )
    parent, child = multiprocessing.Pipe()
    outcome, result, error = run_task(payload(dag_file, "t", upstream_results={"up": 5}), 10_000, child)
    assert (outcome, error) == ("success", None)
    assert json.loads(result or "null") == [5, "r1", "2026-03-04", "2026-03-03T05:06:07+00:00", 3]


def test_an_argument_passed_in_the_call_wins_over_the_context() -> None:
    with DAG("d", start_date=datetime(2026, 1, 1)):

        @task
        def t(ds: str, params: dict[str, Any] | None = None) -> list[Any]:
            return [ds, params]

        made = t("1999-12-31")
    ctx = Context(
        dag_id="d",
        task_id=made.task_id,
        run_id="r",
        logical_date=datetime(2026, 1, 2, tzinfo=UTC),
        params={"a": 1},
    )
    assert made.execute(ctx) == ["1999-12-31", {"a": 1}]


def test_a_parameter_nothing_fills_is_refused_at_parse_time_with_file_line_and_names(tmp_path: Path) -> None:
    dag_file = tmp_path / "bad.py"
    dag_file.write_text(
        textwrap.dedent(
            """\
            from datetime import datetime
            from hareflow import DAG, task
            with DAG("d", start_date=datetime(2026, 1, 1)):
                @task
                def load(ds, dss):
                    return ds
                load()
            """
        )
    )
    result = load_dag_file(dag_file)
    assert result.dags == [] and len(result.errors) == 1
    error = result.errors[0]
    assert (error.file, error.line) == (str(dag_file.resolve()), 7)
    assert "task 'load'" in error.message and "parameter 'dss'" in error.message
    assert "ds, ds_nodash" in error.message and "ti, triggering_asset_events, ts" in error.message


def test_a_missing_argument_is_a_definition_error_when_building_the_dag_in_code() -> None:
    with DAG("d", start_date=datetime(2026, 1, 1)):

        @task
        def t(rows: list[int]) -> int:
            return sum(rows)

        with pytest.raises(DagDefinitionError, match="parameter 'rows' of t"):
            t()


def test_a_templated_bash_command_and_env_are_rendered_with_context_and_macros(tmp_path: Path) -> None:
    outcome, result, error, log, rendered = run(
        tmp_path,
        """
        with DAG("d", start_date=datetime(2026, 1, 1), params={"region": "us"}):
            BashTask(
                "b",
                "echo day={{ ds }} prev={{ macros.ds_add(ds, -1) }} region=$REGION try={{ ti.try_number }}",
                env={"REGION": "{{ params.region }}-{{ ds_nodash }}"},
            )
        """,
        "b",
    )
    assert (outcome, error) == ("success", None)
    assert result == "day=2026-03-04 prev=2026-03-03 region=eu-20260304 try=2"
    assert "{{" not in log
    assert rendered == {
        "bash_command": "echo day=2026-03-04 prev=2026-03-03 region=$REGION try=2",
        "env": {"REGION": "eu-20260304"},
    }


def test_an_undefined_template_variable_fails_the_try_naming_task_field_and_template(tmp_path: Path) -> None:
    outcome, result, error, log, rendered = run(
        tmp_path,
        """
        with DAG("d", start_date=datetime(2026, 1, 1)):
            BashTask("b", "echo {{ params.regoin }} {{ dss }}")
        """,
        "b",
    )
    assert outcome == "failed" and result is None and rendered is None
    assert error is not None and "task 'b', field 'bash_command'" in error
    assert "'echo {{ params.regoin }} {{ dss }}'" in error and "regoin" in error
    assert "regoin" in log  # the error is in the try's log too


def test_a_custom_task_renders_its_template_fields_nested_in_lists_and_dicts(tmp_path: Path) -> None:
    outcome, result, error, _, rendered = run(
        tmp_path,
        """
        class Copy(BaseTask):
            template_fields = ("source", "options")
            def __init__(self, task_id, source, options, **kw):
                self.source, self.options, self.untouched = source, options, "{{ ds }}"
                super().__init__(task_id, **kw)
            def execute(self, ctx):
                return [self.source, self.options, self.untouched]

        with DAG("d", start_date=datetime(2026, 1, 1)):
            day = "{{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m') }}"
            year = "{{ macros.datetime(2026, 1, 1).year }}"
            Copy("c", "s3://b/{{ ds_nodash }}/", {"days": [day, 3], "when": year})
        """,
        "c",
    )
    assert (outcome, error) == ("success", None)
    assert result == ["s3://b/20260304/", {"days": ["04/03", 3], "when": "2026"}, "{{ ds }}"]
    assert rendered == {"source": "s3://b/20260304/", "options": {"days": ["04/03", 3], "when": "2026"}}


def test_rendering_leaves_the_dag_s_own_task_object_untouched(tmp_path: Path) -> None:
    from hareflow.common.dag.templating import rendered_task

    with DAG("d", start_date=datetime(2026, 1, 1)) as dag:
        from hareflow.common.dag import BashTask

        BashTask("b", "echo {{ ds }}")
    ctx = Context(dag_id="d", task_id="b", run_id="r", logical_date=datetime(2026, 1, 2, tzinfo=UTC))
    clone, rendered = rendered_task(dag.task_dict["b"], ctx)
    assert clone.bash_command == "echo 2026-01-02" == rendered["bash_command"]
    assert dag.task_dict["b"].bash_command == "echo {{ ds }}"


def test_macros_add_days_and_reformat_dates() -> None:
    assert ds_add("2026-03-01", -1) == "2026-02-28"
    assert ds_add("2026-12-31", 1) == "2027-01-01"
    assert ds_format("2026-03-01", "%Y-%m-%d", "%d.%m.%Y") == "01.03.2026"


def test_echo_ds_logs_the_date_not_the_literal_template(tmp_path: Path) -> None:
    outcome, result, _, log, _ = run(
        tmp_path, 'with DAG("d", start_date=datetime(2026, 1, 1)):\n    BashTask("b", "echo {{ ds }}")\n', "b"
    )
    assert outcome == "success" and result == "2026-03-04"
    assert "2026-03-04" in log and "{{ ds }}" not in log


def test_a_bash_command_that_is_not_a_valid_template_is_refused_at_parse_time(tmp_path: Path) -> None:
    dag_file = tmp_path / "bad_template.py"
    dag_file.write_text(
        "from datetime import datetime\nfrom hareflow import DAG, BashTask\n"
        'with DAG("d", start_date=datetime(2026, 1, 1)):\n'
        '    BashTask("b", "echo {{ ds }", env={"A": "{% if %}"})\n'
    )
    result = load_dag_file(dag_file)
    assert result.dags == [] and len(result.errors) == 1
    error = result.errors[0]
    assert error.line == 4 and "bash_command of task 'b' is not a valid template" in error.message
