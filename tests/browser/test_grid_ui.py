"""The grid in headless Chromium: run heads (logical date, run type, duration bar), the legend, the
task column and heads that stay in view while a wide grid scrolls, filters kept in the URL, and
squares (a mapped task's too) that change live without a refetch of the grid per event.
Screenshots (grid.png at 1400x900, grid_narrow.png at 800 px, grid_legend.png) go to
docs/screenshots/ when HAREFLOW_SCREENSHOTS names it."""

from __future__ import annotations

import os
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import Dag, DagRun, TaskInstance
from sqlalchemy import insert, select, update

from tests.browser.conftest import LiveSystem, delivered, grid_cell, now, poll
from tests.browser.test_reconnect import NO_SAFETY_POLL
from tests.browser.test_ui import SCREENSHOTS_ENV, assert_not_reloaded, mark_no_reload

pytestmark = pytest.mark.browser

WIDE_TASKS = 40
WIDE_RUNS = 60
WIDE_DAG = f'''
    """{WIDE_TASKS} tasks in a line, never run here: its {WIDE_RUNS} runs are inserted by the test."""
    from hareflow import DAG, BashTask, chain

    with DAG("wide_dag", schedule=None, tags=["demo"]):
        chain(*[BashTask(f"step_{{i:02d}}_with_a_long_name", "true") for i in range({WIDE_TASKS})])
'''
MAPPED_LIVE_DAG = '''
    """Fans out into six instances that take a moment each, so a browser can watch them."""
    import time
    from hareflow import DAG, task

    with DAG("mapped_live", tags=["example"]):
        @task
        def parts():
            return list(range(6))

        @task
        def work(part):
            time.sleep(0.8)
            return part

        @task
        def total(values):
            return sum(values)

        total(work.expand(part=parts()))
'''

#: The state shown for one square: the task's (or a mapped instance's) row, the run's column.
CELL_STATE = """([runId, taskId, mapIndex]) => {
  const heads = Array.from(document.querySelectorAll("#gridtable .run-col"));
  const col = heads.findIndex(h => h.dataset.run === runId);
  const sel = mapIndex === null ? '.task-row[data-task="' + CSS.escape(taskId) + '"]'
    : '.instance-row[data-task="' + CSS.escape(taskId) + '"][data-map-index="' + mapIndex + '"]';
  const row = document.querySelector("#gridtable " + sel);
  if (col < 0 || !row) return null;
  return row.children[col + 1].dataset.state || null;
}"""


def screenshots(tmp_path: Path) -> Path:
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def add_dag(live: LiveSystem, name: str, source: str) -> None:
    folder = Path(str(live.cluster.settings.dags_folder))
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    live.cluster.wait_for_dag(name)


@pytest.fixture(scope="module")
def wide_runs(live_system: LiveSystem) -> list[dict[str, Any]]:
    """wide_dag with 60 finished runs of every type, inserted directly (oldest first)."""
    add_dag(live_system, "wide_dag", WIDE_DAG)
    kinds = ("scheduled", "scheduled", "manual", "backfill", "asset_triggered")
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    runs = []
    for day in range(WIDE_RUNS):
        when = t0 + timedelta(days=day)
        kind = kinds[day % len(kinds)]
        runs.append(
            {
                "dag_id": "wide_dag",
                "run_id": f"{kind}__{when.date()}_{uuid.uuid4().hex[:4]}",
                "run_type": kind,
                "state": "failed" if day % 9 == 4 else "success",
                "logical_date": when,
                "interval_key": when if kind == "scheduled" else None,
                "data_interval_start": when,
                "data_interval_end": when + timedelta(days=1),
                "conf": {},
                "queued_at": when,
                "start_date": when + timedelta(seconds=2 + day % 5),
                "end_date": when + timedelta(seconds=30 + 3 * (day % 11)),
            }
        )
    with live_system.cluster.sessions() as s, s.begin():
        s.execute(insert(DagRun), runs)
        pks = s.execute(select(DagRun.id, DagRun.run_id).where(DagRun.dag_id == "wide_dag")).all()
        s.execute(
            insert(TaskInstance),
            [
                {
                    "run_pk": pk,
                    "dag_id": "wide_dag",
                    "run_id": run_id,
                    "task_id": f"step_{i:02d}_with_a_long_name",
                    "map_index": -1,
                    "state": "success",
                    "try_number": 1,
                    "max_tries": 1,
                    "queue": "default",
                    "priority": 1,
                    "pool_slots": 1,
                }
                for pk, run_id in pks
                for i in range(WIDE_TASKS)
            ],
        )
    return runs


def test_run_heads_show_the_logical_date_run_type_and_a_duration_bar_and_the_legend_names_every_state(
    open_as: Any, live_system: LiveSystem, tmp_path: Path
) -> None:
    cluster = live_system.cluster
    short = cluster.trigger("live_dag", conf={"lines": 1, "delay": 0.05})
    cluster.wait_for_run("live_dag", short)
    long = cluster.trigger("live_dag", conf={"lines": 4, "delay": 0.4})
    cluster.wait_for_run("live_dag", long)
    running = cluster.trigger("live_dag", conf={"lines": 16, "delay": 0.5})
    page = open_as("op")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{live_system.url}/dags/live_dag/grid")
    head = f'#gridtable .run-col[data-run="{running}"]'
    page.wait_for_selector(f'{head}[data-state="running"]')
    poll(
        lambda: page.evaluate(CELL_STATE, [running, "slow_logger", None]) == "running",
        what="slow_logger running",
    )

    with cluster.sessions() as s:
        logical = s.scalar(select(DagRun.logical_date).where(DagRun.run_id == short))
    assert logical is not None
    label = page.inner_text(f'#gridtable .run-col[data-run="{short}"] .run-label')
    assert label == logical.astimezone(UTC).strftime("%m-%d %H:%M") or label == logical.astimezone(
        UTC
    ).strftime("%m-%d %H:%M:%S")
    assert "logical date (UTC)" in page.inner_text("#gridtable .grid-corner")
    assert page.inner_text(f"{head} .run-type") == "M"
    assert page.get_attribute(f"{head} .run-type", "title") == "manual run"
    heights = {
        run: page.eval_on_selector(f'#gridtable .run-col[data-run="{run}"] .run-bar', "el => el.offsetHeight")
        for run in (short, long)
    }
    assert 2 <= heights[short] < heights[long]
    page.hover(f'#gridtable .run-col[data-run="{long}"]')
    title = page.get_attribute(f'#gridtable .run-col[data-run="{long}"]', "title") or ""
    assert long in title and "ran " in title and "manual run" in title

    legend = page.locator("#grid-legend .legend-item[data-state]")
    names = legend.evaluate_all("els => els.map(e => e.dataset.state)")
    assert names == [
        "none",
        "scheduled",
        "queued",
        "running",
        "success",
        "failed",
        "up_for_retry",
        "up_for_reschedule",
        "upstream_failed",
        "skipped",
        "removed",
    ]
    marks = legend.evaluate_all(
        "els => els.map(e => getComputedStyle(e.querySelector('.cell'), '::after').content)"
    )
    # A mark per state, but for the plain filled square of success and the empty outlined one of none.
    marked = [m for name, m in zip(names, marks, strict=True) if name not in ("none", "success")]
    assert len(set(marked)) == len(marked) == len(names) - 2 and "none" not in marked, marks
    assert marks[names.index("none")] == marks[names.index("success")] == "none"
    backgrounds = legend.evaluate_all(
        "els => els.map(e => getComputedStyle(e.querySelector('.cell')).backgroundColor)"
    )
    colours = dict(zip(names, backgrounds, strict=True))
    assert colours["running"] != colours["success"]
    running_cell = page.evaluate(
        """([runId]) => { const heads = Array.from(document.querySelectorAll('#gridtable .run-col'));
           const col = heads.findIndex(h => h.dataset.run === runId);
           const row = document.querySelector('#gridtable .task-row[data-task="slow_logger"]');
           const cell = row.children[col + 1];
           return [getComputedStyle(cell).backgroundColor, getComputedStyle(cell, '::after').content]; }""",
        [running],
    )
    assert running_cell == [colours["running"], marks[names.index("running")]]

    page.click(f'#gridtable .run-col[data-run="{long}"]')
    page.wait_for_selector(f"#grid-detail h4:text-is('{long}')")
    target = screenshots(tmp_path)
    page.screenshot(path=str(target / "grid.png"))
    page.locator(".grid-wrap").screenshot(path=str(target / "grid_legend.png"))
    page.set_viewport_size({"width": 800, "height": 900})
    page.screenshot(path=str(target / "grid_narrow.png"), full_page=True)
    cluster.wait_for_run("live_dag", running, timeout=90)


def test_the_task_column_and_run_heads_stay_in_view_while_a_wide_grid_scrolls(
    open_as: Any, live_system: LiveSystem, wide_runs: list[dict[str, Any]]
) -> None:
    page = open_as("viewer")
    page.set_viewport_size({"width": 800, "height": 600})
    page.goto(f"{live_system.url}/dags/wide_dag/grid?runs=100")
    page.wait_for_selector("#gridtable .task-row")
    assert page.locator("#gridtable .run-col").count() == WIDE_RUNS
    box = page.locator("#grid").bounding_box()
    first_task = page.locator('#gridtable .task-row[data-task="step_05_with_a_long_name"] .task')
    first_head = page.locator("#gridtable .grid-corner")
    before_task, before_head = first_task.bounding_box(), first_head.bounding_box()
    assert page.evaluate(
        "document.getElementById('grid').scrollWidth > document.getElementById('grid').clientWidth"
    )

    page.evaluate("document.getElementById('grid').scrollTo(100000, 60)")
    poll(lambda: page.evaluate("document.getElementById('grid').scrollLeft > 500"), what="the grid to scroll")
    after_task, after_head = first_task.bounding_box(), first_head.bounding_box()
    newest = page.locator(f'#gridtable .run-col[data-run="{wide_runs[-1]["run_id"]}"]').bounding_box()

    assert box is not None and before_task and after_task and before_head and after_head and newest
    assert abs(after_task["x"] - before_task["x"]) < 1 and after_task["x"] >= box["x"]  # the name stays left
    assert abs(after_head["y"] - before_head["y"]) < 1  # the heads stay on top
    assert (
        newest["x"] > after_task["x"] + after_task["width"] - 1
    )  # the newest column shows right of the names
    assert newest["x"] + newest["width"] <= box["x"] + box["width"] + 1

    # The keyboard: from the newest run's first task, down one task and left one run.
    page.focus("#grid")
    page.keyboard.press("ArrowDown")
    page.wait_for_selector("#grid-detail h4:text-is('step_00_with_a_long_name')")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("#grid-detail h4:text-is('step_01_with_a_long_name')")
    selected = page.locator(grid_cell(wide_runs[-2]["run_id"], "step_01_with_a_long_name"))
    assert "selected" in (selected.get_attribute("class") or "")


def test_filters_go_into_the_url_and_the_link_shows_the_same_runs(
    open_as: Any, live_system: LiveSystem, wide_runs: list[dict[str, Any]]
) -> None:
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/wide_dag/grid")
    page.wait_for_selector("#gridtable .run-col")
    mark_no_reload(page)
    assert page.locator("#gridtable .run-col").count() == 25

    page.select_option("#grid-run-type", "backfill")
    backfills = [r["run_id"] for r in wide_runs if r["run_type"] == "backfill"]
    poll(lambda: page.locator("#gridtable .run-col").count() == len(backfills), what="the backfill runs only")
    page.select_option("#grid-runs", "365")
    page.select_option("#grid-run-state", "success")
    wanted = [r["run_id"] for r in wide_runs if r["run_type"] == "backfill" and r["state"] == "success"]
    poll(
        lambda: (
            page.locator("#gridtable .run-col").evaluate_all("els => els.map(e => e.dataset.run)") == wanted
        ),
        what="the successful backfill runs",
    )
    assert_not_reloaded(page)
    assert page.url.endswith("/dags/wide_dag/grid?runs=365&run_type=backfill&state=success")
    assert set(page.locator("#gridtable .run-type").all_inner_texts()) == {"B"}

    other = open_as("viewer")
    other.goto(page.url)
    other.wait_for_selector("#gridtable .run-col")
    assert other.locator("#gridtable .run-col").evaluate_all("els => els.map(e => e.dataset.run)") == wanted
    assert (
        other.input_value("#grid-run-type") == "backfill"
        and other.input_value("#grid-run-state") == "success"
    )
    assert other.input_value("#grid-runs") == "365"
    page.go_back()
    poll(lambda: page.input_value("#grid-run-state") == "", what="the filter before")
    poll(
        lambda: page.locator("#gridtable .run-col").count() == len(backfills), what="the backfill runs again"
    )


def test_squares_change_live_without_a_grid_refetch_per_event_a_mapped_tasks_too(
    open_as: Any, live_system: LiveSystem
) -> None:
    add_dag(live_system, "mapped_live", MAPPED_LIVE_DAG)
    page = open_as("viewer")
    page.context.add_init_script(NO_SAFETY_POLL)  # no resync every 30 s in the middle of the count
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/v1/dags/mapped_live/grid" in r.url else None)
    page.goto(f"{live_system.url}/dags/mapped_live/grid")
    page.wait_for_selector("#gridtable .task-row[data-task='work'] .expand-toggle")
    page.click("#gridtable .task-row[data-task='work'] .expand-toggle")  # its instance rows, once it expands
    poll(lambda: page.evaluate("!!(window.hf.socket && window.hf.socket.connected)"), what="the socket")
    poll(delivered(page, lambda: requests), what="the resync that follows connecting")  # not counted below
    page.wait_for_load_state("networkidle")
    mark_no_reload(page)
    # Every 50 ms, note what the squares of the newest run show, and count the task events.
    page.evaluate("() => { window.__cellState = " + CELL_STATE + "; }")
    page.evaluate(
        """() => {
          window.__seen = { summary: [], instance: [], total: [], events: 0 };
          window.hf.socket.onAny((name, events) => {
            if (name === "events") window.__seen.events += events.filter(e => e.kind === "task").length;
          });
          const state = window.__cellState;
          const note = (list, value) => { if (value && list[list.length - 1] !== value) list.push(value); };
          setInterval(() => {
            const heads = document.querySelectorAll("#gridtable .run-col");
            if (!heads.length) return;
            const run = heads[heads.length - 1].dataset.run;
            note(window.__seen.summary, state([run, "work", null]));
            note(window.__seen.instance, state([run, "work", 4]));
            note(window.__seen.total, state([run, "total", null]));
          }, 50);
        }"""
    )
    requests.clear()

    run_id = live_system.cluster.trigger("mapped_live")
    assert live_system.wait_run("mapped_live", run_id, timeout=90) == "success"
    poll(
        lambda: page.evaluate("window.__seen.total.slice(-1)[0] === 'success'"),
        what="total's square to succeed",
    )
    seen = page.evaluate("window.__seen")

    assert "running" in seen["summary"] and seen["summary"][-1] == "success", seen
    assert "running" in seen["instance"] and seen["instance"][-1] == "success", seen
    assert page.inner_text("#gridtable .task-row[data-task='work'] .cell.mapped") == "6"
    assert page.locator("#gridtable .instance-row[data-task='work']").count() == 6
    # 6 instances x (queued, running, success) and the other tasks: over 20 task events, and
    # refetches only for the new run and the expansion (plus a throttled spare).
    assert seen["events"] >= 20, seen
    assert len(requests) <= 4, requests
    head = f'#gridtable .run-col[data-run="{run_id}"]'
    poll(lambda: page.get_attribute(head, "data-state") == "success", what="the run's head to succeed")
    assert_not_reloaded(page)


TALL_TASKS = 400
TALL_DAG = f'''
    """{TALL_TASKS} tasks, never run here: the test inserts its runs and sends their events."""
    from hareflow import DAG, BashTask

    with DAG("tall_dag", schedule=None):
        for i in range({TALL_TASKS}):
            BashTask(f"t{{i:03d}}", "true")
'''

#: Installed before the page's scripts: notes how many rows the grid's first frame has, and holds
#: every frame callback until ``window.__release()``, so the rows below the first screen (which
#: the grid adds after its first frame) stay out while the test sends events about them.
HOLD_FRAMES = """
(() => {
  const frame = window.requestAnimationFrame.bind(window);
  window.__held = [];
  window.__holding = true;
  window.requestAnimationFrame = function (callback) {
    if (!window.__holding) return frame(callback);
    window.__held.push(callback);
    return 0;
  };
  window.__release = function () {
    window.__holding = false;
    window.__held.splice(0).forEach(function (callback) { frame(callback); });
  };
  new MutationObserver(function (list, observer) {
    const table = document.getElementById("gridtable");
    if (!table) return;
    observer.disconnect();
    window.__firstRows = table.querySelectorAll(".grid-body .grid-row").length;
  }).observe(document, { childList: true, subtree: true });
})();
"""


@pytest.fixture(scope="module")
def tall(live_system: LiveSystem) -> LiveSystem:
    """tall_dag, paused: the scheduler leaves the runs the tests insert as they are."""
    add_dag(live_system, "tall_dag", TALL_DAG)
    with live_system.cluster.sessions() as s, s.begin():
        s.execute(update(Dag).where(Dag.dag_id == "tall_dag").values(is_paused=True))
    return live_system


def _insert_tall_run(live: LiveSystem, day: int, state: str) -> str:
    when = datetime(2026, 6, 1, tzinfo=UTC) + timedelta(days=day)
    run_id = f"manual__{when.date()}_{uuid.uuid4().hex[:4]}"
    with live.cluster.sessions() as s, s.begin():
        pk = s.scalar(
            insert(DagRun)
            .values(
                dag_id="tall_dag",
                run_id=run_id,
                run_type="manual",
                state=state,
                logical_date=when,
                data_interval_start=when,
                data_interval_end=when,
                conf={},
                queued_at=when,
                start_date=when,
            )
            .returning(DagRun.id)
        )
        s.execute(
            insert(TaskInstance),
            [
                {
                    "run_pk": pk,
                    "dag_id": "tall_dag",
                    "run_id": run_id,
                    "task_id": f"t{i:03d}",
                    "map_index": -1,
                    "state": "success" if state == "success" else "scheduled",
                    "try_number": 1,
                    "max_tries": 1,
                    "queue": "default",
                    "priority": 1,
                    "pool_slots": 1,
                }
                for i in range(TALL_TASKS)
            ],
        )
    return run_id


def open_live_grid(page: Any, live: LiveSystem, dag_id: str) -> list[str]:
    """Open the DAG's grid and wait until its socket is connected and the resync that follows has
    landed; the list of the grid JSON requests the page makes (growing as it makes more)."""
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if f"/api/v1/dags/{dag_id}/grid" in r.url else None)
    page.goto(f"{live.url}/dags/{dag_id}/grid")
    page.wait_for_selector("#gridtable")
    poll(lambda: page.evaluate("!!(window.hf.socket && window.hf.socket.connected)"), what="the socket")
    poll(delivered(page, lambda: requests), what="the resync that follows connecting")
    page.wait_for_load_state("networkidle")
    mark_no_reload(page)
    return requests


def _send(live: LiveSystem, **event: Any) -> None:
    from hareflow.common.messages import StateEvent

    live.cluster._shared.publish_events([StateEvent(dag_id="tall_dag", at=now().timestamp(), **event)])


def test_a_tall_grid_draws_its_first_screen_first_and_the_rest_after_events_included(
    open_as: Any, tall: LiveSystem
) -> None:
    old = _insert_tall_run(tall, 0, "success")
    run_id = _insert_tall_run(tall, 1, "running")
    page = open_as("viewer")
    page.context.add_init_script(HOLD_FRAMES + NO_SAFETY_POLL)
    requests = open_live_grid(page, tall, "tall_dag")

    # The first frame has a screenful of rows (the grid's box is about 37 rows high), not 400.
    first = page.evaluate("window.__firstRows")
    assert 37 <= first < 100, first
    assert page.locator("#gridtable .task-row").count() == first  # the rest wait for the frame
    assert page.get_attribute("#grid", "data-rendered") == ""

    # An event about a task whose row is still to come changes what its square will show, with
    # no refetch of the grid; the metastore keeps the old state, so only the event can show it.
    requests.clear()
    page.evaluate(
        """() => { window.__events = 0; window.hf.socket.onAny((name, events) => {
             if (name === "events") window.__events += events.length; }); }"""
    )
    _send(tall, kind="task", run_id=run_id, task_id="t399", state="running", try_number=1)
    poll(lambda: page.evaluate("window.__events"), what="the event to reach the page")
    page.wait_for_timeout(1200)  # a refetch, if the grid asked for one, is throttled to 1 s
    assert requests == []
    assert page.locator("#gridtable .task-row[data-task='t399']").count() == 0

    page.evaluate("window.__release()")
    poll(lambda: page.get_attribute("#grid", "data-rendered"), what="every row to be in")
    assert page.locator("#gridtable .task-row").count() == TALL_TASKS
    assert page.get_attribute(grid_cell(run_id, "t399"), "data-state") == "running"
    assert page.get_attribute(grid_cell(run_id, "t398"), "data-state") == "scheduled"
    assert page.get_attribute(grid_cell(old, "t399"), "data-state") == "success"
    assert requests == []

    # Scrolled to the bottom, a new run redraws the grid and keeps the place.
    page.evaluate("() => { const g = document.getElementById('grid'); g.scrollTop = g.scrollHeight; }")
    bottom = page.evaluate("document.getElementById('grid').scrollTop")
    assert bottom > TALL_TASKS * 18 - 1000, bottom
    newest = _insert_tall_run(tall, 2, "queued")
    _send(tall, kind="run", run_id=newest, state="queued")
    page.wait_for_selector(f'#gridtable .run-col[data-run="{newest}"]')
    poll(lambda: page.get_attribute("#grid", "data-rendered"), what="the redraw to finish")
    assert abs(page.evaluate("document.getElementById('grid').scrollTop") - bottom) < 20
    assert page.evaluate(
        """() => { const box = document.getElementById('grid').getBoundingClientRect();
                   const last = document.querySelector("#gridtable .task-row[data-task='t399']");
                   const row = last.getBoundingClientRect();
                   return row.top >= box.top && row.bottom <= box.bottom + 1; }"""
    )
    assert_not_reloaded(page)


def test_a_refetch_that_fails_is_tried_again_and_brings_the_run_it_was_for(
    open_as: Any, tall: LiveSystem
) -> None:
    _insert_tall_run(tall, 10, "success")
    page = open_as("viewer")
    page.context.add_init_script(NO_SAFETY_POLL)  # only the retry can bring the new run
    requests = open_live_grid(page, tall, "tall_dag")

    failed: list[str] = []

    def fail_once(route: Any) -> None:
        if not failed:
            failed.append(route.request.url)
            route.fulfill(status=503, body="the server is restarting")
        else:
            route.continue_()

    page.route("**/api/v1/dags/tall_dag/grid*", fail_once)
    requests.clear()
    newest = _insert_tall_run(tall, 11, "queued")
    _send(tall, kind="run", run_id=newest, state="queued")
    page.wait_for_selector(f'#gridtable .run-col[data-run="{newest}"]', timeout=15_000)
    assert len(failed) == 1 and len(requests) >= 2, (failed, requests)
    assert_not_reloaded(page)


def test_a_grid_filtered_by_run_state_lets_a_run_go_when_it_leaves_that_state(
    open_as: Any, tall: LiveSystem
) -> None:
    running = _insert_tall_run(tall, 20, "running")
    page = open_as("viewer")
    page.context.add_init_script(NO_SAFETY_POLL)
    page.goto(f"{tall.url}/dags/tall_dag/grid?state=running")
    head = f'#gridtable .run-col[data-run="{running}"]'
    page.wait_for_selector(head)
    poll(lambda: page.evaluate("!!(window.hf.socket && window.hf.socket.connected)"), what="the socket")
    page.wait_for_load_state("networkidle")
    mark_no_reload(page)

    with tall.cluster.sessions() as s, s.begin():
        s.execute(update(DagRun).where(DagRun.run_id == running).values(state="success", end_date=now()))
    _send(tall, kind="run", run_id=running, state="success")
    page.wait_for_selector(head, state="detached", timeout=15_000)
    assert_not_reloaded(page)
