"""Serialized DAGs round-trip exactly, and task results are JSON with a size limit."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hareflow.common.dag import (
    DAG,
    BashTask,
    SerializedDag,
    TaskResultNotSerializable,
    TaskResultTooLarge,
    dag_hash,
    decode_result,
    encode_result,
    find_dag_files,
    load_dag_file,
    serialize_dag,
    task,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dags"


def _sample_dag() -> DAG:
    with DAG(
        "sample",
        schedule="0 2 * * *",
        start_date=datetime(2026, 1, 1),
        end_date=datetime(2026, 12, 31),
        timezone="Europe/Amsterdam",
        params={"region": "north"},
        tags=["a", "b"],
        owner="data",
        description="desc",
        doc_md="# doc",
        max_active_runs=2,
        max_active_tasks=3,
    ) as dag:

        @task(retries=3, retry_exponential_backoff=True, max_retry_delay=timedelta(minutes=10), pool="p")
        def load(rows):
            return rows

        @task
        def rows():
            return [1]

        report = BashTask("report", "echo hi", trigger_rule="all_done", priority=9, doc="reports")
        load(rows()) >> report
    return dag


def test_serialized_dag_has_the_documented_shape() -> None:
    data = serialize_dag(_sample_dag())
    assert data["version"] == 1
    assert data["fileloc"] == __file__
    assert data["schedule"] == "0 2 * * *"
    assert data["timezone"] == "Europe/Amsterdam"
    assert data["start_date"] == "2026-01-01T00:00:00+01:00"
    assert data["end_date"] == "2026-12-31T00:00:00+01:00"
    assert [t["task_id"] for t in data["tasks"]] == ["rows", "load", "report"]
    load = data["tasks"][1]
    assert load["upstream"] == ["rows"] and load["input_tasks"] == ["rows"]
    assert load["retries"] == 3 and load["retry_exponential_backoff"] is True
    assert load["max_retry_delay"] == 600.0 and load["retry_delay"] == 300.0
    assert load["pool"] == "p" and load["task_type"] == "PythonTask" and load["bash_command"] is None
    report = data["tasks"][2]
    assert report["task_type"] == "BashTask" and report["bash_command"] == "echo hi"
    assert report["trigger_rule"] == "all_done" and report["priority"] == 9 and report["doc"] == "reports"
    json.dumps(data)


def test_serialized_dag_round_trips_exactly() -> None:
    data = serialize_dag(_sample_dag())
    restored = SerializedDag.from_dict(json.loads(json.dumps(data)))
    assert restored.to_dict() == data
    assert restored.start_date == datetime.fromisoformat("2026-01-01T00:00:00+01:00")
    assert restored.get_task("load").max_tries == 4
    assert restored.downstream_map() == {"rows": ("load",), "load": ("report",), "report": ()}
    assert restored.upstream_map()["report"] == ("load",)
    assert [t.task_id for t in restored.roots] == ["rows"]


@pytest.mark.parametrize("path", find_dag_files(EXAMPLES), ids=lambda p: p.name)
def test_example_dags_load_and_round_trip(path: Path) -> None:
    result = load_dag_file(path)
    assert result.errors == []
    assert result.dags
    for dag in result.dags:
        data = serialize_dag(dag)
        assert dag.start_date is not None and dag.start_date.year == 2026
        assert SerializedDag.from_dict(json.loads(json.dumps(data))).to_dict() == data
        assert dag_hash(data) == dag_hash(SerializedDag.from_dict(data).to_dict())


def test_only_one_example_catches_up() -> None:
    catching_up = [d.dag_id for p in find_dag_files(EXAMPLES) for d in load_dag_file(p).dags if d.catchup]
    assert catching_up == ["example_etl"]


def test_dag_hash_changes_when_the_dag_changes() -> None:
    data = serialize_dag(_sample_dag())
    changed = json.loads(json.dumps(data))
    changed["tasks"][0]["retries"] = 7
    assert dag_hash(data) == dag_hash(json.loads(json.dumps(data)))
    assert dag_hash(data) != dag_hash(changed)
    assert len(dag_hash(data)) == 64


def test_unknown_format_version_is_refused() -> None:
    data = serialize_dag(_sample_dag())
    data["version"] = 2
    with pytest.raises(ValueError, match="unsupported serialized DAG version 2"):
        SerializedDag.from_dict(data)


def test_results_are_encoded_as_compact_json() -> None:
    text = encode_result({"a": [1, 2.5, None, "é"]}, 1000, task_id="t")
    assert text == '{"a":[1,2.5,null,"é"]}'
    assert decode_result(text) == {"a": [1, 2.5, None, "é"]}
    assert decode_result(None) is None


def test_oversized_result_is_refused_with_both_sizes() -> None:
    with pytest.raises(TaskResultTooLarge) as info:
        encode_result("x" * 2000, 1024, task_id="big")
    assert (info.value.size, info.value.limit) == (2002, 1024)
    assert str(info.value).startswith(
        "result of task 'big' is 2,002 bytes of JSON, over the limit of 1,024 bytes"
    )


@pytest.mark.parametrize(
    ("value", "type_name"),
    [({"when": datetime(2026, 1, 1)}, "datetime"), ([{1, 2}], "set"), (float("nan"), "NaN")],
)
def test_unserializable_result_names_the_task_and_type(value: object, type_name: str) -> None:
    with pytest.raises(TaskResultNotSerializable) as info:
        encode_result(value, 10_000, task_id="odd")
    assert isinstance(info.value, TypeError)
    assert "task 'odd'" in str(info.value) and type_name in str(info.value)
