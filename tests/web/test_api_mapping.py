"""The JSON API on a mapped task: every instance listed with its map index, one instance read,
marked, cleared and its log read with ``?map_index=``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hareflow.common.db import DagRun, TaskInstance, TaskLog, TaskResult
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client, path_of


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("op")


def _mapped_run(dag_factory: Any, run_factory: Any, sessions: sessionmaker[Session]) -> tuple[str, str]:
    """A finished run whose task ``transform`` is mapped into three instances, the middle one failed."""
    dag_id = dag_factory()
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
