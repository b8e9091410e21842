"""A user changes their own password in the browser, logs out and logs in with the new one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.users import verify_password

from tests.browser.conftest import LiveSystem
from tests.browser.test_ui import SCREENSHOTS_ENV
from tests.web.conftest import PASSWORD, add_user

pytestmark = pytest.mark.browser

NEW_PASSWORD = "a much better passphrase"


def log_in(page: Any, url: str, username: str, password: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_a_viewer_changes_their_password_logs_out_and_logs_in_with_the_new_one(
    browser: Any, live_system: LiveSystem, tmp_path: Path
) -> None:
    name = "maria"  # this module has its own system (module-scoped fixture), so the name is free
    add_user(live_system.cluster.sessions, name, "viewer")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        log_in(page, live_system.url, name, PASSWORD)
        page.wait_for_url("**/dags")

        page.click("#change-password-link")  # in the header, beside the user name
        page.wait_for_url("**/account/password")
        page.fill("input[name=current_password]", PASSWORD)
        page.fill("input[name=new_password]", NEW_PASSWORD)
        page.fill("input[name=new_password_again]", NEW_PASSWORD)
        target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
        target.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target / "change_password.png"))
        page.click("#change-password button[type=submit]")
        page.wait_for_url("**/dags")
        assert "password changed" in page.inner_text(".flash")

        page.click("header button:text('Log out')")
        page.wait_for_url("**/login")
        log_in(page, live_system.url, name, PASSWORD)
        assert "wrong user name or password" in page.inner_text(".flash-error")
        log_in(page, live_system.url, name, NEW_PASSWORD)
        page.wait_for_url("**/dags")
        assert name in page.inner_text("header .user")
    finally:
        context.close()
    assert errors == [], f"JavaScript errors: {errors}"
    with live_system.cluster.sessions() as s:
        assert verify_password(s, name, NEW_PASSWORD) is not None
