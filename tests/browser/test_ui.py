"""The UI as a person uses it, in headless Chromium: log in, trigger from the form, watch the grid
and a running task's log change live without a reload, pause a DAG; a viewer cannot trigger."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.backfill import create_backfill
from hareflow.common.db import Backfill, Dag, DagRun
from sqlalchemy import select

from tests.browser.conftest import LiveSystem, poll
from tests.web.conftest import PASSWORD

pytestmark = pytest.mark.browser

#: Where the screenshots go: docs/screenshots/ when HAREFLOW_SCREENSHOTS names it, else a temp dir.
SCREENSHOTS_ENV = "HAREFLOW_SCREENSHOTS"


def mark_no_reload(page: Any) -> None:
    """Put a marker on the window: it survives only as long as the page is not reloaded."""
    page.evaluate("window.__hareflowNoReload = true")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__hareflowNoReload === true"), "the page was reloaded"


def latest_run(live: LiveSystem, dag_id: str) -> str:
    with live.cluster.sessions() as s:
        run_id = s.scalar(select(DagRun.run_id).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()))
    assert run_id is not None
    return run_id


def test_an_op_triggers_a_run_from_the_form_and_watches_the_grid_change_colour_live(
    open_as: Any, live_system: LiveSystem
) -> None:
    page = open_as("op")
    page.click("a.dag-link:text-is('live_dag')")
    page.wait_for_url("**/dags/live_dag/grid")
    page.click("#trigger-button")
    page.fill("#conf", '{"lines": 8, "delay": 0.3}')
    page.click("#trigger-submit")
    page.wait_for_url("**/dags/live_dag/grid")
    assert "triggered run" in page.inner_text(".flash")
    mark_no_reload(page)

    cell = '.task-row[data-task="slow_logger"] > .cell:last-child'
    page.wait_for_selector(f'{cell}[data-state="running"]')
    running_colour = page.eval_on_selector(cell, "el => getComputedStyle(el).backgroundColor")
    page.wait_for_selector(
        '.task-row[data-task="done"] > .cell:last-child[data-state="success"]', timeout=30_000
    )
    success_colour = page.eval_on_selector(cell, "el => getComputedStyle(el).backgroundColor")

    assert running_colour != success_colour
    assert page.get_attribute("#gridtable .run-col:last-child", "data-state") in ("running", "success")
    assert_not_reloaded(page)
    assert live_system.wait_run("live_dag", latest_run(live_system, "live_dag")) == "success"


def test_a_running_tasks_log_shows_lines_as_they_arrive(open_as: Any, live_system: LiveSystem) -> None:
    run_id = live_system.cluster.trigger("live_dag", conf={"lines": 12, "delay": 0.35})
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/live_dag/grid")
    page.wait_for_selector('.task-row[data-task="slow_logger"] > .cell:last-child[data-state="running"]')
    page.click('.task-row[data-task="slow_logger"] > .cell:last-child[data-state="running"]')
    page.click("#grid-detail a:text('Log and details')")
    page.wait_for_url(re.compile(r".*/tasks/slow_logger$"))
    mark_no_reload(page)
    first = page.inner_text("#log")

    page.wait_for_function(
        "n => document.getElementById('log').textContent.split('line ').length - 1 > n",
        arg=first.count("line "),
    )
    page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('line 12 of 12')", timeout=30_000
    )
    page.wait_for_selector('#ti-state[data-state="success"]')
    # The badge follows the event at once; the return value arrives with the details fetch after it.
    page.wait_for_function("() => document.getElementById('ti-result').textContent.includes('\"lines\": 12')")

    assert first.count("line ") < 12
    assert page.inner_text("#log").count("line ") == 12
    assert_not_reloaded(page)
    assert live_system.wait_run("live_dag", run_id) == "success"


def test_pausing_and_unpausing_a_dag_from_the_list(open_as: Any, live_system: LiveSystem) -> None:
    page = open_as("op")
    toggle = 'tr[data-dag="daily_report"] button.toggle'
    assert "on" in (page.get_attribute(toggle, "class") or "")

    page.click(toggle)
    page.wait_for_selector(f"{toggle}.off")
    assert "daily_report paused" in page.inner_text(".flash")
    with live_system.cluster.sessions() as s:
        assert s.get(Dag, "daily_report").is_paused is True  # type: ignore[union-attr]

    page.click(toggle)
    page.wait_for_selector(f"{toggle}.on")
    with live_system.cluster.sessions() as s:
        assert s.get(Dag, "daily_report").is_paused is False  # type: ignore[union-attr]


def test_a_taken_logical_date_is_shown_under_the_logical_date_field(
    open_as: Any, live_system: LiveSystem, tmp_path: Path
) -> None:
    first = live_system.cluster.trigger("daily_report")
    with live_system.cluster.sessions() as s:
        taken = s.scalar(select(DagRun.logical_date).where(DagRun.run_id == first))
    assert taken is not None
    page = open_as("op")
    page.goto(f"{live_system.url}/dags/daily_report/trigger")
    page.fill('input[name="logical_date"]', taken.isoformat())
    page.click("#trigger-submit")
    page.wait_for_selector("#logical_date-error")

    date_box = page.locator('input[name="logical_date"]').bounding_box()
    error_box = page.locator("#logical_date-error").bounding_box()
    run_id_box = page.locator('input[name="run_id"]').bounding_box()
    assert date_box and error_box and run_id_box
    assert "already has a run at logical date" in page.inner_text("#logical_date-error")
    assert page.query_selector("#run_id-error") is None
    assert abs(error_box["x"] - date_box["x"]) < 2  # in the logical date's column, not the run id's
    assert error_box["x"] > run_id_box["x"] + run_id_box["width"]
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    page.screenshot(path=str(target / "trigger_error.png"), full_page=True)


def test_the_runs_tab_shows_a_new_run_and_its_end_without_a_reload(
    open_as: Any, live_system: LiveSystem
) -> None:
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/live_dag/runs")
    page.wait_for_load_state("networkidle")
    before = page.inner_text("#runs-total")
    mark_no_reload(page)

    run_id = live_system.cluster.trigger("live_dag", conf={"lines": 3, "delay": 0.2})
    row = f'#runs-table tr[data-run="{run_id}"]'
    page.wait_for_selector(row)
    page.wait_for_selector(f'{row} .badge[data-state="success"]', timeout=30_000)

    assert page.inner_text("#runs-total") != before
    assert_not_reloaded(page)
    assert live_system.wait_run("live_dag", run_id) == "success"


def test_the_backfills_page_shows_a_backfill_and_its_progress_without_a_reload(
    open_as: Any, live_system: LiveSystem
) -> None:
    page = open_as("viewer")
    page.goto(f"{live_system.url}/backfills")
    page.wait_for_load_state("networkidle")
    mark_no_reload(page)
    with live_system.cluster.sessions() as s, s.begin():
        backfill, _ = create_backfill(
            s,
            "daily_report",
            datetime(2026, 2, 10, tzinfo=UTC),
            datetime(2026, 2, 11, tzinfo=UTC),
            max_active_runs=2,
            created_by="op",
        )
        backfill_id = backfill.id

    row = f'#backfills-table tr[data-backfill="{backfill_id}"]'
    page.wait_for_selector(row, timeout=30_000)
    page.wait_for_function(
        "sel => (document.querySelector(sel) || {}).textContent.includes('2 ok')", arg=row, timeout=30_000
    )

    assert_not_reloaded(page)


def test_a_backfill_is_previewed_created_watched_and_cancelled_from_the_ui(
    open_as: Any, live_system: LiveSystem, tmp_path: Path
) -> None:
    page = open_as("op")
    page.goto(f"{live_system.url}/dags/daily_report/grid")
    page.click("#backfill-button")
    page.wait_for_url("**/dags/daily_report/backfill")
    page.fill("input[name=start]", "2026-03-01")
    page.fill("input[name=end]", "2026-04-29")
    page.fill("input[name=max_active_runs]", "1")
    page.click("#backfill-preview")
    page.wait_for_selector("#plan-table")

    assert page.locator("#plan-table tr.plan-create").count() == 60
    assert "Nothing has changed yet" in page.inner_text("#plan-summary")
    with live_system.cluster.sessions() as s:
        assert not s.scalars(
            select(Backfill).where(Backfill.from_date == datetime(2026, 3, 1, tzinfo=UTC))
        ).all()
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    page.screenshot(path=str(target / "backfill_preview.png"), full_page=True)

    page.click("#backfill-create")
    page.wait_for_url("**/backfills?dag_id=daily_report")
    assert "60 run(s) to go" in page.inner_text(".flash")
    row = page.locator("#backfills-table tbody tr").first
    backfill_id = row.get_attribute("data-backfill")
    mark_no_reload(page)
    # One run at a time: the progress moves on the page while the backfill runs.
    page.wait_for_function(
        "sel => /[1-9][0-9]* ok/.test((document.querySelector(sel) || {}).textContent || '')",
        arg=f'#backfills-table tr[data-backfill="{backfill_id}"]',
        timeout=30_000,
    )
    page.click(f'#backfills-table tr[data-backfill="{backfill_id}"] button.danger')
    page.wait_for_selector(".flash:has-text('cancelled')")
    with live_system.cluster.sessions() as s:
        backfill = s.get(Backfill, int(backfill_id or 0))
        assert backfill is not None and backfill.state == "cancelled"
        assert backfill.created_by == "op" and backfill.max_active_runs == 1


NO_POLLING = (
    "(() => { const set = window.setInterval; window.setInterval = (fn, ms, ...rest) =>"
    " ms === 5000 ? 0 : set(fn, ms, ...rest); })();"
)


def _text_of(page: Any, selector: str) -> str:
    return page.evaluate("sel => (document.querySelector(sel) || {}).textContent || ''", selector)


def _wait_text(page: Any, selector: str, predicate: Any, timeout: float = 30.0) -> str:
    return poll(lambda: _text_of(page, selector), predicate, timeout, what=selector)  # type: ignore[no-any-return]


def test_the_workers_and_queues_pages_follow_tasks_live_without_their_5_s_refresh(
    open_as: Any, live_system: LiveSystem
) -> None:
    """Their 5-second refresh is switched off here, so only live events can change the counts."""
    workers = open_as("viewer")
    workers.context.add_init_script(NO_POLLING)
    workers.goto(f"{live_system.url}/workers")
    queues = workers.context.new_page()
    queues.goto(f"{live_system.url}/queues")
    running = '#workers-table tr[data-worker="worker-1"] td.running'
    _wait_text(workers, running, lambda t: t == "0")
    mark_no_reload(workers)

    run_id = live_system.cluster.trigger("live_dag", conf={"lines": 12, "delay": 0.4})
    _wait_text(workers, running, lambda t: t == "1")
    _wait_text(
        queues, "#queues-table tbody", lambda t: re.search(r"default\s*\S+\s*\S+\s*0\s*1", t) is not None
    )
    assert live_system.wait_run("live_dag", run_id) == "success"
    _wait_text(workers, running, lambda t: t == "0")

    assert_not_reloaded(workers)


def test_the_audit_log_shows_a_new_action_without_a_reload(open_as: Any, live_system: LiveSystem) -> None:
    page = open_as("op")
    page.goto(f"{live_system.url}/audit")
    mark_no_reload(page)

    page.evaluate(
        """async () => fetch('/api/v1/dags/daily_report', {method: 'PATCH',
             headers: {'Content-Type': 'application/json',
                       'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
             body: JSON.stringify({is_paused: true})})"""
    )
    _wait_text(page, "#audit-table tbody tr", lambda t: "pause" in t and "daily_report" in t)
    page.evaluate(
        """async () => fetch('/api/v1/dags/daily_report', {method: 'PATCH',
             headers: {'Content-Type': 'application/json',
                       'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
             body: JSON.stringify({is_paused: false})})"""
    )
    _wait_text(page, "#audit-table tbody tr", lambda t: "unpause" in t)

    assert_not_reloaded(page)


def test_times_follow_the_zone_picked_in_the_header(browser: Any, live_system: LiveSystem) -> None:
    run_id = live_system.cluster.trigger("live_dag", conf={"lines": 1, "delay": 0.01})
    assert live_system.wait_run("live_dag", run_id) == "success"
    context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id="Asia/Tokyo")
    try:
        page = context.new_page()
        page.goto(live_system.url + "/login")
        page.fill("input[name=username]", "viewer")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dags")
        url = f"{live_system.url}/dags/live_dag/runs/{run_id}/tasks/prepare"
        page.goto(url)
        started = "td[data-field=start_date]"
        utc_text = _wait_text(page, started, lambda t: t.endswith(" UTC"))

        with page.expect_navigation():  # the page reloads in the browser's zone
            page.select_option("#tz-select", "local")
        tokyo = _wait_text(page, started, lambda t: t.endswith("GMT+9"))
        logical = page.locator("time[data-ts]").first

        utc = datetime.strptime(utc_text.removesuffix(" UTC"), "%Y-%m-%d %H:%M:%S")
        assert datetime.strptime(tokyo.removesuffix(" GMT+9"), "%Y-%m-%d %H:%M:%S") - utc == timedelta(
            hours=9
        )
        assert logical.inner_text().endswith("GMT+9") and logical.get_attribute("title").endswith(" UTC")
        page.goto(f"{live_system.url}/dags/live_dag/runs")  # remembered across pages
        assert page.input_value("#tz-select") == "local"
        page.goto(f"{live_system.url}/dags/live_dag/grid")  # the grid's run heads too
        _wait_text(page, "#gridtable .grid-corner", lambda t: "logical date (GMT+9)" in t)
        with page.expect_navigation():
            page.select_option("#tz-select", "utc")
        page.goto(url)
        assert _wait_text(page, started, lambda t: t.endswith(" UTC")) == utc_text
    finally:
        context.close()


def test_log_lines_show_their_timestamps_when_asked_and_the_text_stays_the_log(
    open_as: Any, live_system: LiveSystem
) -> None:
    run_id = live_system.cluster.trigger("live_dag", conf={"lines": 3, "delay": 0.3})
    assert live_system.wait_run("live_dag", run_id) == "success"
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/live_dag/runs/{run_id}/tasks/slow_logger")
    page.wait_for_selector("#log:has-text('line 3 of 3')")
    shown = "Array.from(document.querySelectorAll('#log .ts')).map(e => getComputedStyle(e).display)"
    stamps = (
        "Array.from(document.querySelectorAll('#log .ts')).map(e => getComputedStyle(e, '::before').content)"
    )

    assert set(page.evaluate(shown)) == {"none"}
    page.check("#log-timestamps")
    contents = page.evaluate(stamps)

    lines = [line for line in page.evaluate("document.getElementById('log').textContent").split("\n") if line]
    assert len(contents) == len(lines) and set(page.evaluate(shown)) == {"inline"}
    assert all(re.fullmatch(r'"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\] "', c) for c in contents), contents
    # Lines are stamped in the order they came.
    assert contents == sorted(contents)
    text = page.evaluate("document.getElementById('log').textContent")
    assert "UTC]" not in text and "line 1 of 3" in text  # search, copy and download see the log alone
    page.reload()  # remembered
    assert page.is_checked("#log-timestamps") and set(page.evaluate(shown)) == {"inline"}
    page.uncheck("#log-timestamps")


def test_a_log_can_be_searched_and_downloaded_and_an_empty_one_says_so(
    open_as: Any, live_system: LiveSystem, tmp_path: Path
) -> None:
    run_id = live_system.cluster.trigger("live_dag", conf={"lines": 4, "delay": 0.01})
    assert live_system.wait_run("live_dag", run_id) == "success"
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/live_dag/runs/{run_id}/tasks/slow_logger")
    page.wait_for_selector("#log:has-text('line 4 of 4')")

    page.fill("#log-search", "LINE 3")
    page.wait_for_selector("#log-filtered:not([hidden]) mark")
    shown = page.inner_text("#log-filtered")
    assert "line 3 of 4" in shown and "line 2 of 4" not in shown
    assert page.inner_text("#log-matches") == "1 line"
    assert page.is_hidden("#log")
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    page.screenshot(path=str(target / "log_search.png"), full_page=True)
    page.fill("#log-search", "")
    page.wait_for_selector("#log:not([hidden])")

    href = page.get_attribute("#log-download", "href")
    assert href is not None and href.endswith("/logs/1/download")
    text = page.evaluate("async url => await (await fetch(url)).text()", href)
    assert all(f"line {i} of 4" in text for i in range(1, 5))

    page.goto(f"{live_system.url}/dags/live_dag/runs/{run_id}/tasks/check")  # returns, prints nothing
    assert page.is_visible("#log-empty") and page.inner_text("#log-empty") == "no output"
    assert page.is_hidden("#log")


def test_a_viewer_cannot_trigger(open_as: Any, live_system: LiveSystem) -> None:
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/live_dag/grid")

    assert page.query_selector("#trigger-button") is None
    assert page.query_selector('tr[data-dag="live_dag"] button.toggle') is None
    response = page.goto(f"{live_system.url}/dags/live_dag/trigger")
    assert response is not None and response.status == 403
    assert "needs the op role" in page.inner_text("main")
    status = page.evaluate(
        """async () => (await fetch('/api/v1/dags/live_dag/runs', {method: 'POST',
             headers: {'Content-Type': 'application/json',
                       'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
             body: '{}'})).status"""
    )
    assert status == 403


def test_screenshots_of_the_main_pages(open_as: Any, live_system: LiveSystem, tmp_path: Path) -> None:
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    cluster = live_system.cluster
    flaky = cluster.trigger("flaky_dag")
    run_id = cluster.trigger("live_dag", conf={"lines": 5, "delay": 0.05})
    cluster.wait_for_run("flaky_dag", flaky)
    cluster.wait_for_run("live_dag", run_id)
    with cluster.sessions() as s, s.begin():
        create_backfill(
            s,
            "daily_report",
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 1, 4, tzinfo=UTC),
            created_by="op",
        )
    page = open_as("admin")
    url = live_system.url
    shots = {
        "dags": "/dags",
        "graph": "/dags/flaky_dag/graph",
        "runs": "/dags/live_dag/runs",
        "run": f"/dags/flaky_dag/runs/{flaky}",
        "task_instance": f"/dags/live_dag/runs/{run_id}/tasks/slow_logger",
        "task_failed": f"/dags/flaky_dag/runs/{flaky}/tasks/bad_branch",
        "trigger": "/dags/live_dag/trigger",
        "source": "/dags/live_dag/source",
        "details": "/dags/flaky_dag/details",
        "workers": "/workers",
        "queues": "/queues",
        "backfills": "/backfills",
        "backfill_form": "/dags/daily_report/backfill",
        "users": "/users",
        "audit": "/audit",
    }
    # Pages whose full-width screenshots other tests take with their own data: narrow ones here.
    narrow_only = {
        "assets": "/assets",
        "asset_lineage": "/assets/lineage",
        "connections": "/connections",
        "variables": "/variables",
        "durations": "/dags/live_dag/durations",
        "change_password": "/account/password",
    }
    for name, path in narrow_only.items():
        page.set_viewport_size({"width": 800, "height": 900})
        page.goto(url + path)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(target / f"{name}_narrow.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})
    for name, path in shots.items():
        page.goto(url + path)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(target / f"{name}.png"), full_page=True)
        page.set_viewport_size({"width": 800, "height": 900})  # and as on a narrow window
        page.wait_for_timeout(100)
        page.screenshot(path=str(target / f"{name}_narrow.png"), full_page=True)
        page.set_viewport_size({"width": 1400, "height": 900})
    login = page.context.browser.new_page(viewport={"width": 1400, "height": 900})
    login.goto(url + "/login")
    login.screenshot(path=str(target / "login.png"))
    login.close()
    # Each page's file was written (the folder may hold others: docs/screenshots has every test's).
    expected = [*shots, *(f"{name}_narrow" for name in [*shots, *narrow_only]), "login"]
    written = [name for name in expected if (target / f"{name}.png").stat().st_size > 0]
    assert written == expected


def test_the_scheduler_banner_appears_when_it_stops_and_goes_when_it_is_back(
    open_as: Any, live_system: LiveSystem, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a reload: the page rechecks /health (every 15 s; sped up here) and shows or hides
    the banner. The scheduler 'stops' by no longer writing its heartbeat."""
    from hareflow.common.db import SchedulerHeartbeat
    from hareflow.scheduler.loop import Scheduler
    from playwright.sync_api import expect

    page = open_as("viewer")
    page.context.add_init_script(
        "(() => { const set = window.setInterval; window.setInterval = (fn, ms, ...rest) =>"
        " set(fn, ms === 15000 ? 200 : ms, ...rest); })();"
    )
    page.reload()
    banner = page.locator("#scheduler-alert")
    expect(banner).to_be_hidden()
    mark_no_reload(page)

    monkeypatch.setattr(Scheduler, "heartbeat", lambda self, now: None)
    with live_system.cluster.sessions() as s, s.begin():
        for row in s.query(SchedulerHeartbeat):
            row.last_heartbeat = datetime.now(UTC) - timedelta(seconds=150)
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner).to_contain_text("The scheduler was last heard from 2m")
    expect(banner).to_contain_text("hareflow health scheduler")
    if os.environ.get(SCREENSHOTS_ENV):
        page.screenshot(path=str(Path(os.environ[SCREENSHOTS_ENV]) / "scheduler_down.png"))

    monkeypatch.undo()  # the scheduler beats again within its 5 s interval
    expect(banner).to_be_hidden(timeout=15_000)
    assert_not_reloaded(page)


def test_an_admin_issues_an_api_token_sees_it_listed_and_revokes_it(
    open_as: Any, live_system: LiveSystem
) -> None:
    import urllib.error
    import urllib.request

    def status(token: str) -> int:
        request = urllib.request.Request(
            live_system.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    page = open_as("admin")
    page.goto(live_system.url + "/users")
    page.click('tr[data-user="viewer"] button:has-text("New API token")')
    token = page.inner_text("#new-token code.token").strip()
    assert token.startswith("hft_") and status(token) == 200
    row = page.locator("#tokens-table tbody tr", has_text="viewer").last
    token_id = row.get_attribute("data-token")
    assert "never" in row.inner_text()  # the page was rendered before the token was first used

    page.click(f'tr[data-token="{token_id}"] button:has-text("Revoke")')  # the confirm is accepted
    page.wait_for_selector(f'tr[data-token="{token_id}"]', state="detached")

    assert f"API token {token_id} of viewer revoked" in page.inner_text("body")
    assert status(token) == 401
