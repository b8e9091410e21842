"""Logging in, sessions, API tokens, the socket's login check, the secret key and the headers."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from hareflow.common.config import Settings, load_settings
from hareflow.common.db import ApiToken
from hareflow.common.users import create_user, delete_user, set_password
from hareflow.web import socketio_of
from hareflow.web.security import ensure_secret_key, hash_token, issue_token
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import CSRF_META, PASSWORD, Client, login, unique

PAGES = [
    "/dags",
    "/workers",
    "/queues",
    "/backfills",
    "/audit",
    "/users",
    "/dags/x/grid",
    "/dags/x/runs/r/tasks/t",
]


@pytest.mark.parametrize("url", PAGES)
def test_every_page_sends_an_anonymous_visitor_to_the_login_form(anon: FlaskClient, url: str) -> None:
    response = anon.get(url)

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("url", ["/api/v1/dags", "/api/v1/health", "/api/v1/openapi.json", "/api/v1/workers"])
def test_the_api_answers_401_json_without_a_login_or_token(anon: FlaskClient, url: str) -> None:
    response = anon.get(url)

    assert response.status_code == 401
    assert response.json["status"] == 401
    assert "log in" in response.json["error"]


def test_a_wrong_password_is_refused_and_the_name_is_kept_in_the_form(anon: FlaskClient) -> None:
    page = anon.get("/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]

    response = anon.post("/login", data={"username": "op", "password": "nope-nope", "csrf_token": token})

    assert response.status_code == 401
    assert "wrong user name or password" in response.text
    assert 'value="op"' in response.text
    assert anon.get("/dags").status_code == 302


def test_logging_in_goes_to_the_page_asked_for_but_never_off_site(anon: FlaskClient) -> None:
    page = anon.get("/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]

    response = anon.post(
        "/login",
        data={"username": "viewer", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"},
    )

    assert response.status_code == 302
    assert response.headers["Location"] == "/dags"


def test_logging_in_then_out_ends_the_session(viewer: Client) -> None:
    assert viewer.get("/dags").status_code == 200

    out = viewer.form("/logout")

    assert out.status_code == 302
    assert viewer.get("/dags").status_code == 302


def test_a_password_change_or_deletion_ends_the_users_sessions(
    app: Flask, web_sessions: sessionmaker[Session]
) -> None:
    name = unique("user")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "viewer")
    client = login(app.test_client(), name)
    assert client.get("/dags").status_code == 200

    with web_sessions() as s, s.begin():
        set_password(s, name, "another password")
    assert client.get("/dags").status_code == 302

    client = login(app.test_client(), name, "another password")
    with web_sessions() as s, s.begin():
        delete_user(s, name)
    assert client.get("/api/v1/me").status_code == 401


def test_a_role_change_applies_to_the_next_request(app: Flask, web_sessions: sessionmaker[Session]) -> None:
    from hareflow.common.users import set_role

    name = unique("user")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "op")
    client = login(app.test_client(), name)
    assert client.api("GET", "/me").json["role"] == "op"

    with web_sessions() as s, s.begin():
        set_role(s, name, "viewer")

    assert client.api("PATCH", "/dags/anything", {"is_paused": True}).status_code == 403


def test_an_api_token_authenticates_without_cookie_or_csrf_and_is_stored_hashed(
    app: Flask, web_sessions: sessionmaker[Session], dag_factory: object
) -> None:
    dag_id = dag_factory()  # type: ignore[operator]
    with web_sessions() as s, s.begin():
        token = issue_token(s, "op")
    http = app.test_client()

    me = http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    paused = http.patch(
        f"/api/v1/dags/{dag_id}", json={"is_paused": True}, headers={"Authorization": f"Bearer {token}"}
    )

    assert me.status_code == 200
    assert me.json == {"username": "op", "role": "op", "auth": "token"}
    assert paused.status_code == 200 and paused.json["is_paused"] is True
    with web_sessions() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        assert row is not None and row.last_used_at is not None
        assert not s.scalar(select(ApiToken).where(ApiToken.token_hash == token))


@pytest.mark.parametrize("header", ["Bearer hft_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer "])
def test_a_bad_authorization_header_is_refused_even_with_a_valid_session(viewer: Client, header: str) -> None:
    response = viewer.get("/api/v1/me", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_deleting_a_user_deletes_their_tokens(app: Flask, web_sessions: sessionmaker[Session]) -> None:
    name = unique("bot")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "viewer")
        token = issue_token(s, name)
    with web_sessions() as s, s.begin():
        delete_user(s, name)

    response = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    with web_sessions() as s:
        assert s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token))) is None


def test_the_socket_refuses_a_visitor_who_is_not_logged_in(app: Flask, anon: FlaskClient) -> None:
    socket = socketio_of(app).test_client(app, flask_test_client=anon)

    assert not socket.is_connected()


def test_the_socket_accepts_a_logged_in_user_and_says_whether_events_are_live(
    app: Flask, viewer: Client
) -> None:
    socket = socketio_of(app).test_client(app, flask_test_client=viewer.http)
    try:
        assert socket.is_connected()
        hello = [m for m in socket.get_received() if m["name"] == "hello"]
        assert hello and hello[0]["args"][0] == {"live": True}
        joined = socket.emit("join", {"rooms": ["dags", "dag:x"]}, callback=True)
        refused = socket.emit("join", {"rooms": ["admin-secrets"]}, callback=True)
        assert joined["ok"] is True
        assert refused["ok"] is False
    finally:
        socket.disconnect()


def test_the_socket_accepts_an_api_token(
    app: Flask, web_sessions: sessionmaker[Session], anon: FlaskClient
) -> None:
    with web_sessions() as s, s.begin():
        token = issue_token(s, "viewer")
    socket = socketio_of(app).test_client(app, flask_test_client=anon, auth={"token": token})
    try:
        assert socket.is_connected()
    finally:
        socket.disconnect()


def test_the_secret_key_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={"home": str(tmp_path / "home")})

    first = ensure_secret_key(settings)
    second = ensure_secret_key(settings)

    key_file = tmp_path / "home" / "secret_key"
    assert first == second and len(first) >= 32
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert ensure_secret_key(settings.replace(secret_key="given")) == "given"


def test_responses_carry_the_security_headers(anon: FlaskClient, viewer: Client) -> None:
    for response in (anon.get("/login"), viewer.get("/dags"), viewer.get("/api/v1/dags")):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
    cookie = viewer.http.get_cookie("hareflow_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"


def test_pages_hold_no_inline_script(viewer: Client, dag_factory: object) -> None:
    dag_id = dag_factory()  # type: ignore[operator]
    for url in ("/dags", f"/dags/{dag_id}/grid", f"/dags/{dag_id}/graph", "/workers"):
        html = viewer.get(url).text
        for tag in html.split("<script")[1:]:
            head = tag.split(">", 1)[0]
            assert "src=" in head or 'type="application/json"' in head, f"inline script on {url}: {head}"
        assert " style=" not in html and "onclick=" not in html


def _post_login(http: FlaskClient, username: str, password: str, addr: str = "10.0.0.1") -> Any:
    page = http.get("/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    return http.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        environ_base={"REMOTE_ADDR": addr},
    )


@pytest.fixture
def throttle_clock(app: Flask) -> Iterator[list[float]]:
    """The login throttle on a clock the test moves by hand."""
    from hareflow.web.auth import login_throttle

    with app.app_context():
        throttle = login_throttle()
    now = [1000.0]
    saved_clock, throttle.clock = throttle.clock, lambda: now[0]
    throttle._failures.clear()
    yield now
    throttle.clock = saved_clock
    throttle._failures.clear()


def _victim(web_sessions: sessionmaker[Session]) -> str:
    name = unique("victim")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "viewer")
    return name


def test_repeated_failed_logins_from_one_address_wait_longer_and_longer_but_never_for_ever(
    app: Flask, web_sessions: sessionmaker[Session], throttle_clock: list[float]
) -> None:
    from hareflow.web.auth import login_throttle

    with app.app_context():
        throttle = login_throttle()
    name = _victim(web_sessions)
    attacker, other = app.test_client(), app.test_client()
    for _ in range(throttle.limit):
        assert _post_login(attacker, name, "wrong-guess").status_code == 401
    refused = _post_login(attacker, name, PASSWORD)  # even the right password waits, from this client
    assert refused.status_code == 429
    assert "too many failed logins" in refused.text and int(refused.headers["Retry-After"]) > 0
    # Another address, or another name from this address, is not affected.
    assert _post_login(other, name, PASSWORD, addr="10.0.0.2").status_code == 302
    assert _post_login(attacker, "op", "wrong-guess").status_code == 401
    waits = []
    for _ in range(8):  # each further failure doubles the wait, up to max_delay
        throttle_clock[0] += throttle.max_delay + 1
        assert _post_login(attacker, name, "wrong-again").status_code == 401
        waits.append(int(_post_login(attacker, name, "wrong-again").headers["Retry-After"]))
    assert waits == sorted(waits) and waits[0] <= 3 and waits[-1] == int(throttle.max_delay) + 1
    throttle_clock[0] += throttle.max_delay + 1
    assert _post_login(attacker, name, PASSWORD).status_code == 302  # slowed, never locked out


def test_a_flood_of_wrong_guesses_behind_one_proxy_address_never_locks_out_the_users_own_browser(
    app: Flask, web_sessions: sessionmaker[Session], throttle_clock: list[float]
) -> None:
    name = _victim(web_sessions)
    real = app.test_client()
    assert _post_login(real, name, PASSWORD, addr="10.9.9.9").status_code == 302  # once, earlier
    token = CSRF_META.search(real.get("/dags").text)
    assert token is not None
    assert real.post("/logout", data={"csrf_token": token.group(1)}).status_code == 302
    attacker = app.test_client()
    for _ in range(60):  # every request arrives from the proxy's one address
        assert _post_login(attacker, name, "guess", addr="10.9.9.9").status_code in (401, 429)
    assert _post_login(attacker, name, PASSWORD, addr="10.9.9.9").status_code == 429
    # The real user's browser carries its device cookie: its own budget, untouched by the flood.
    assert _post_login(real, name, PASSWORD, addr="10.9.9.9").status_code == 302
    # And a stolen or forged device cookie for another user name counts for nothing.
    forged = app.test_client()
    forged.set_cookie("hareflow_device", "not-a-signed-value", path="/login")
    assert _post_login(forged, name, PASSWORD, addr="10.9.9.9").status_code == 429


def test_many_addresses_guessing_one_user_are_slowed_together_yet_a_new_device_still_gets_in(
    app: Flask, web_sessions: sessionmaker[Session], throttle_clock: list[float]
) -> None:
    from hareflow.web.auth import login_throttle

    with app.app_context():
        throttle = login_throttle()
    name = _victim(web_sessions)
    for i in range(throttle.user_limit):
        assert _post_login(app.test_client(), name, "guess", addr=f"10.1.0.{i + 1}").status_code == 401
    fresh = _post_login(app.test_client(), name, "guess", addr="10.2.0.1")
    assert fresh.status_code == 429  # the per-user budget is spent, whatever the address
    throttle_clock[0] += int(fresh.headers["Retry-After"])
    assert _post_login(app.test_client(), name, PASSWORD, addr="10.2.0.2").status_code == 302


def test_x_forwarded_for_is_trusted_only_when_a_proxy_is_configured(
    web_settings: Settings, web_sessions: sessionmaker[Session], web_executor: Any
) -> None:
    from hareflow.web import create_app

    def address_seen(proxy_count: int) -> str:
        app = create_app(
            web_settings.replace(web_proxy_count=proxy_count), sessions=web_sessions, executor=web_executor
        )
        seen: list[str] = []
        app.before_request(lambda: seen.append(request.remote_addr or "") and None)
        app.test_client().get(
            "/login", headers={"X-Forwarded-For": "203.0.113.7"}, environ_base={"REMOTE_ADDR": "10.0.0.1"}
        )
        return seen[0]

    assert address_seen(0) == "10.0.0.1"  # a client cannot claim another address
    assert address_seen(1) == "203.0.113.7"


def _cookie_copy(source: FlaskClient, target: FlaskClient) -> None:
    cookie = source.get_cookie("hareflow_session")
    assert cookie is not None
    target.set_cookie("hareflow_session", cookie.value)


def test_a_session_cookie_copied_before_logout_stops_working_when_its_owner_logs_out(
    app: Flask, viewer: Client
) -> None:
    thief = app.test_client()
    _cookie_copy(viewer.http, thief)
    assert thief.get("/api/v1/me").status_code == 200

    assert viewer.form("/logout").status_code == 302

    assert thief.get("/api/v1/me").status_code == 401
    assert thief.get("/dags").status_code == 302


def test_a_session_past_its_lifetime_is_refused_and_swept_at_the_next_login(
    app: Flask, web_sessions: sessionmaker[Session]
) -> None:
    from datetime import UTC, datetime, timedelta

    from hareflow.common.db import User, WebSession

    name = unique("user")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "viewer")
    client = login(app.test_client(), name)
    with web_sessions() as s, s.begin():
        user_id = s.scalar(select(User.id).where(User.username == name))
        for row in s.scalars(select(WebSession).where(WebSession.user_id == user_id)):
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)

    assert client.get("/api/v1/me").status_code == 401
    login(app.test_client(), name)
    with web_sessions() as s:
        assert (
            s.scalar(select(func.count()).select_from(WebSession).where(WebSession.user_id == user_id)) == 1
        )


def test_a_password_change_ends_every_session_of_that_user_but_not_of_others(
    app: Flask, web_sessions: sessionmaker[Session], viewer: Client
) -> None:
    name = unique("user")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "viewer")
    first, second = login(app.test_client(), name), login(app.test_client(), name)

    with web_sessions() as s, s.begin():
        set_password(s, name, "another password")

    assert first.get("/api/v1/me").status_code == 401 and second.get("/api/v1/me").status_code == 401
    assert viewer.get("/api/v1/me").status_code == 200


def test_an_expired_or_revoked_api_token_is_refused(app: Flask, web_sessions: sessionmaker[Session]) -> None:
    from datetime import UTC, datetime, timedelta

    from hareflow.web.security import list_tokens, revoke_token

    name = unique("bot")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "viewer")
        expiring, revoked, kept = (issue_token(s, name, days=d) for d in (1, 30, 0))
    with web_sessions() as s, s.begin():
        rows = {t["id"]: t for t in list_tokens(s, name)}
        for row in s.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(expiring))):
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        revoked_id = s.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(revoked)))
        assert revoke_token(s, revoked_id, revoked_by="admin")["user"] == name

    def status(token: str) -> int:
        return app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code

    assert (status(expiring), status(revoked), status(kept)) == (401, 401, 200)
    assert [r["expires_at"] is None for r in rows.values()] == [False, False, True]
    with web_sessions() as s:
        listed = {t["id"]: t for t in list_tokens(s, name)}
    assert revoked_id not in listed and [t["expired"] for t in listed.values()] == [True, False]


def test_the_users_page_lists_api_tokens_and_an_admin_revokes_one(
    admin: Client, web_sessions: sessionmaker[Session]
) -> None:
    name = unique("bot")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "viewer")
        token = issue_token(s, name)
        token_id = s.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token)))

    page = admin.get("/users").text
    assert f'data-token="{token_id}"' in page and name in page
    assert admin.http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    revoked = admin.form(f"/users/tokens/{token_id}/revoke")

    assert revoked.status_code == 302
    assert f'data-token="{token_id}"' not in admin.get("/users").text
    assert admin.http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    with web_sessions() as s:
        assert s.get(ApiToken, token_id) is None


def test_a_role_changed_or_a_user_deleted_on_the_users_page_applies_to_their_tokens_at_once(
    app: Flask, admin: Client, web_sessions: sessionmaker[Session]
) -> None:
    name = unique("bot")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "viewer")
        token = issue_token(s, name)

    def me() -> Any:
        return app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})

    assert me().json["role"] == "viewer"
    admin.form(f"/users/{name}/role", {"role": "op"})
    assert me().json["role"] == "op"
    admin.form(f"/users/{name}/delete")
    assert me().status_code == 401


def test_a_token_revoked_by_another_process_stops_working_within_the_cache_bound(
    app: Flask, web_sessions: sessionmaker[Session]
) -> None:
    """The CLI revokes in the database only: this server notices when its lookup is older than
    ``TOKEN_CACHE_SECONDS``, or at the next "last used" write, whichever comes first."""
    import time

    from hareflow.web.security import TOKEN_CACHE_SECONDS, revoke_tokens, token_cache

    name = unique("bot")
    with web_sessions() as s, s.begin():
        create_user(s, name, PASSWORD, "viewer")
        token = issue_token(s, name)

    def status() -> int:
        return app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code

    assert status() == 200
    with web_sessions() as s, s.begin():
        revoke_tokens(s, name)
    still = status()
    with app.app_context():
        cache = token_cache()
    cache.clock = lambda: time.monotonic() + TOKEN_CACHE_SECONDS
    try:
        later = status()
    finally:
        cache.clock = time.monotonic

    assert (still, later) == (200, 401)
