"""Connections and Variables through the REST API and the pages: who may see them, that no answer
ever holds a password, PATCH keeping what it is not given, validation messages, audit rows and the
connection test against a real database."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from hareflow.common.config import Settings
from hareflow.common.db import AuditLog
from hareflow.common.secrets import store
from hareflow.common.secrets.crypto import cipher_from_settings, ensure_key_file
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import PG_URL
from tests.web.conftest import Client, login, unique

SECRET = "pa55-Very-Secret-9f3e"
EXTRA_SECRET = "tok-Extra-Secret-77aa"


@pytest.fixture(autouse=True, scope="module")
def fernet_key(web_settings: Settings) -> None:
    """The web tests' home gets a Fernet key file, as ``hareflow standalone`` would write."""
    ensure_key_file(web_settings.home)


@pytest.fixture
def op(as_role: Callable[[str], Client]) -> Client:
    return as_role("op")


def new_connection(client: Client, **fields: Any) -> dict[str, Any]:
    body = {
        "conn_id": unique("conn"),
        "conn_type": "postgresql",
        "host": "db.example.com",
        "port": 5432,
        "login": "etl",
        "password": SECRET,
        "schema": "warehouse",
        "extra": {"sslmode": "require", "api_token": EXTRA_SECRET},
        "description": "the warehouse",
    }
    body.update(fields)
    response = client.api("POST", "/connections", body)
    assert response.status_code == 201, response.text
    return response.json


def stored(sessions: sessionmaker[Session], settings: Settings, conn_id: str) -> Any:
    with sessions() as s:
        return store.get_connection(s, conn_id, cipher_from_settings(settings))


def audit_rows(sessions: sessionmaker[Session], action: str, name: str, key: str = "conn_id") -> list[Any]:
    with sessions() as s:
        rows = s.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))
        return [r for r in rows if (r.details or {}).get(key) == name]


# -- roles --------------------------------------------------------------------------------------------

READS = ["/connections", "/connection-types", "/variables"]


@pytest.mark.parametrize("path", READS)
def test_a_viewer_may_not_read_connections_variables_or_types(
    as_role: Callable[[str], Client], path: str
) -> None:
    response = as_role("viewer").api("GET", path)

    assert response.status_code == 403 and "needs the op role" in response.json["error"]


@pytest.mark.parametrize("role", ["op", "admin"])
def test_an_op_and_an_admin_may_read_and_write_connections(
    as_role: Callable[[str], Client], role: str
) -> None:
    client = as_role(role)
    conn = new_connection(client)

    assert client.api("GET", "/connections").status_code == 200
    assert client.api("GET", f"/connections/{conn['conn_id']}").status_code == 200
    assert client.api("PATCH", f"/connections/{conn['conn_id']}", {"host": "h2"}).status_code == 200
    assert client.api("DELETE", f"/connections/{conn['conn_id']}").status_code == 200


def test_a_viewer_may_not_write_or_test_a_connection_or_a_variable(
    as_role: Callable[[str], Client], op: Client
) -> None:
    viewer = as_role("viewer")
    conn = new_connection(op)
    path = f"/connections/{conn['conn_id']}"
    op.api("POST", "/variables", {"key": (key := unique("var")), "value": "1"})

    attempts = [
        viewer.api("POST", "/connections", {"conn_id": unique("c"), "conn_type": "http"}),
        viewer.api("GET", path),
        viewer.api("PATCH", path, {"host": "evil"}),
        viewer.api("DELETE", path),
        viewer.api("POST", path + "/test"),
        viewer.api("POST", "/variables", {"key": unique("v"), "value": "x"}),
        viewer.api("GET", f"/variables/{key}"),
        viewer.api("PATCH", f"/variables/{key}", {"value": "2"}),
        viewer.api("DELETE", f"/variables/{key}"),
    ]

    assert [r.status_code for r in attempts] == [403] * len(attempts)
    assert SECRET not in "".join(r.text for r in attempts)


@pytest.mark.parametrize("page", ["/connections", "/connections/new", "/variables", "/variables/new"])
def test_a_viewer_may_not_open_the_pages_nor_sees_them_in_the_menu(
    as_role: Callable[[str], Client], page: str
) -> None:
    viewer = as_role("viewer")

    assert viewer.get(page).status_code == 403
    menu = viewer.get("/dags").text
    assert 'href="/connections"' not in menu and 'href="/variables"' not in menu


def test_an_op_sees_connections_and_variables_in_the_menu(op: Client) -> None:
    menu = op.get("/dags").text

    assert 'href="/connections"' in menu and 'href="/variables"' in menu


# -- no secrets out ---------------------------------------------------------------------------------


def test_no_answer_or_page_contains_the_password_or_a_sensitive_extra_value(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    conn = new_connection(op)
    conn_id = conn["conn_id"]

    texts = [
        op.api("GET", "/connections").text,
        op.api("GET", f"/connections/{conn_id}").text,
        op.api("PATCH", f"/connections/{conn_id}", {"description": "changed"}).text,
        op.get("/connections").text,
        op.get(f"/connections/{conn_id}/edit").text,
        op.get("/audit").text,
        str(conn),
    ]

    for text in texts:
        assert SECRET not in text and EXTRA_SECRET not in text
    assert conn["password_set"] is True and "password" not in conn
    assert conn["extra"] == {"sslmode": "require", "api_token": "***"}
    listed = [c for c in op.api("GET", "/connections").json["connections"] if c["conn_id"] == conn_id]
    assert listed[0]["password_set"] is True and "password" not in listed[0]
    assert stored(web_sessions, web_settings, conn_id).password == SECRET


def test_the_list_page_says_whether_a_password_is_set(op: Client) -> None:
    with_password = new_connection(op)["conn_id"]
    without = new_connection(op, password=None)["conn_id"]

    page = op.get("/connections").text

    row_with = page[page.index(f'data-conn="{with_password}"') :].split("</tr>")[0]
    row_without = page[page.index(f'data-conn="{without}"') :].split("</tr>")[0]
    assert ">set<" in row_with and "not set" not in row_with
    assert "not set" in row_without


def test_a_connection_can_be_given_as_a_uri(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    conn_id = unique("uri")
    response = op.api(
        "POST",
        "/connections",
        {"conn_id": conn_id, "uri": f"mysql://loader:{SECRET}@db.local:3307/sales?charset=utf8mb4"},
    )

    assert response.status_code == 201, response.text
    assert SECRET not in response.text
    body = response.json
    assert (body["conn_type"], body["host"], body["port"], body["login"], body["schema"]) == (
        "mysql",
        "db.local",
        3307,
        "loader",
        "sales",
    )
    assert body["extra"] == {"charset": "utf8mb4"} and body["password_set"] is True
    assert stored(web_sessions, web_settings, conn_id).password == SECRET


# -- PATCH ------------------------------------------------------------------------------------------


def test_patch_without_a_password_keeps_it_and_null_clears_it(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    conn_id = new_connection(op)["conn_id"]

    kept = op.api("PATCH", f"/connections/{conn_id}", {"host": "new-host", "login": "other"})
    assert kept.status_code == 200 and kept.json["password_set"] is True
    after_keep = stored(web_sessions, web_settings, conn_id)
    assert (after_keep.password, after_keep.host, after_keep.login) == (SECRET, "new-host", "other")
    assert after_keep.schema == "warehouse" and after_keep.port == 5432

    changed = op.api("PATCH", f"/connections/{conn_id}", {"password": "another-one"})
    assert changed.status_code == 200 and "another-one" not in changed.text
    assert stored(web_sessions, web_settings, conn_id).password == "another-one"

    cleared = op.api("PATCH", f"/connections/{conn_id}", {"password": None})
    assert cleared.status_code == 200 and cleared.json["password_set"] is False
    assert stored(web_sessions, web_settings, conn_id).password is None


def test_sending_back_the_masked_extra_keeps_the_stored_sensitive_values(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    conn = new_connection(op)

    response = op.api(
        "PATCH", f"/connections/{conn['conn_id']}", {"extra": {**conn["extra"], "sslmode": "disable"}}
    )

    assert response.status_code == 200, response.text
    assert stored(web_sessions, web_settings, conn["conn_id"]).extra == {
        "sslmode": "disable",
        "api_token": EXTRA_SECRET,
    }


def test_patch_with_a_uri_without_password_keeps_the_stored_one(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    conn_id = new_connection(op)["conn_id"]

    response = op.api("PATCH", f"/connections/{conn_id}", {"uri": "postgresql://etl@other-host:6543/db2"})

    assert response.status_code == 200, response.text
    conn = stored(web_sessions, web_settings, conn_id)
    assert (conn.host, conn.port, conn.schema, conn.password) == ("other-host", 6543, "db2", SECRET)


# -- validation, 404 and 409 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"port": 70000}, "port", "TCP port"),
        ({"port": "eighty"}, "port", "TCP port"),
        ({"extra": "{not json"}, "extra", "not valid JSON"),
        ({"extra": [1, 2]}, "extra", "JSON object"),
        ({"conn_type": None}, "conn_type", "conn_type is required"),
        ({"conn_id": "has space"}, "conn_id", "conn_id"),
        ({"conn_id": ""}, "conn_id", "conn_id is required"),
        ({"host": 5}, "host", "host must be a string"),
        ({"allowed_dag_ids": [1]}, "allowed_dag_ids", "list of DAG ids"),
        ({"colour": "blue"}, "colour", "unknown field"),
        ({"uri": "not a uri"}, "uri", "not a URI"),
    ],
)
def test_a_wrong_field_is_a_400_that_names_it(
    op: Client, fields: dict[str, Any], field: str, words: str
) -> None:
    body = {"conn_id": unique("bad"), "conn_type": "postgresql", **fields}
    if "uri" in fields:
        body.pop("conn_type")

    response = op.api("POST", "/connections", body)

    assert response.status_code == 400, response.text
    assert response.json["field"] == field and words in response.json["error"]
    assert field in response.json["error"]


def test_a_second_connection_with_the_same_id_is_a_409_and_changes_nothing(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    conn_id = new_connection(op)["conn_id"]

    again = op.api("POST", "/connections", {"conn_id": conn_id, "conn_type": "http", "password": "x"})

    assert again.status_code == 409 and conn_id in again.json["error"]
    assert stored(web_sessions, web_settings, conn_id).password == SECRET


def test_a_missing_connection_is_a_404_for_each_method(op: Client) -> None:
    path = f"/connections/{unique('missing')}"

    statuses = [
        op.api("GET", path).status_code,
        op.api("PATCH", path, {"host": "x"}).status_code,
        op.api("DELETE", path).status_code,
        op.api("POST", path + "/test").status_code,
        op.get(path + "/edit").status_code,
    ]

    assert statuses == [404] * 5


def test_without_a_fernet_key_writes_are_a_clear_error_naming_the_setting(
    web_settings: Settings, web_sessions: sessionmaker[Session], tmp_path: Any
) -> None:
    from hareflow.web import create_app

    app = create_app(web_settings.replace(home=tmp_path / "no-key"), sessions=web_sessions)
    client = login(app.test_client(), "op")

    responses = [
        client.api("POST", "/connections", {"conn_id": unique("c"), "conn_type": "http"}),
        client.api("POST", "/variables", {"key": unique("v"), "value": "1"}),
        client.api("GET", "/variables"),
    ]

    for response in responses:
        assert response.status_code == 503, response.text
        assert "HAREFLOW_FERNET_KEY" in response.json["error"] and "Traceback" not in response.text
    page = client.get("/variables")
    assert page.status_code == 503 and "HAREFLOW_FERNET_KEY" in page.text


# -- audit ----------------------------------------------------------------------------------------------


def test_every_connection_write_is_audited_without_secret_values(
    op: Client, web_sessions: sessionmaker[Session]
) -> None:
    conn_id = new_connection(op)["conn_id"]
    op.api("PATCH", f"/connections/{conn_id}", {"password": "rotated-pw-123", "host": "h3"})
    op.api("DELETE", f"/connections/{conn_id}")

    created = audit_rows(web_sessions, "connection_create", conn_id)
    updated = audit_rows(web_sessions, "connection_update", conn_id)
    deleted = audit_rows(web_sessions, "connection_delete", conn_id)

    assert len(created) == len(updated) == len(deleted) == 1
    assert created[0].username == "op" and created[0].details["password"] == "set"
    assert updated[0].details["password"] == "changed" and updated[0].details["fields"] == ["host"]
    everything = repr([r.details for r in created + updated + deleted])
    assert SECRET not in everything and EXTRA_SECRET not in everything and "rotated-pw-123" not in everything


# -- the connection test ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_testing_a_connection_to_the_local_postgresql_is_ok(op: Client) -> None:
    url = make_url(PG_URL)
    conn_id = new_connection(
        op,
        host=url.host,
        port=url.port or 5432,
        login=url.username,
        password=url.password or SECRET,
        schema=url.database,
        extra={},
    )["conn_id"]

    response = op.api("POST", f"/connections/{conn_id}/test")

    assert response.status_code == 200, response.text
    assert response.json["ok"] is True and "SELECT 1" in response.json["message"]
    assert SECRET not in response.text


def test_testing_a_connection_to_a_closed_port_is_not_ok_and_says_why(op: Client) -> None:
    conn_id = new_connection(op, host="127.0.0.1", port=_free_port(), extra={})["conn_id"]

    response = op.api("POST", f"/connections/{conn_id}/test")

    assert response.status_code == 200, response.text
    assert response.json["ok"] is False and response.json["message"]
    assert SECRET not in response.text


def test_connection_types_list_the_builtin_ones_with_their_hints(op: Client) -> None:
    types = {t["conn_type"]: t for t in op.api("GET", "/connection-types").json["connection_types"]}

    assert types["postgresql"]["testable"] is True and types["postgresql"]["hints"]["schema"] == "database"
    assert {"http", "smtp", "sqlite"} <= set(types)


# -- variables ------------------------------------------------------------------------------------------


def test_variables_with_sensitive_keys_read_masked_everywhere(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    secret_key, plain_key = unique("api_token"), unique("threshold")
    assert op.api("POST", "/variables", {"key": secret_key, "value": SECRET}).status_code == 201
    created = op.api("POST", "/variables", {"key": plain_key, "value": {"max": 3}, "description": "d"})

    assert created.status_code == 201 and created.json["value"] == '{"max": 3}'
    listed = {v["key"]: v for v in op.api("GET", "/variables").json["variables"]}
    assert listed[secret_key]["value"] == "***" and listed[secret_key]["sensitive"] is True
    assert listed[plain_key]["value"] == '{"max": 3}' and listed[plain_key]["description"] == "d"
    texts = [
        op.api("GET", "/variables").text,
        op.api("GET", f"/variables/{secret_key}").text,
        op.get("/variables").text,
        op.get(f"/variables/{secret_key}/edit").text,
    ]
    assert all(SECRET not in t for t in texts)
    with web_sessions() as s:
        assert store.get_variable(s, secret_key, cipher_from_settings(web_settings)) == SECRET


def test_patching_a_variable_keeps_what_it_is_not_given(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    key = unique("db_password")
    op.api("POST", "/variables", {"key": key, "value": SECRET, "description": "old"})

    described = op.api("PATCH", f"/variables/{key}", {"description": "new"})
    masked_back = op.api("PATCH", f"/variables/{key}", {"value": "***"})

    assert described.status_code == masked_back.status_code == 200
    assert described.json["description"] == "new"
    with web_sessions() as s:
        assert store.get_variable(s, key, cipher_from_settings(web_settings)) == SECRET
    changed = op.api("PATCH", f"/variables/{key}", {"value": "fresh-value"})
    assert changed.status_code == 200
    with web_sessions() as s:
        assert store.get_variable(s, key, cipher_from_settings(web_settings)) == "fresh-value"


def test_variable_mistakes_are_400_409_and_404(op: Client) -> None:
    key = unique("var")
    op.api("POST", "/variables", {"key": key, "value": "1"})

    missing_value = op.api("POST", "/variables", {"key": unique("v")})
    bad_key = op.api("POST", "/variables", {"key": "no spaces", "value": "1"})
    duplicate = op.api("POST", "/variables", {"key": key, "value": "2"})
    absent = op.api("GET", f"/variables/{unique('absent')}")

    assert (missing_value.status_code, missing_value.json["field"]) == (400, "value")
    assert (bad_key.status_code, bad_key.json["field"]) == (400, "key") and "key" in bad_key.json["error"]
    assert duplicate.status_code == 409 and key in duplicate.json["error"]
    assert absent.status_code == 404
    assert op.api("GET", f"/variables/{key}").json["value"] == "1"


def test_variable_writes_are_audited_without_the_value(
    op: Client, web_sessions: sessionmaker[Session]
) -> None:
    key = unique("secret_var")
    op.api("POST", "/variables", {"key": key, "value": SECRET})
    op.api("PATCH", f"/variables/{key}", {"value": "other-secret-value"})
    op.api("DELETE", f"/variables/{key}")

    rows = [
        audit_rows(web_sessions, action, key, "key")
        for action in ("variable_create", "variable_update", "variable_delete")
    ]

    assert [len(r) for r in rows] == [1, 1, 1]
    assert rows[1][0].details["fields"] == ["value"]
    everything = repr([r[0].details for r in rows])
    assert SECRET not in everything and "other-secret-value" not in everything


# -- forms ----------------------------------------------------------------------------------------------


def test_the_form_keeps_the_password_when_left_empty_and_reports_bad_extra(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    conn_id = unique("form")
    created = op.form(
        "/connections",
        {"conn_id": conn_id, "conn_type": "postgresql", "host": "h", "port": "5432", "password": SECRET},
    )
    assert created.status_code == 302, created.text

    edit_page = op.get(f"/connections/{conn_id}/edit").text
    saved = op.form(f"/connections/{conn_id}/edit", {"conn_type": "postgresql", "host": "h2", "password": ""})
    bad = op.form(
        f"/connections/{conn_id}/edit", {"conn_type": "postgresql", "host": "h3", "extra": '{"a": 1,}'}
    )

    assert SECRET not in edit_page and "leave empty to keep" in edit_page
    assert saved.status_code == 302
    assert bad.status_code == 400 and "extra is not valid JSON" in bad.text and SECRET not in bad.text
    conn = stored(web_sessions, web_settings, conn_id)
    assert (conn.host, conn.password) == ("h2", SECRET)


def test_the_forms_refuse_a_post_without_the_csrf_token(op: Client) -> None:
    conn_id = unique("csrf")

    response = op.form("/connections", {"conn_id": conn_id, "conn_type": "http"}, csrf=False)

    assert response.status_code == 400 and "security token" in response.text
    assert op.api("GET", f"/connections/{conn_id}").status_code == 404


def test_routes_state_their_roles(app: Flask) -> None:
    roles = {
        rule.rule: app.view_functions[rule.endpoint].required_role
        for rule in app.url_map.iter_rules()
        if "connection" in rule.rule or "variable" in rule.rule
    }

    assert roles and set(roles.values()) == {"op"}


def test_the_test_button_without_javascript_reports_the_result_as_a_message(op: Client) -> None:
    conn_id = new_connection(op, host="127.0.0.1", port=_free_port(), extra={})["conn_id"]

    response = op.form(f"/connections/{conn_id}/test")
    page = op.get("/connections").text

    assert response.status_code == 302
    assert f"{conn_id}: failed" in page and SECRET not in page


def test_the_variable_forms_create_and_keep_a_sensitive_value_left_empty(
    op: Client, web_sessions: sessionmaker[Session], web_settings: Settings
) -> None:
    key = unique("service_token")
    created = op.form("/variables", {"key": key, "value": SECRET, "description": "d1"})
    edit_page = op.get(f"/variables/{key}/edit").text
    saved = op.form(f"/variables/{key}/edit", {"value": "", "description": "d2"})
    bad = op.form("/variables", {"key": "bad key", "value": "x"})

    assert created.status_code == saved.status_code == 302
    assert SECRET not in edit_page and "leave empty to keep" in edit_page
    assert bad.status_code == 400 and "key" in bad.text
    with web_sessions() as s:
        assert store.get_variable(s, key, cipher_from_settings(web_settings)) == SECRET
    assert op.api("GET", f"/variables/{key}").json["description"] == "d2"
