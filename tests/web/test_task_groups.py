"""Task groups in the grid and graph JSON, and task ids with dots in every URL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hareflow.common.dag import DAG, BashTask, TaskGroup, serialize_dag
from hareflow.common.dag.serialize import dag_hash
from hareflow.common.db import Dag
from hareflow.web.task_groups import group_state
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import Client, make_dag, path_of, unique


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("op")


def grouped_dag(sessions: sessionmaker[Session]) -> str:
    """start >> extract(db.rows, api.pull) >> load, stored as the DAG processor would store it."""
    dag_id = unique("grouped")
    with DAG(dag_id) as dag:
        start = BashTask("start", "true")
        with TaskGroup("extract", tooltip="read the sources") as extract:
            with TaskGroup("db"):
                BashTask("rows", "true")
            BashTask("pull", "true")
        load = BashTask("load", "true")
        start >> extract >> load
    data = serialize_dag(dag)
    make_dag(sessions, dag_id)
    with sessions() as s, s.begin():
        row = s.get(Dag, dag_id)
        assert row is not None
        row.serialized = data
        row.dag_hash = dag_hash(data)
    return dag_id


def test_the_grid_lists_each_group_above_its_tasks_with_a_state_per_run(
    client: Client, web_sessions: sessionmaker[Session], run_factory: Any
) -> None:
    dag_id = grouped_dag(web_sessions)
    done = run_factory(
        dag_id, tis={t: "success" for t in ("start", "extract.db.rows", "extract.pull", "load")}
    )
    broken = run_factory(dag_id, state="running", tis={"start": "success", "extract.db.rows": "failed"})

    grid = client.api("GET", f"/dags/{dag_id}/grid").json

    assert [(r["kind"], r["id"], r["depth"], r["group"]) for r in grid["rows"]] == [
        ("task", "start", 0, None),
        ("group", "extract", 0, None),
        ("group", "extract.db", 1, "extract"),
        ("task", "extract.db.rows", 2, "extract.db"),
        ("task", "extract.pull", 1, "extract"),
        ("task", "load", 0, None),
    ]
    by_id = {g["id"]: g for g in grid["groups"]}
    assert by_id["extract"] == {
        "id": "extract",
        "label": "extract",
        "parent": None,
        "tooltip": "read the sources",
        "tasks": ["extract.db.rows", "extract.pull"],
    }
    assert by_id["extract.db"]["label"] == "db" and by_id["extract.db"]["tasks"] == ["extract.db.rows"]
    assert grid["group_states"][done] == {"extract": "success", "extract.db": "success"}
    assert grid["group_states"][broken] == {"extract": "failed", "extract.db": "failed"}


def test_the_graph_page_embeds_each_tasks_group_and_the_groups(
    client: Client, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = grouped_dag(web_sessions)

    html = client.get(f"/dags/{dag_id}/graph").text

    graph = json.loads(html.split('id="graph-data">')[1].split("</script>")[0])
    assert {n["id"]: n["group"] for n in graph["nodes"]} == {
        "start": None,
        "extract.db.rows": "extract.db",
        "extract.pull": "extract",
        "load": None,
    }
    assert [(g["id"], g["parent"], len(g["tasks"])) for g in graph["groups"]] == [
        ("extract", None, 2),
        ("extract.db", "extract", 1),
    ]
    assert sorted(graph["edges"]) == [
        ["extract.db.rows", "load"],
        ["extract.pull", "load"],
        ["start", "extract.db.rows"],
        ["start", "extract.pull"],
    ]


def test_a_dag_stored_before_groups_existed_shows_flat_rows(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    run_factory(dag_id, tis={"extract": "success"})

    grid = client.api("GET", f"/dags/{dag_id}/grid").json
    graph = client.get(f"/dags/{dag_id}/graph").text

    assert [(r["kind"], r["id"], r["depth"]) for r in grid["rows"]] == [
        ("task", "extract", 0),
        ("task", "transform", 0),
        ("task", "load", 0),
    ]
    assert grid["groups"] == [] and all(states == {} for states in grid["group_states"].values())
    assert json.loads(graph.split('id="graph-data">')[1].split("</script>")[0])["groups"] == []


def test_task_ids_with_dots_work_in_page_api_and_log_urls(
    client: Client, web_sessions: sessionmaker[Session], run_factory: Any
) -> None:
    dag_id = grouped_dag(web_sessions)
    run_id = run_factory(
        dag_id,
        tis={"extract.db.rows": "success"},
        logs={"extract.db.rows": [(1, 1, "read 3 rows\n")]},
        results={"extract.db.rows": {"n": 3}},
    )
    task_path = path_of("dags", dag_id, "runs", run_id, "tasks", "extract.db.rows")

    page = client.get(task_path)
    api = client.api("GET", task_path)
    logs = client.api("GET", f"{task_path}/logs/1")
    cleared = client.api("POST", f"{task_path}/clear", {"dry_run": True})

    assert page.status_code == 200 and "extract.db.rows" in page.text
    assert api.status_code == 200 and api.json["task_id"] == "extract.db.rows"
    assert [c["text"] for c in logs.json["chunks"]] == ["read 3 rows\n"]
    assert [c["task_id"] for c in cleared.json["cleared"]] == ["extract.db.rows"]


@pytest.mark.parametrize(
    ("states", "shown"),
    [
        (["success", "success"], "success"),
        (["success", "failed", "running"], "failed"),
        (["success", "up_for_retry", "running"], "up_for_retry"),
        (["success", "running", "queued"], "running"),
        (["success", None], "none"),
        (["skipped", "success"], "skipped"),
        (["upstream_failed", "success"], "upstream_failed"),
    ],
)
def test_a_groups_state_is_its_most_urgent_members_state(states: list[str | None], shown: str) -> None:
    assert group_state(states) == shown
