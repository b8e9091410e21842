"""DAG and task documentation: ``doc_md`` on a DAG and on tasks reaches the serialized DAG; Airflow's
other documentation formats fail at parse time, naming what to write instead."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hareflow.common.dag import DAG, BashTask, DagDefinitionError, load_dag_file, serialize_dag, task
from hareflow.common.dag.serialize import SerializedDag


def test_doc_md_on_a_dag_and_its_tasks_is_in_the_serialized_dag() -> None:
    with DAG(
        "documented", doc_md="# Daily sales\nRuns **nightly**.", default_args={"doc_md": "inherited"}
    ) as dag:
        BashTask("report", "echo hi", doc_md="Sends the *report*.", doc="plain text")
        BashTask("other", "echo hi")

        @task(doc_md="Adds `one`.")
        def add():
            """The docstring stays the plain-text doc."""
            return 1

        add()

    data = serialize_dag(dag)
    tasks = {t["task_id"]: t for t in data["tasks"]}
    assert data["doc_md"] == "# Daily sales\nRuns **nightly**."
    assert (tasks["report"]["doc_md"], tasks["report"]["doc"]) == ("Sends the *report*.", "plain text")
    assert tasks["other"]["doc_md"] == "inherited"  # from default_args, like any task setting
    assert (tasks["add"]["doc_md"], tasks["add"]["doc"]) == (
        "Adds `one`.",
        "The docstring stays the plain-text doc.",
    )
    assert SerializedDag.from_dict(data).to_dict() == data


def test_a_task_without_doc_md_serializes_as_before() -> None:
    with DAG("plain") as dag:
        BashTask("only", "true")
    assert "doc_md" not in serialize_dag(dag)["tasks"][0]  # so existing DAGs keep their hash


def test_doc_md_must_be_text() -> None:
    with DAG("typed"), pytest.raises(DagDefinitionError, match="doc_md of task 'bad' must be a string"):
        BashTask("bad", "true", doc_md=42)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["doc_rst", "doc_json", "doc_yaml"])
def test_other_documentation_formats_on_a_task_fail_naming_doc_md(name: str) -> None:
    with DAG("formats"), pytest.raises(DagDefinitionError) as raised:
        BashTask("t", "true", **{name: "text"})  # type: ignore[arg-type]
    assert f"{name} is not supported" in str(raised.value) and "doc_md" in str(raised.value)


def test_an_unsupported_documentation_format_is_an_import_error_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "formats.py"
    path.write_text(
        textwrap.dedent(
            """
            from hareflow import DAG, BashTask
            with DAG("formats"):
                BashTask("t", "true", doc_rst="*text*")
            with DAG("dag_level", doc_rst="*text*"):
                pass
            """
        )
    )
    result = load_dag_file(path)
    assert result.dags == []
    assert "doc_rst is not supported" in result.errors[0].message and result.errors[0].line == 4


def test_a_dag_level_doc_rst_fails_at_parse_time(tmp_path: Path) -> None:
    path = tmp_path / "dag_level.py"
    path.write_text('from hareflow import DAG\nwith DAG("dag_level", doc_rst="*text*"):\n    pass\n')
    result = load_dag_file(path)
    assert result.dags == [] and "doc_rst" in result.errors[0].message
