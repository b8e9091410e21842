"""A mapped task in the web: the JSON API (every instance listed with its map index, one instance
read, marked, cleared and its log read with ``?map_index=``) and the pages (the grid's summary and
instances, the graph's mapped flag, the task-instance page of one map index)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hareflow.common.db import Dag, DagRun, TaskInstance, TaskLog, TaskResult
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client, path_of


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("op")


def _mapped_run(dag_factory: Any, run_factory: Any, sessions: sessionmaker[Session]) -> tuple[str, str]:
    """A finished run whose task ``transform`` is mapped into three instances, the middle one failed."""
    dag_id = dag_factory()
    with sessions() as s, s.begin():
        dag = s.get(Dag, dag_id)
        serialized = dict(dag.serialized)
        serialized["tasks"] = [
            {**t, "expand": {"kind": "product", "args": [{"name": "x", "task": "extract"}]}}
            if t["task_id"] == "transform"
            else t
            for t in serialized["tasks"]
        ]
        dag.serialized = serialized
    run_id = run_factory(dag_id, state="failed", tis={"extract": "success", "load": "upstream_failed"})
    with sessions() as s, s.begin():
        run_pk = s.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        for map_index, state in enumerate(["success", "failed", "success"]):
            ti = TaskInstance(
                run_pk=run_pk,
                dag_id=dag_id,
                run_id=run_id,
                task_id="transform",
                map_index=map_index,
                state=state,
                try_number=1,
                max_tries=1,
                queue="default",
                priority=1,
                pool_slots=1,
                updated_at=T0,
            )
            s.add(ti)
            s.flush()
            s.add(TaskLog(ti_id=ti.id, try_number=1, seq=1, text=f"instance {map_index}\n", created_at=T0))
            s.add(TaskResult(ti_id=ti.id, try_number=1, value_json=json.dumps(map_index * 10), created_at=T0))
    return dag_id, run_id


def test_task_instances_carry_their_map_index_and_one_instance_is_read_by_map_index(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id, run_id = _mapped_run(dag_factory, run_factory, web_sessions)
    base = path_of("dags", dag_id, "runs", run_id, "tasks")

    listed = client.api("GET", base).json["task_instances"]
    only_transform = client.api("GET", f"{base}?task_id=transform").json["task_instances"]
    only_index = client.api("GET", f"{base}?task_id=transform&map_index=2").json["task_instances"]
    second = client.api("GET", f"{base}/transform?map_index=1").json
    missing = client.api("GET", f"{base}/transform?map_index=9")
    log = client.api("GET", f"{base}/transform/logs/1?map_index=2").json

    assert [(t["task_id"], t["map_index"]) for t in listed] == [
        ("extract", -1),
        ("transform", 0),
        ("transform", 1),
        ("transform", 2),
        ("load", -1),
    ]
    assert [t["map_index"] for t in only_transform] == [0, 1, 2]
    assert [(t["map_index"], t["state"]) for t in only_index] == [(2, "success")]
    assert (second["map_index"], second["state"], second["result"]) == (1, "failed", 10)
    assert missing.status_code == 404 and "map index 9" in missing.json["error"]
    assert [c["text"] for c in log["chunks"]] == ["instance 2\n"]


def test_one_map_index_is_cleared_and_marked_on_its_own(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id, run_id = _mapped_run(dag_factory, run_factory, web_sessions)
    url = path_of("dags", dag_id, "runs", run_id, "tasks", "transform")

    cleared = client.api("POST", f"{url}/clear?map_index=1", {}).json
    ambiguous = client.api("PATCH", url, {"state": "success"})
    marked = client.api("PATCH", f"{url}?map_index=0", {"state": "failed"}).json

    assert [(r["task_id"], r["map_index"], r["state"]) for r in cleared["cleared"]] == [
        ("transform", 1, "failed")
    ]
    assert ambiguous.status_code == 400 and "mapped into 3 instances" in ambiguous.json["error"]
    assert (marked["map_index"], marked["state"]) == (0, "failed")
    with web_sessions() as s:
        states = s.execute(
            select(TaskInstance.map_index, TaskInstance.state)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.task_id == "transform")
            .order_by(TaskInstance.map_index)
        ).all()
    assert [tuple(r) for r in states] == [(0, "failed"), (1, "none"), (2, "success")]


# -- pages ---------------------------------------------------------------------------------------------


def test_the_grid_shows_a_mapped_task_as_one_summary_per_run_with_its_instances(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id, run_id = _mapped_run(dag_factory, run_factory, web_sessions)

    grid = client.api("GET", path_of("dags", dag_id, "grid")).json
    graph_page = client.get(path_of("dags", dag_id, "graph")).text

    assert grid["tasks"] == ["extract", "transform", "load"]
    assert grid["mapped_tasks"] == ["transform"]
    assert grid["mapped"][run_id] == {"transform": ["success", "failed", "success"]}
    assert grid["states"][run_id]["transform"] == "failed"  # the summary: one instance failed
    assert '"mapped": true' in graph_page and '"mapped": false' in graph_page


def test_the_task_instance_page_shows_one_map_index_and_links_to_the_others(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id, run_id = _mapped_run(dag_factory, run_factory, web_sessions)
    url = path_of("dags", dag_id, "runs", run_id, "tasks", "transform")

    second = client.get(url + "?map_index=1").text
    missing = client.get(url + "?map_index=5")

    assert 'data-map-index="1"' in second and '<span class="map-index">[1]</span>' in second
    assert "instance 1\n" in second and "instance 0" not in second
    assert second.count('class="instance ') == 3 and "map_index=2" in second
    assert '<input type="hidden" name="map_index" value="1">' in second
    assert missing.status_code == 404


def test_clearing_one_instance_from_its_page_clears_only_that_instance(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id, run_id = _mapped_run(dag_factory, run_factory, web_sessions)

    response = client.form(
        path_of("dags", dag_id, "runs", run_id, "clear"),
        {"task_id": "transform", "map_index": "1", "downstream": "true"},
    )

    assert response.status_code == 302
    with web_sessions() as s:
        states = s.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
            .where(TaskInstance.dag_id == dag_id)
            .order_by(TaskInstance.task_id, TaskInstance.map_index)
        ).all()
    assert [tuple(r) for r in states] == [
        ("extract", -1, "success"),
        ("load", -1, "none"),
        ("transform", 0, "success"),
        ("transform", 1, "none"),
        ("transform", 2, "success"),
    ]


def test_the_run_page_lists_each_mapped_instance_with_its_map_index(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id, run_id = _mapped_run(dag_factory, run_factory, web_sessions)

    html = client.get(path_of("dags", dag_id, "runs", run_id)).text

    assert html.count('data-task="transform" data-map-index=') == 3
    assert '<span class="map-index">[2]</span>' in html and "tasks/transform?map_index=2" in html


def test_clearing_a_mapped_task_without_a_map_index_clears_every_instance(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id, run_id = _mapped_run(dag_factory, run_factory, web_sessions)

    result = client.api(
        "POST", path_of("dags", dag_id, "runs", run_id, "tasks", "transform", "clear"), {}
    ).json

    assert sorted(r["map_index"] for r in result["cleared"]) == [0, 1, 2]
    assert result["runs_requeued"] == [run_id]
