"""A page that loses its socket reconnects by itself and catches up: it does not keep stale state.

The browser context goes offline (Chromium closes the WebSocket and fails every request), runs change
in the metastore meanwhile, and the pages are checked to still show the old state; back online, the
Socket.IO client reconnects on its own and each page must show the current state without a reload.
The 30 s safety poll is switched off, so only the resync after the reconnection can bring it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hareflow.common.db import DagRun
from sqlalchemy import select

from tests.browser.conftest import LiveSystem, grid_cell, grid_head

pytestmark = pytest.mark.browser

#: Runs before the page's scripts: drops the 30 s safety poll (and counts how often a page asked for
#: it), so a page can catch up only through its resync after a reconnection.
NO_SAFETY_POLL = """
(() => {
  const setInterval = window.setInterval;
  window.__safetyPollsDropped = 0;
  window.setInterval = function (fn, ms) {
    if (ms >= 30000) { window.__safetyPollsDropped += 1; return 0; }
    return setInterval.apply(window, arguments);
  };
})();
"""

#: How long a page may take to reconnect and catch up once the network is back: the client retries
#: with a growing delay of at most 5 s (randomised by half either way), then refetches.
CATCH_UP = 20_000


def cell(run_id: str, task_id: str) -> str:
    return grid_cell(run_id, task_id)


def head(run_id: str) -> str:
    return grid_head(run_id)


def run_state(live: LiveSystem, run_id: str) -> str | None:
    with live.cluster.sessions() as s:
        return s.scalar(select(DagRun.state).where(DagRun.dag_id == "live_dag", DagRun.run_id == run_id))


def colour(locator: Any) -> str:
    """The square's background once its colour transition is over."""
    return locator.evaluate(
        """async el => { await Promise.all(el.getAnimations().map(a => a.finished));
                         return getComputedStyle(el).backgroundColor; }"""
    )


def watch_reconnects(page: Any) -> None:
    """Count the reconnections the Socket.IO client makes by itself, and mark the window (a reload
    would lose both)."""
    page.evaluate(
        """() => { window.__reconnects = 0; window.__noReload = true;
                   hf.socket.io.on('reconnect', () => { window.__reconnects += 1; }); }"""
    )


def test_pages_catch_up_after_their_socket_comes_back(open_as: Any, live_system: LiveSystem) -> None:
    from playwright.sync_api import expect

    grid = open_as("viewer")
    context = grid.context
    context.add_init_script(NO_SAFETY_POLL)
    errors: list[str] = []
    grid.goto(f"{live_system.url}/dags/live_dag/grid")
    dags = context.new_page()
    dags.on("pageerror", lambda exc: errors.append(str(exc)))
    dags.goto(f"{live_system.url}/dags")
    for page in (grid, dags):
        expect(page.locator("#live-status")).to_have_class("live-dot on")

    # Live updates work: a run starts and both pages follow it as events arrive.
    first = live_system.cluster.trigger("live_dag", conf={"lines": 30, "delay": 0.25})
    slow_cell = grid.locator(cell(first, "slow_logger"))
    expect(slow_cell).to_have_attribute("data-state", "running")
    expect(grid.locator(head(first))).to_have_attribute("data-state", "running")
    last_run = dags.locator('tr[data-dag="live_dag"] [data-field="last"]')
    expect(last_run.locator("a")).to_have_attribute("title", first)
    expect(last_run.locator(".badge")).to_have_attribute("data-state", "running")
    running_colour = colour(slow_cell)
    run_page = context.new_page()
    run_page.on("pageerror", lambda exc: errors.append(str(exc)))
    run_page.goto(f"{live_system.url}/dags/live_dag/runs/{first}")
    expect(run_page.locator("#live-status")).to_have_class("live-dot on")
    slow_row = run_page.locator('#ti-table tr[data-task="slow_logger"] [data-field="state"] .badge')
    expect(slow_row).to_have_attribute("data-state", "running")
    expect(run_page.locator("#run-state")).to_have_attribute("data-state", "running")
    ti_page = context.new_page()
    ti_page.on("pageerror", lambda exc: errors.append(str(exc)))
    ti_page.goto(f"{live_system.url}/dags/live_dag/runs/{first}/tasks/slow_logger")
    expect(ti_page.locator("#live-status")).to_have_class("live-dot on")
    expect(ti_page.locator("#log")).to_contain_text("line 1 of 30")
    pages = (grid, run_page, dags, ti_page)
    for page in pages:
        watch_reconnects(page)

    context.set_offline(True)
    assert run_state(live_system, first) == "running", "the run ended before the network went away"
    for page in pages:
        expect(page.locator("#live-status")).to_have_class("live-dot off")
        assert page.evaluate("() => hf.socket.connected") is False

    # While the pages are cut off, the first run finishes and a second one runs from start to end.
    second = live_system.cluster.trigger("live_dag", conf={"lines": 1, "delay": 0})
    assert live_system.wait_run("live_dag", first) == "success"
    assert live_system.wait_run("live_dag", second) == "success"
    time.sleep(1.0)

    # The pages have not seen any of it (which is what makes the checks below mean something).
    assert slow_cell.get_attribute("data-state") == "running"
    assert colour(slow_cell) == running_colour
    assert grid.locator(cell(first, "done")).get_attribute("data-state") != "success"
    assert grid.locator(head(first)).get_attribute("data-state") == "running"
    assert grid.locator(head(second)).count() == 0
    assert slow_row.get_attribute("data-state") == "running"
    assert run_page.locator("#run-state").get_attribute("data-state") == "running"
    assert last_run.locator("a").get_attribute("title") == first
    assert ti_page.locator("#ti-state").get_attribute("data-state") == "running"
    assert "line 30 of 30" not in ti_page.inner_text("#log")

    # Back online: each client reconnects by itself and its page refetches what it shows.
    context.set_offline(False)
    expect(grid.locator(head(first))).to_have_attribute("data-state", "success", timeout=CATCH_UP)
    for task in ("prepare", "slow_logger", "check", "done"):
        expect(grid.locator(cell(first, task))).to_have_attribute("data-state", "success")
        expect(grid.locator(cell(second, task))).to_have_attribute("data-state", "success")
    expect(grid.locator(head(second))).to_have_attribute("data-state", "success")
    assert colour(slow_cell) != running_colour

    expect(run_page.locator("#run-state")).to_have_attribute("data-state", "success", timeout=CATCH_UP)
    expect(run_page.locator('#ti-table [data-field="state"] .badge[data-state="success"]')).to_have_count(4)

    expect(last_run.locator("a")).to_have_attribute("title", second, timeout=CATCH_UP)
    expect(last_run.locator(".badge")).to_have_attribute("data-state", "success")

    expect(ti_page.locator("#log")).to_contain_text("line 30 of 30", timeout=CATCH_UP)
    expect(ti_page.locator("#ti-state")).to_have_attribute("data-state", "success")
    log = ti_page.inner_text("#log")
    assert [n for n in range(1, 31) if log.count(f"line {n} of 30") != 1] == [], "lines lost or repeated"

    for page in pages:
        expect(page.locator("#live-status")).to_have_class("live-dot on", timeout=CATCH_UP)
        assert page.evaluate("() => hf.socket.connected") is True
        assert page.evaluate("() => window.__noReload === true"), "the page was reloaded"
        assert page.evaluate("() => window.__reconnects") >= 1
        # Once per connection, the server said it is live and the page asked for the safety poll.
        assert page.evaluate("() => window.__safetyPollsDropped") >= 2
    assert errors == [], f"JavaScript errors: {errors}"
