"""Every user changes their own password from the page linked in the header."""

from __future__ import annotations

import pytest
from flask import Flask
from hareflow.common.db import AuditLog
from hareflow.common.users import create_user, verify_password
from hareflow.web.security import issue_token
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import PASSWORD, Client, login, unique

URL = "/account/password"


def new_user(web_sessions: sessionmaker[Session], role: str) -> str:
    name = unique(role)
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, role)
    return name


def change(client: Client, current: str, new: str, again: str | None = None, **kw: object):  # noqa: ANN201
    data = {
        "current_password": current,
        "new_password": new,
        "new_password_again": new if again is None else again,
    }
    return client.form(URL, data, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", ["admin", "op", "viewer"])
def test_every_role_changes_their_own_password_and_keeps_working_in_this_session(
    app: Flask, web_sessions: sessionmaker[Session], role: str
) -> None:
    name = new_user(web_sessions, role)
    client = login(app.test_client(), name)
    page = client.get("/dags")
    assert f'href="{URL}"' in page.text and "Change password" in page.text  # linked from the header
    assert client.get(URL).status_code == 200

    response = change(client, PASSWORD, "a brand new password")

    assert response.status_code == 302 and response.headers["Location"] == "/dags"
    after = client.get("/dags")
    assert after.status_code == 200 and "password changed" in after.text
    with web_sessions() as s:
        assert verify_password(s, name, PASSWORD) is None
        assert verify_password(s, name, "a brand new password") is not None
        [row] = s.scalars(
            select(AuditLog).where(AuditLog.action == "user_set_password", AuditLog.username == name)
        )
    assert row.details == {"user": name, "origin": "web 127.0.0.1"}
    login(app.test_client(), name, "a brand new password")


def test_the_users_other_sessions_end_when_the_password_changes(
    app: Flask, web_sessions: sessionmaker[Session]
) -> None:
    name = new_user(web_sessions, "viewer")
    here, elsewhere = login(app.test_client(), name), login(app.test_client(), name)
    assert change(here, PASSWORD, "changed from here").status_code == 302
    assert here.get("/dags").status_code == 200
    assert elsewhere.get("/dags").status_code == 302


@pytest.mark.parametrize(
    ("current", "new", "again", "error"),
    [
        ("not my password", "a brand new password", None, "the current password is wrong"),
        (PASSWORD, "a brand new password", "a different new one", "the two new passwords differ"),
        (PASSWORD, "short", None, "at least 8 characters"),
    ],
)
def test_a_wrong_current_password_a_mismatch_or_a_short_password_changes_nothing(
    app: Flask, web_sessions: sessionmaker[Session], current: str, new: str, again: str | None, error: str
) -> None:
    name = new_user(web_sessions, "op")
    client = login(app.test_client(), name)

    response = change(client, current, new, again)

    assert response.status_code == 400 and error in response.text
    assert client.get("/dags").status_code == 200  # still logged in
    with web_sessions() as s:
        assert verify_password(s, name, PASSWORD) is not None


def test_the_form_needs_the_sessions_csrf_token(app: Flask, web_sessions: sessionmaker[Session]) -> None:
    name = new_user(web_sessions, "viewer")
    client = login(app.test_client(), name)

    response = change(client, PASSWORD, "a brand new password", csrf=False)

    assert response.status_code == 400
    with web_sessions() as s:
        assert verify_password(s, name, PASSWORD) is not None


def test_an_anonymous_visitor_is_sent_to_log_in_and_an_api_token_may_not_change_a_password(
    app: Flask, web_sessions: sessionmaker[Session]
) -> None:
    name = new_user(web_sessions, "admin")
    with web_sessions() as s, s.begin():
        token = issue_token(s, name)
    anon = app.test_client()
    assert anon.get(URL).headers["Location"].startswith("/login?next=")
    data = {"current_password": PASSWORD, "new_password": "x" * 12, "new_password_again": "x" * 12}
    refused = anon.post(URL, data=data, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403
    with web_sessions() as s:
        assert verify_password(s, name, PASSWORD) is not None
