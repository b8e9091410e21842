"""Roles on the server: every route states the role it needs, and each role is allowed or refused
accordingly (admin > op > viewer), whatever the page shows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from hareflow.common.db import Backfill
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import PASSWORD, Client, add_user, unique

RANK = {"viewer": 0, "op": 1, "admin": 2}
PUBLIC = {"static", "auth.login", "auth.logout", "pages.index", "health", "metrics"}
#: State-changing routes that touch only the caller's own account: every role may use them.
OWN_ACCOUNT = {"auth.change_password"}


def test_every_route_declares_the_role_it_needs(app: Flask) -> None:
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        view = app.view_functions[rule.endpoint]
        if not hasattr(view, "required_role"):
            missing.append(rule.rule)
    assert missing == []


def test_every_state_changing_route_needs_op_or_admin(app: Flask) -> None:
    lax = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC | OWN_ACCOUNT or not (rule.methods or set()) & {
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
        }:
            continue
        role = app.view_functions[rule.endpoint].required_role
        if RANK[role] < RANK["op"]:
            lax.append((rule.rule, role))
    assert lax == []


@pytest.fixture
def target(web_sessions: sessionmaker[Session], dag_factory: Any, run_factory: Any) -> dict[str, Any]:
    """A DAG with a finished run, a running backfill and a spare user, made fresh for each test."""
    dag_id = dag_factory(params={"n": 1})
    run_id = run_factory(dag_id, tis={"extract": "success", "transform": "failed", "load": "upstream_failed"})
    user = unique("user")
    with web_sessions() as s, s.begin():
        backfill = Backfill(
            dag_id=dag_id,
            from_date=datetime(2026, 1, 1, tzinfo=UTC),
            to_date=datetime(2026, 1, 2, tzinfo=UTC),
            state="running",
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        s.add(backfill)
        s.flush()
        backfill_id = backfill.id
    add_user(web_sessions, user)
    return {"dag": dag_id, "run": run_id, "task": "transform", "backfill": backfill_id, "user": user}


Action = Callable[[Client, dict[str, Any]], Any]

ACTIONS: list[tuple[str, str, Action]] = [
    ("page pause", "op", lambda c, t: c.form(f"/dags/{t['dag']}/pause", {"paused": "true"})),
    ("page trigger form", "op", lambda c, t: c.get(f"/dags/{t['dag']}/trigger")),
    ("page trigger", "op", lambda c, t: c.form(f"/dags/{t['dag']}/trigger", {"conf": "{}"})),
    (
        "page clear",
        "op",
        lambda c, t: c.form(f"/dags/{t['dag']}/runs/{t['run']}/clear", {"only_failed": "true"}),
    ),
    (
        "page mark",
        "op",
        lambda c, t: c.form(f"/dags/{t['dag']}/runs/{t['run']}/tasks/{t['task']}/mark", {"state": "success"}),
    ),
    ("page cancel backfill", "op", lambda c, t: c.form(f"/backfills/{t['backfill']}/cancel")),
    ("users page", "admin", lambda c, t: c.get("/users")),
    (
        "create user",
        "admin",
        lambda c, t: c.form("/users", {"username": unique("u"), "password": PASSWORD, "role": "viewer"}),
    ),
    ("set role", "admin", lambda c, t: c.form(f"/users/{t['user']}/role", {"role": "op"})),
    ("delete user", "admin", lambda c, t: c.form(f"/users/{t['user']}/delete")),
    ("issue token", "admin", lambda c, t: c.form(f"/users/{t['user']}/token")),
    ("api pause", "op", lambda c, t: c.api("PATCH", f"/dags/{t['dag']}", {"is_paused": True})),
    ("api clear dag", "op", lambda c, t: c.api("POST", f"/dags/{t['dag']}/clear", {"only_failed": True})),
    ("api trigger", "op", lambda c, t: c.api("POST", f"/dags/{t['dag']}/runs", {"conf": {"n": 2}})),
    ("api clear run", "op", lambda c, t: c.api("POST", f"/dags/{t['dag']}/runs/{t['run']}/clear", {})),
    (
        "api mark",
        "op",
        lambda c, t: c.api(
            "PATCH", f"/dags/{t['dag']}/runs/{t['run']}/tasks/{t['task']}", {"state": "failed"}
        ),
    ),
    (
        "api clear task",
        "op",
        lambda c, t: c.api("POST", f"/dags/{t['dag']}/runs/{t['run']}/tasks/{t['task']}/clear", {}),
    ),
    ("api cancel backfill", "op", lambda c, t: c.api("POST", f"/backfills/{t['backfill']}/cancel")),
]


@pytest.mark.parametrize("role", ["admin", "op", "viewer"])
@pytest.mark.parametrize(("name", "needs", "action"), ACTIONS, ids=[a[0] for a in ACTIONS])
def test_each_role_is_allowed_or_refused_each_action(
    as_role: Callable[[str], Client], target: dict[str, Any], role: str, name: str, needs: str, action: Action
) -> None:
    response = action(as_role(role), target)

    if RANK[role] >= RANK[needs]:
        assert response.status_code in (200, 201, 302), (
            name,
            role,
            response.status_code,
            response.text[:300],
        )
        if response.status_code == 302:
            assert "/login" not in response.headers["Location"]
    else:
        assert response.status_code == 403, (name, role, response.status_code)
        assert f"needs the {needs} role" in response.text


def test_a_viewer_sees_no_action_buttons(viewer: Client, target: dict[str, Any]) -> None:
    grid = viewer.get(f"/dags/{target['dag']}/grid").text
    ti = viewer.get(f"/dags/{target['dag']}/runs/{target['run']}/tasks/{target['task']}").text
    listing = viewer.get("/dags").text

    assert 'id="trigger-button"' not in grid and 'data-can-op="false"' in grid
    assert "Mark success" not in ti and "clear-button" not in ti
    assert 'class="toggle static' in listing and "/pause" not in listing
    assert "/users" not in listing


def test_an_op_sees_the_action_buttons(op: Client, target: dict[str, Any]) -> None:
    grid = op.get(f"/dags/{target['dag']}/grid").text
    ti = op.get(f"/dags/{target['dag']}/runs/{target['run']}/tasks/{target['task']}").text

    assert 'id="trigger-button"' in grid and 'data-can-op="true"' in grid
    assert "Mark success" in ti and "clear-button" in ti
