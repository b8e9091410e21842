"""Every change made through the web is audited with the client's address, whichever action it
is: the operations in ``common`` pick the request's origin up without each door passing it."""

from __future__ import annotations

from typing import Any

from hareflow.common.config import Settings
from hareflow.common.db import AuditLog
from hareflow.common.secrets.crypto import ensure_key_file
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import unique


def _rows(sessions: sessionmaker[Session], action: str, **where: Any) -> list[AuditLog]:
    with sessions() as s:
        query = select(AuditLog).where(AuditLog.action == action)
        for name, value in where.items():
            query = query.where(getattr(AuditLog, name) == value)
        return list(s.scalars(query))


def test_pausing_from_a_page_and_setting_a_variable_from_the_api_record_the_client_address(
    as_role: Any, dag_factory: Any, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    ensure_key_file(web_settings.home)  # variables are stored encrypted
    op = as_role("op")
    dag_id = dag_factory()
    key = unique("var")

    op.form(f"/dags/{dag_id}/pause", {"paused": "true"})
    response = op.api("POST", "/variables", {"key": key, "value": "1"})
    assert response.status_code == 201, response.json

    [paused] = _rows(web_sessions, "pause", dag_id=dag_id)
    [created] = [r for r in _rows(web_sessions, "variable_create") if r.details.get("key") == key]
    assert paused.username == "op" and paused.details == {"origin": "web 127.0.0.1"}
    assert created.username == "op" and created.details["origin"] == "web 127.0.0.1"
