"""``hareflow dags test``, ``DAG.test()`` and ``tasks test --input``: no broker, no metastore."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.unit.test_cli import hareflow, one_line_error

DAGS = """
    from hareflow import DAG, BashTask, task

    with DAG("pipeline", params={"factor": 2}, default_args={"retry_delay": 0}) as dag:
        @task
        def numbers(params):
            return [params["factor"], 3]

        @task
        def total(values, ds):
            print("totalling", values, "for", ds)
            return sum(values)

        report = BashTask("report", "echo total={{ params.factor }} day={{ ds }}")

        @task(trigger_rule="all_done")
        def cleanup():
            return "cleaned"

        @task
        def flaky(ti):
            if ti.try_number == 1:
                raise RuntimeError("first try fails")
            return ti.try_number

        total(numbers()) >> report >> cleanup()
        flaky.override(retries=1)()

    with DAG("broken_run") as failing:
        @task
        def boom():
            raise ValueError("no data")

        @task
        def after(x):
            return x

        BashTask("bad_template", "echo {{ nope }}")
        after(boom())
"""

NO_BROKER = {"HAREFLOW_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "pipeline.py").write_text(textwrap.dedent(DAGS))
    return {"HAREFLOW_DAGS_FOLDER": str(folder), **NO_BROKER}


def test_dags_test_runs_every_task_in_order_with_values_flowing_and_prints_logs_and_results(
    env: dict[str, str],
) -> None:
    result = hareflow(
        "dags", "test", "pipeline", "--conf", '{"factor": 5}', "--logical-date", "2026-01-05", env=env
    )

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "totalling [5, 3] for 2026-01-05" in out
    assert "--- total: success, returned 8" in out
    assert "total=5 day=2026-01-05\n" in out and "{{" not in out
    assert out.index("--- numbers (try 1") < out.index("--- total (try 1") < out.index("--- report (try 1")
    assert "--- flaky: up_for_retry: RuntimeError: first try fails" in out
    assert "--- flaky: success, returned 2" in out
    assert '--- cleanup: success, returned "cleaned"' in out
    assert "of pipeline: success" in out


def test_dags_test_exits_one_when_the_run_fails_and_honours_trigger_rules(env: dict[str, str]) -> None:
    result = hareflow("dags", "test", "broken_run", env=env)

    assert result.exit_code == 1
    assert "--- boom: failed: ValueError: no data" in result.stdout
    assert "--- after: upstream_failed" in result.stdout
    assert "--- bad_template: failed: TemplateRenderError: task 'bad_template', field 'bash_command'" in (
        result.stdout
    )
    assert "of broken_run: failed" in result.stdout


def test_dag_test_method_runs_the_dag_in_this_process(
    env: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    from hareflow.common.dag import load_dag_file

    (dag,) = [
        d
        for d in load_dag_file(Path(env["HAREFLOW_DAGS_FOLDER"]) / "pipeline.py").dags
        if d.dag_id == "pipeline"
    ]
    outcome = dag.test(conf={"factor": 1})

    assert outcome.state == "success" and not outcome.failed
    assert outcome.tries["total"].result == 4
    assert outcome.states == {t: "success" for t in ("numbers", "total", "report", "cleanup", "flaky")}
    assert json.loads(outcome.tries["report"].rendered_json or "{}")["bash_command"].startswith(
        "echo total=1 day="
    )
    assert "totalling [1, 3]" in capsys.readouterr().out


def test_tasks_test_takes_upstream_values_from_input_options(env: dict[str, str]) -> None:
    result = hareflow("tasks", "test", "pipeline", "total", "--input", "numbers=[10, 20]", env=env)

    assert result.exit_code == 0, result.output
    assert "totalling [10, 20]" in result.stdout
    assert result.stdout.rstrip().endswith("30")


def test_tasks_test_renders_templates_as_a_worker_does(env: dict[str, str]) -> None:
    result = hareflow("tasks", "test", "pipeline", "report", "--logical-date", "2026-02-03", env=env)

    assert result.exit_code == 0, result.output
    assert "total=2 day=2026-02-03\n" in result.stdout


def test_tasks_test_refuses_a_bad_or_unconsumed_input(env: dict[str, str]) -> None:
    one_line_error(hareflow("tasks", "test", "pipeline", "total", "--input", "numbers", env=env), "TASK=JSON")
    one_line_error(
        hareflow("tasks", "test", "pipeline", "total", "--input", "numbers=[1", env=env), "not JSON"
    )
    one_line_error(
        hareflow("tasks", "test", "pipeline", "total", "--input", "report=1", env=env),
        "does not consume",
        "numbers",
    )


BRANCHY = """
    from hareflow import DAG, BashTask, FailTask, SkipTask, task

    with DAG("branchy", default_args={"retries": 2, "retry_delay": 0}):
        @task.branch
        def pick():
            return "load"

        @task
        def quiet():
            raise SkipTask("nothing new")

        @task
        def hopeless():
            raise FailTask("bad input, no point retrying")

        pick() >> [BashTask("load", "echo loading"), BashTask("archive", "echo archiving")]
        quiet()
        hopeless()

    with DAG("mapped", default_args={"retries": 1, "retry_delay": 0}):
        @task
        def numbers():
            return [1, 2, 3]

        @task
        def double(x, ti):
            if x == 2 and ti.try_number == 1:
                raise RuntimeError("flaky")
            return 2 * x

        @task
        def total(values):
            return sum(values)

        @task
        def nothing():
            return []

        @task
        def never(x):
            return x

        total(double.expand(x=numbers()))
        never.expand(x=nothing())
"""


def test_dags_test_follows_branches_self_skips_and_no_retry_failures(env: dict[str, str]) -> None:
    (Path(env["HAREFLOW_DAGS_FOLDER"]) / "branchy.py").write_text(textwrap.dedent(BRANCHY))

    result = hareflow("dags", "test", "branchy", env=env)

    out = result.stdout
    assert "--- archive: skipped (" in out and "echo archiving" not in out and "--- load: success" in out
    assert "--- quiet: skipped" in out
    assert "--- hopeless: failed: FailTask: bad input" in out and "hopeless (try 2" not in out
    assert result.exit_code == 1  # hopeless is a leaf that failed


def test_dags_test_expands_mapped_tasks_and_hands_the_list_downstream(env: dict[str, str]) -> None:
    (Path(env["HAREFLOW_DAGS_FOLDER"]) / "branchy.py").write_text(textwrap.dedent(BRANCHY))

    result = hareflow("dags", "test", "mapped", env=env)

    out = result.stdout
    assert result.exit_code == 0, result.output
    assert "--- double[1]: up_for_retry: RuntimeError: flaky" in out and "--- double[1] (try 2 of 2)" in out
    assert "--- double[2]: success, returned 6" in out
    assert "--- total: success, returned 12" in out
    assert "--- never: skipped (it maps over nothing)" in out
    assert "of mapped: success" in out
