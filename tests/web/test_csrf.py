"""CSRF: every state-changing request authenticated by the session cookie needs the session's
token; a request made with an API token does not."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from hareflow.common.db import Dag
from hareflow.web.security import issue_token
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import Client


def paused(sessions: sessionmaker[Session], dag_id: str) -> bool:
    with sessions() as s:
        dag = s.get(Dag, dag_id)
        assert dag is not None
        return dag.is_paused


def test_a_form_post_without_the_token_is_refused_and_changes_nothing(
    op: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()

    response = op.form(f"/dags/{dag_id}/pause", {"paused": "true"}, csrf=False)

    assert response.status_code == 400
    assert "security token" in response.text
    assert paused(web_sessions, dag_id) is False


def test_a_form_post_with_another_sessions_token_is_refused(
    op: Client, as_role: Any, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    other = as_role("op")

    response = op.http.post(f"/dags/{dag_id}/pause", data={"paused": "true", "csrf_token": other.csrf})

    assert response.status_code == 400
    assert paused(web_sessions, dag_id) is False


@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT", "DELETE"])
def test_a_cookie_authenticated_api_write_without_the_header_is_refused(
    op: Client, dag_factory: Any, method: str
) -> None:
    dag_id = dag_factory()

    response = op.api(method, f"/dags/{dag_id}", {"is_paused": True}, csrf=False)

    assert response.status_code == 400
    assert response.json == {"error": response.json["error"], "status": 400}
    assert "security token" in response.json["error"]


def test_the_login_form_itself_needs_the_token(anon: Any) -> None:
    response = anon.post("/login", data={"username": "admin", "password": "whatever-password"})

    assert response.status_code == 400


def test_a_token_authenticated_api_write_needs_no_csrf_header(
    app: Flask, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    with web_sessions() as s, s.begin():
        token = issue_token(s, "op")

    response = app.test_client().patch(
        f"/api/v1/dags/{dag_id}", json={"is_paused": True}, headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 200
    assert paused(web_sessions, dag_id) is True


def test_the_header_token_works_for_cookie_authenticated_api_writes(
    op: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()

    response = op.api("PATCH", f"/dags/{dag_id}", {"is_paused": True})

    assert response.status_code == 200
    assert paused(web_sessions, dag_id) is True
