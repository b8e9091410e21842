"""Connections and Variables in the browser: an op adds a connection through the form, edits it
without retyping the password (which stays stored), tests it from the list, adds a variable; a
viewer finds neither page."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.secrets import store
from hareflow.common.secrets.connection import Connection
from hareflow.common.secrets.crypto import cipher_from_settings, ensure_key_file
from sqlalchemy.engine import make_url

from tests.browser.conftest import LiveSystem
from tests.browser.test_ui import SCREENSHOTS_ENV
from tests.conftest import PG_URL

pytestmark = pytest.mark.browser

SECRET = "ui-Secret-Passw0rd-41c"
VARIABLE_SECRET = "smtp-Secret-Value-92d"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def cipher(live_system: LiveSystem) -> Any:
    """The system's home gets a Fernet key file, as ``hareflow standalone`` would write."""
    settings = live_system.cluster.settings
    ensure_key_file(settings.home)
    return cipher_from_settings(settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_op_adds_edits_and_tests_a_connection_and_adds_a_variable(
    open_as: Any, live_system: LiveSystem, cipher: Any, screenshots: Path
) -> None:
    sessions = live_system.cluster.sessions
    with sessions() as s, s.begin():  # a second connection, to a port nobody listens on
        store.put_connection(
            s,
            Connection(
                "partner_api", "http", host="127.0.0.1", port=_free_port(), description="Partner REST API"
            ),
            cipher,
        )
    db = make_url(PG_URL)
    page = open_as("op")

    page.click("nav.mainnav a:text-is('Connections')")
    page.wait_for_url("**/connections")
    page.click("#new-connection")
    page.fill("input[name=conn_id]", "warehouse")
    page.select_option("#conn_type", "postgresql")
    assert "database" in page.inner_text('[data-hint-for="schema"]')  # the type's hint
    page.fill("input[name=description]", "The reporting warehouse")
    page.fill("input[name=host]", db.host or "127.0.0.1")
    page.fill("input[name=port]", str(db.port or 5432))
    page.fill("input[name=login]", db.username or "postgres")
    page.fill("input[name=password]", SECRET)  # trust authentication: any password is accepted
    page.fill("input[name=schema]", db.database or "postgres")
    page.fill("#extra", '{"application_name": "hareflow-ui-test"}')
    page.click("#connection-submit")
    page.wait_for_url("**/connections")
    assert "connection warehouse created" in page.inner_text(".flash")
    assert page.inner_text('tr[data-conn="warehouse"] .password-state') == "set"
    assert SECRET not in page.content()

    page.click('tr[data-conn="warehouse"] a:text-is("Edit")')
    page.wait_for_url("**/connections/warehouse/edit")
    assert page.input_value("input[name=password]") == ""
    assert "leave empty to keep" in page.inner_text("#password-state")
    assert SECRET not in page.content()
    page.fill("input[name=description]", "The reporting warehouse (read only)")
    page.screenshot(path=str(screenshots / "connection_form.png"), full_page=True)
    page.click("#connection-submit")
    page.wait_for_url("**/connections")
    assert "connection warehouse saved" in page.inner_text(".flash")
    with sessions() as s:
        saved = store.get_connection(s, "warehouse", cipher)
    assert saved is not None and saved.password == SECRET
    assert saved.description == "The reporting warehouse (read only)"

    page.click('tr[data-conn="warehouse"] form.conn-test button')
    page.click('tr[data-conn="partner_api"] form.conn-test button')
    ok = page.wait_for_selector('.test-result[data-result-for="warehouse"][data-ok]', timeout=30_000)
    failed = page.wait_for_selector('.test-result[data-result-for="partner_api"][data-ok]', timeout=30_000)
    assert ok.get_attribute("data-ok") == "true" and "SELECT 1" in ok.inner_text()
    assert failed.get_attribute("data-ok") == "false" and failed.inner_text().startswith("✗")
    assert page.url.endswith("/connections")  # the result came inline, no page load
    page.screenshot(path=str(screenshots / "connections.png"), full_page=True)

    with sessions() as s, s.begin():
        store.put_variable(s, "smtp_password", VARIABLE_SECRET, cipher, "for the alert e-mails")
    page.click("nav.mainnav a:text-is('Variables')")
    page.wait_for_url("**/variables")
    page.click("#new-variable")
    page.fill("input[name=key]", "report_recipients")
    page.fill("#value", '["ana@example.com", "li@example.com"]')
    page.fill("input[name=description]", "who gets the daily report")
    page.click("#variable-submit")
    page.wait_for_url("**/variables")
    assert "variable report_recipients created" in page.inner_text(".flash")
    assert "ana@example.com" in page.inner_text('tr[data-key="report_recipients"] .var-value')
    assert page.inner_text('tr[data-key="smtp_password"] .var-value') == "***"
    assert VARIABLE_SECRET not in page.content()
    page.screenshot(path=str(screenshots / "variables.png"), full_page=True)
    with sessions() as s:
        assert store.get_variable(s, "report_recipients", cipher) == '["ana@example.com", "li@example.com"]'


def test_a_viewer_has_no_connections_or_variables_pages(open_as: Any, live_system: LiveSystem) -> None:
    page = open_as("viewer")

    menu = page.inner_text("nav.mainnav")
    response = page.goto(live_system.url + "/connections")
    variables = page.context.request.get(live_system.url + "/variables")

    assert "Connections" not in menu and "Variables" not in menu
    assert response is not None and response.status == 403
    assert "needs the op role" in page.content()
    assert variables.status == 403
