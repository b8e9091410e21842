"""The authoring API as a DAG file author uses it: DAGs, tasks, dependencies, contexts."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hareflow.common.dag import (
    DAG,
    BaseTask,
    BashTask,
    Context,
    PythonTask,
    TaskFailed,
    TriggerRule,
    current_dag,
    resolve_params,
    task,
)

import hareflow

REPO = Path(__file__).resolve().parents[2]


def _ctx(task_id: str = "t", **kwargs: object) -> Context:
    return Context(dag_id="d", task_id=task_id, run_id="manual__1", **kwargs)  # type: ignore[arg-type]


def test_the_design_example_builds_the_expected_graph() -> None:
    with DAG(
        "daily_sales",
        schedule="0 2 * * *",
        start_date=datetime(2026, 1, 1),
        catchup=True,
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
        tags=["sales"],
    ) as dag:

        @task
        def extract(ctx):
            return [1, 2, 3]

        @task(queue="heavy", execution_timeout=timedelta(minutes=5))
        def total(rows):
            return sum(rows)

        report = BashTask("report", "echo done")
        total(extract()) >> report

    assert [t.task_id for t in dag.topological_order()] == ["extract", "total", "report"]
    assert dag.get_task("total").upstream_task_ids == {"extract"}
    assert dag.get_task("total").input_task_ids == {"extract"}
    assert dag.get_task("report").upstream_task_ids == {"total"}
    total_task = dag.get_task("total")
    assert total_task.queue == "heavy"
    assert total_task.retries == 2
    assert total_task.retry_delay == timedelta(seconds=30)
    assert total_task.execution_timeout == timedelta(minutes=5)
    assert report.trigger_rule is TriggerRule.ALL_SUCCESS
    assert dag.start_date == datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))
    assert dag.timezone_name == "UTC"
    assert current_dag() is None


def test_hareflow_exports_the_authoring_api() -> None:
    names = ["DAG", "task", "BaseTask", "PythonTask", "BashTask", "TriggerRule", "Context"]
    names += ["DagDefinitionError", "TaskResultTooLarge", "TaskFailed", "load_plugins", "Timetable"]
    names += ["TaskGroup", "TaskOutput", "chain", "chain_linear", "cross_downstream", "dag", "task_group"]
    names += ["BranchTask", "ShortCircuitTask", "SkipTask", "FailTask", "setup", "teardown"]
    names += ["Connection", "Variable"]
    names += ["BaseNotifier", "EmailNotifier", "WebhookNotifier", "SlackWebhookNotifier"]
    names += ["SqlTask", "SqlCopyTask", "HttpTask"]
    names += ["BaseSensor", "PythonSensor", "PokeReturnValue", "FileSensor", "SqlSensor", "HttpSensor"]
    names += ["DateTimeSensor", "TimeDeltaSensor", "ExternalTaskSensor"]
    names += ["Asset", "AssetAll", "AssetAny", "AssetOrTimeSchedule"]
    names += ["Dataset", "DatasetAll", "DatasetAny", "DatasetOrTimeSchedule"]
    names += ["BrokerTrigger", "WebhookTrigger"]
    assert all(hasattr(hareflow, name) for name in names)
    assert set(hareflow.__all__) == set(names)


def test_importing_hareflow_does_not_import_database_or_broker_libraries() -> None:
    code = "import hareflow, sys; assert not {'sqlalchemy', 'pika', 'flask'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO))


def test_shift_operators_accept_lists_on_either_side() -> None:
    with DAG("shifts") as dag:
        a, b, c, d, e = (BashTask(x, "true") for x in "abcde")
        a >> [b, c] >> d
        [a, b] >> e
        e << d
    assert dag.get_task("b").upstream_task_ids == {"a"}
    assert dag.get_task("d").upstream_task_ids == {"b", "c"}
    assert dag.get_task("e").upstream_task_ids == {"a", "b", "d"}
    assert [t.task_id for t in dag.roots] == ["a"]
    assert [t.task_id for t in dag.leaves] == ["e"]


def test_left_shift_of_a_list_makes_the_task_upstream_of_each() -> None:
    with DAG("lshift") as dag:
        a, b, c = (BashTask(x, "true") for x in "abc")
        [a, b] << c
    assert dag.get_task("a").upstream_task_ids == {"c"}
    assert dag.get_task("b").upstream_task_ids == {"c"}


def test_set_upstream_and_set_downstream_work_without_a_with_block() -> None:
    dag = DAG("explicit")
    a = BashTask("a", "true", dag=dag)
    b = BashTask("b", "true", dag=dag)
    c = BashTask("c", "true", dag=dag)
    b.set_upstream(a)
    b.set_downstream([c])
    assert [t.task_id for t in dag.topological_order()] == ["a", "b", "c"]
    assert [t.task_id for t in b.upstream_list] == ["a"]
    assert [t.task_id for t in b.downstream_list] == ["c"]


def test_calling_a_task_function_twice_gives_numbered_task_ids() -> None:
    with DAG("numbered") as dag:

        @task
        def step():
            return 1

        first, second, third = step(), step(), step()

        @task(task_id="custom")
        def named():
            return 2

        named()
    assert (first.task_id, second.task_id, third.task_id) == ("step", "step__1", "step__2")
    assert dag.has_task("custom")


def test_task_decorator_with_dag_argument_works_outside_a_with_block() -> None:
    dag = DAG("no_with")

    @task(dag=dag, priority=7)
    def hello():
        return "hi"

    created = hello()
    assert created.dag is dag and created.priority == 7


def test_default_args_are_overridden_by_task_settings() -> None:
    with DAG("defaults", default_args={"queue": "q1", "retries": 3, "priority": 4}):
        a = BashTask("a", "true")
        b = BashTask("b", "true", queue="q2", retries=0)
    assert (a.queue, a.retries, a.priority) == ("q1", 3, 4)
    assert (b.queue, b.retries, b.priority) == ("q2", 0, 4)
    assert a.max_tries == 4 and b.max_tries == 1


def test_numbers_are_accepted_as_seconds_for_durations() -> None:
    with DAG("durations"):
        a = BashTask("a", "true", retry_delay=5, execution_timeout=1.5, max_retry_delay=60)
    assert a.retry_delay == timedelta(seconds=5)
    assert a.execution_timeout == timedelta(seconds=1.5)
    assert a.max_retry_delay == timedelta(minutes=1)


def test_python_task_receives_upstream_results_and_context() -> None:
    seen: dict[str, object] = {}
    with DAG("values") as dag:

        @task
        def source():
            return {"rows": [1, 2, 3]}

        @task
        def combine(data, extra, ctx, scale=1, *, label="sum"):
            seen["try"] = ctx.try_number
            return {label: sum(data["rows"]) * scale + extra[0]}

        combine(source(), [10], scale=2)

    result = dag.get_task("combine").execute(
        _ctx("combine", try_number=3, upstream_results={"source": {"rows": [1, 2, 3]}})
    )
    assert result == {"sum": 22}
    assert seen["try"] == 3


def test_task_references_nested_in_lists_and_dicts_become_dependencies() -> None:
    with DAG("nested") as dag:

        @task
        def number(n):
            return n

        @task
        def gather(items, mapping):
            return [*items, mapping["x"]]

        one, two, three = number(1), number(2), number(3)
        gathered = gather([one, two], {"x": three})

    assert gathered.upstream_task_ids == {"number", "number__1", "number__2"}
    assert gathered.input_task_ids == {"number", "number__1", "number__2"}
    results = {"number": 1, "number__1": 2, "number__2": 3}
    assert dag.get_task("gather").execute(_ctx("gather", upstream_results=results)) == [1, 2, 3]


def test_ctx_can_be_the_first_parameter_and_is_not_a_user_argument() -> None:
    with DAG("ctx_first") as dag:

        @task
        def first(ctx, value):
            return f"{ctx.task_id}:{value}"

        first("x")
    assert dag.get_task("first").execute(_ctx("first")) == "first:x"


def test_a_missing_upstream_result_is_passed_as_none() -> None:
    with DAG("missing") as dag:

        @task
        def up():
            return 1

        @task(trigger_rule="all_done")
        def down(value):
            return value

        down(up())
    assert dag.get_task("down").execute(_ctx("down")) is None


def test_function_docstring_becomes_the_task_doc() -> None:
    with DAG("docs"):

        @task
        def documented():
            """Explains itself."""

        created = documented()
    assert created.doc == "Explains itself."


def test_custom_task_types_subclass_base_task() -> None:
    class Greet(BaseTask):
        def __init__(self, task_id: str, name: str, **settings: object) -> None:
            self.name = name
            super().__init__(task_id, **settings)  # type: ignore[arg-type]

        def execute(self, ctx: Context) -> str:
            return f"hello {self.name} from {ctx.task_id}"

    with DAG("custom"):
        greet = Greet("greet", "world", retries=1)
    assert greet.task_type == "Greet"
    assert greet.execute(_ctx("greet")) == "hello world from greet"


def test_base_task_execute_must_be_implemented() -> None:
    with DAG("abstract"):
        plain = BaseTask("plain")
    with pytest.raises(NotImplementedError):
        plain.execute(_ctx())


def test_python_task_can_be_built_directly() -> None:
    with DAG("direct") as dag:
        PythonTask("add", lambda a, b: a + b, op_args=[1], op_kwargs={"b": 2})
    assert dag.get_task("add").execute(_ctx("add")) == 3


def test_timezone_is_taken_from_an_aware_start_date() -> None:
    dag = DAG("tz", schedule="@daily", start_date=datetime(2026, 1, 1, tzinfo=ZoneInfo("Europe/Amsterdam")))
    assert dag.timezone_name == "Europe/Amsterdam"
    fixed = DAG(
        "tz_fixed", schedule="@daily", start_date=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    )
    assert fixed.timezone_name == "Etc/GMT-2"
    utc = DAG("tz_utc", schedule="@daily", start_date=datetime(2026, 1, 1, tzinfo=UTC))
    assert utc.timezone_name == "UTC"


def test_naive_start_date_is_read_in_the_dag_timezone() -> None:
    dag = DAG("local", schedule="@daily", start_date=datetime(2026, 6, 1), timezone="Europe/Amsterdam")
    assert dag.start_date is not None
    assert dag.start_date.astimezone(UTC) == datetime(2026, 5, 31, 22, tzinfo=UTC)


def test_context_log_is_named_after_the_task() -> None:
    assert _ctx("extract").log.name == "hareflow.task.d.extract"


def test_run_conf_overrides_param_defaults() -> None:
    assert resolve_params({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 3, "c": 4}
    assert resolve_params({"a": 1}, None) == {"a": 1}


def test_bash_task_streams_output_sets_env_and_returns_last_stdout_line(monkeypatch) -> None:  # noqa: ANN001
    with DAG("bash"):
        command = (
            'echo "$HAREFLOW_DAG_ID $HAREFLOW_TASK_ID $HAREFLOW_RUN_ID" '
            '"$HAREFLOW_TRY_NUMBER $HAREFLOW_LOGICAL_DATE"; '
            'echo "to stderr" >&2; echo "$GREETING"; echo; echo "   "'
        )
        bash = BashTask("shout", command, env={"GREETING": "last line"})
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stdout", captured)
    ctx = Context(
        dag_id="bash",
        task_id="shout",
        run_id="r1",
        try_number=2,
        logical_date=datetime(2026, 1, 1, tzinfo=UTC),
    )
    result = bash.execute(ctx)
    assert result == "last line"
    lines = captured.getvalue().splitlines()
    assert "bash shout r1 2 2026-01-01T00:00:00+00:00" in lines
    assert "to stderr" in lines


def test_bash_task_fails_with_the_exit_code() -> None:
    with DAG("bash_fail"):
        bash = BashTask("boom", "echo partial; exit 3")
    with pytest.raises(TaskFailed, match="bash exited with code 3"):
        bash.execute(_ctx("boom"))


def test_bash_task_with_no_output_returns_none(tmp_path) -> None:  # noqa: ANN001
    with DAG("bash_quiet"):
        bash = BashTask("quiet", "touch marker", cwd=tmp_path)
    assert bash.execute(_ctx("quiet")) is None
    assert (tmp_path / "marker").exists()


def test_nested_with_blocks_restore_the_outer_dag() -> None:
    with DAG("outer") as outer:
        with DAG("inner") as inner:
            assert current_dag() is inner
        assert current_dag() is outer
        t = BashTask("t", "true")
    assert t.dag is outer
