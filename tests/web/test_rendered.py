"""Rendered template fields: the task-instance page's "Rendered" section and the REST API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hareflow.common.db import TaskInstance, TaskRendered
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client, path_of

XSS = "<script>alert(1)</script>"


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("viewer")


def store_rendered(
    sessions: sessionmaker[Session], dag_id: str, run_id: str, task_id: str, fields: dict
) -> None:
    with sessions() as s, s.begin():
        ti = s.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        ).one()
        s.add(
            TaskRendered(ti_id=ti.id, try_number=ti.try_number, fields_json=json.dumps(fields), created_at=T0)
        )


def test_the_task_instance_page_shows_the_rendered_fields_escaped(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, tis={"extract": "success", "load": "success"})
    fields = {"bash_command": f"echo 2026-03-01 {XSS}", "env": {"DAY": "20260301"}}
    store_rendered(web_sessions, dag_id, run_id, "extract", fields)

    html = client.get(path_of("dags", dag_id, "runs", run_id, "tasks", "extract")).text
    plain = client.get(path_of("dags", dag_id, "runs", run_id, "tasks", "load")).text

    assert "<h3>Rendered" in html and 'id="ti-rendered"' in html
    assert "echo 2026-03-01 &lt;script&gt;alert(1)&lt;/script&gt;" in html and XSS not in html
    assert "<th>env</th>" in html and "20260301" in html
    # A try that rendered nothing has the section hidden (the page fills it live when a try ends).
    assert 'id="ti-rendered-box" hidden' in plain and 'id="ti-rendered-box" hidden' not in html


def test_the_api_gives_the_latest_try_s_rendered_fields_or_null(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, tis={"extract": "success", "load": "success"})
    store_rendered(web_sessions, dag_id, run_id, "extract", {"bash_command": "echo hi"})

    ti = client.api("GET", path_of("dags", dag_id, "runs", run_id, "tasks", "extract")).json
    other = client.api("GET", path_of("dags", dag_id, "runs", run_id, "tasks", "load")).json

    assert ti["rendered"] == {"bash_command": "echo hi"}
    assert other["rendered"] is None
