"""Every DAG definition error names the user's file and the line of the offending statement."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest
from hareflow.common.dag import DAG, BashTask, DagDefinitionError, load_dag_file, task
from hareflow.common.dag.loader import ImportErrorInfo

MARK = "# <- here"


def _write(tmp_path: Path, source: str, name: str = "dag_file.py") -> tuple[Path, int]:
    """Write a DAG file; return its path and the line marked with MARK."""
    text = textwrap.dedent(source).lstrip("\n")
    path = tmp_path / name
    path.write_text(text)
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if MARK in line]
    return path, lines[0] if lines else -1


def _single_error(tmp_path: Path, source: str) -> tuple[ImportErrorInfo, int, Path]:
    path, line = _write(tmp_path, source)
    result = load_dag_file(path)
    assert result.dags == []
    assert len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert error.file == str(path.resolve())
    return error, line, path


HEADER = """
from datetime import datetime, timedelta
from hareflow import DAG, BashTask, task
"""


def test_duplicate_task_id_is_reported_with_file_and_line(tmp_path: Path) -> None:
    error, line, path = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("daily_sales"):
    BashTask("extract", "echo 1")
    BashTask("extract", "echo 2")  # <- here
""",
    )
    assert error.line == line
    first = error.message.splitlines()[0]
    assert f"{path.resolve()}:{line}: duplicate task id 'extract' in DAG 'daily_sales'" in first


def test_explicit_task_id_on_the_decorator_cannot_be_reused(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("d"):
    @task(task_id="x")
    def f():
        return 1
    f()
    f()  # <- here
""",
    )
    assert error.line == line
    assert "duplicate task id 'x'" in error.message


def test_errors_in_custom_task_types_point_at_the_statement_creating_the_task(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
from hareflow import BaseTask

class Greet(BaseTask):
    def __init__(self, task_id, name, **settings):
        self.name = name
        super().__init__(task_id, **settings)

    def execute(self, ctx):
        return self.name

with DAG("custom"):
    Greet("hello", "world")
    Greet("hello", "again", queue="q")  # <- here
""",
    )
    assert error.line == line
    assert "duplicate task id 'hello'" in error.message


def test_cycle_is_reported_at_the_closing_dependency_with_its_path(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("cyclic"):
    a = BashTask("a", "true")
    b = BashTask("b", "true")
    c = BashTask("c", "true")
    a >> b >> c
    c >> a  # <- here
""",
    )
    assert error.line == line
    assert "creates a cycle in DAG 'cyclic': c -> a -> b -> c" in error.message


def test_a_task_depending_on_itself_is_a_cycle(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("selfish"):
    a = BashTask("a", "true")
    a >> a  # <- here
""",
    )
    assert error.line == line
    assert "a -> a" in error.message


def test_invalid_cron_expression_is_reported_at_the_dag(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("bad_cron", schedule="61 * * * *", start_date=datetime(2026, 1, 1)):  # <- here
    BashTask("a", "true")
""",
    )
    assert error.line == line
    assert "invalid cron expression '61 * * * *'" in error.message


def test_unknown_schedule_preset_lists_the_valid_ones(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
DAG("bad_preset", schedule="@fortnightly", start_date=datetime(2026, 1, 1))  # <- here
""",
    )
    assert error.line == line
    assert "@fortnightly" in error.message and "@daily" in error.message


def test_unknown_trigger_rule_lists_the_valid_ones(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("rules"):
    BashTask("a", "true", trigger_rule="sometimes")  # <- here
""",
    )
    assert error.line == line
    assert "unknown trigger rule 'sometimes'" in error.message
    assert "all_success, all_done, one_success, one_failed, none_failed, all_failed" in error.message


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ('DAG("bad id!")', "invalid dag_id 'bad id!'"),
        ('DAG("x" * 251)', "invalid dag_id"),
        ('with DAG("ok"):\n    BashTask("bad/id", "true")', "invalid task_id 'bad/id'"),
        ('with DAG("ok"):\n    BashTask("a", "true", queue="no spaces")', "invalid queue name 'no spaces'"),
        ('with DAG("ok"):\n    BashTask("a", "true", retries=-1)', "retries of task 'a' must be >= 0"),
        ('with DAG("ok"):\n    BashTask("a", "true", retrys=2)', "unknown task setting 'retrys'"),
        (
            'DAG("ok", default_args={"email_on_retry": True})',
            "unknown task setting 'email_on_retry' in default_args",
        ),
        ('with DAG("ok"):\n    BashTask("a", "true", pool_slots=0)', "pool_slots of task 'a' must be >= 1"),
        ('DAG("ok", schedule="@daily")', "has schedule '@daily' but no start_date"),
        ('DAG("ok", timezone="Mars/Olympus")', "unknown time zone 'Mars/Olympus'"),
        ('DAG("ok", params={"when": datetime(2026, 1, 1)})', "params of DAG 'ok' must be JSON-serialisable"),
        ('BashTask("orphan", "true")', "task 'orphan' was created outside a DAG"),
    ],
)
def test_invalid_definitions_are_reported_with_file_and_line(
    tmp_path: Path, statement: str, expected: str
) -> None:
    lines = statement.splitlines()
    lines[-1] += "  " + MARK
    error, line, _ = _single_error(tmp_path, HEADER + "\n".join(lines) + "\n")
    assert error.line == line
    assert expected in error.message


def test_unknown_setting_in_the_task_decorator_is_reported_at_the_decorator(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("deco"):
    @task(queue="q", color="red")  # <- here
    def f():
        return 1
""",
    )
    assert error.line == line
    assert "unknown task setting 'color'" in error.message


def test_decorated_task_called_outside_a_dag_is_reported(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
@task
def lonely():
    return 1

lonely()  # <- here
""",
    )
    assert error.line == line
    assert "task 'lonely' was created outside a DAG" in error.message


def test_non_json_literal_argument_is_reported(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("literals"):
    @task
    def when(moment):
        return str(moment)
    when(datetime(2026, 1, 1))  # <- here
""",
    )
    assert error.line == line
    assert "argument 'moment' of task 'when' is a datetime, which is not JSON-serialisable" in error.message


def test_wrong_arguments_for_the_task_function_are_reported(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("arity"):
    @task
    def one(value):
        return value
    one(1, 2)  # <- here
""",
    )
    assert error.line == line
    assert "cannot call one() for task 'one'" in error.message


def test_dependency_between_dags_is_reported(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("first"):
    a = BashTask("a", "true")
with DAG("second"):
    b = BashTask("b", "true")
a >> b  # <- here
""",
    )
    assert error.line == line
    assert "tasks of different DAGs" in error.message


def test_duplicate_dag_id_in_one_file_is_reported(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("twice"):
    BashTask("a", "true")
with DAG("twice"):  # <- here
    BashTask("a", "true")
""",
    )
    assert error.line == line
    assert "duplicate dag_id 'twice'" in error.message


def test_syntax_error_is_reported_with_its_line(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
with DAG("broken"):
    BashTask("a", "true"  # <- here
""",
    )
    assert error.line is not None and line <= error.line <= line + 1
    assert error.message.startswith("SyntaxError")


def test_exception_at_import_is_reported_at_the_raising_line_of_the_file(tmp_path: Path) -> None:
    error, line, _ = _single_error(
        tmp_path,
        HEADER
        + """
def helper():
    return {}["missing"]  # <- here

with DAG("raises"):
    helper()
""",
    )
    assert error.line == line
    assert error.message.startswith("KeyError: 'missing'")
    assert "Traceback (most recent call last)" in error.message


def test_missing_import_is_reported(tmp_path: Path) -> None:
    error, line, _ = _single_error(tmp_path, "import not_a_module_anywhere  # <- here\n")
    assert error.line == line
    assert "ModuleNotFoundError" in error.message


def test_system_exit_in_a_dag_file_is_reported_not_propagated(tmp_path: Path) -> None:
    error, line, _ = _single_error(tmp_path, "import sys\nsys.exit(3)  # <- here\n")
    assert error.line == line


def test_errors_raised_in_process_carry_the_calling_file_and_line() -> None:
    with DAG("in_process"):
        BashTask("a", "true")
        with pytest.raises(DagDefinitionError) as info:
            line = info_line() + 1
            BashTask("a", "true")
    assert info.value.file == __file__
    assert info.value.line == line
    assert str(info.value) == f"{__file__}:{line}: duplicate task id 'a' in DAG 'in_process'"


def info_line() -> int:
    import sys

    return sys._getframe(1).f_lineno


def test_decorator_settings_are_checked_when_decorating() -> None:
    with pytest.raises(DagDefinitionError, match="unknown task setting 'bogus'"):
        task(bogus=1)


def test_definition_errors_survive_pickling() -> None:
    error = DagDefinitionError("boom", file="/x.py", line=4)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.file, copy.line, str(copy)) == ("boom", "/x.py", 4, "/x.py:4: boom")
