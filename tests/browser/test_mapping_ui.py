"""A mapped task in headless Chromium: the grid's summary square with its count, expanded into one
row per map index; one instance's details and log page; the graph's badge. Screenshots of the three
go to docs/screenshots/ when HAREFLOW_SCREENSHOTS names it."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import LiveSystem
from tests.browser.test_ui import SCREENSHOTS_ENV, mark_no_reload

pytestmark = pytest.mark.browser

MAPPED_DAG = '''
    """Lists four files and checks each in a mapped task instance of its own."""
    from hareflow import DAG, task

    with DAG("mapped_dag", tags=["example"]):
        @task
        def list_files():
            return ["a.csv", "b.csv", "c.csv", "d.csv"]

        @task
        def check(path, ctx):
            print(f"checking {path} as map index {ctx.map_index}")
            return {"path": path, "ok": True}

        @task
        def summary(results):
            return len(results)

        summary(check.expand(path=list_files()))
'''


@pytest.fixture(scope="module")
def mapped_run(live_system: LiveSystem) -> str:
    cluster = live_system.cluster
    folder = Path(str(cluster.settings.dags_folder))
    (folder / "mapped_dag.py").write_text(textwrap.dedent(MAPPED_DAG))
    cluster.wait_for_dag("mapped_dag")
    run_id = cluster.trigger("mapped_dag")
    assert live_system.wait_run("mapped_dag", run_id) == "success"
    return run_id


def test_a_mapped_task_is_one_summary_square_that_expands_into_its_instances(
    open_as: Any, live_system: LiveSystem, mapped_run: str, tmp_path: Path
) -> None:
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page = open_as("op")
    page.goto(f"{live_system.url}/dags/mapped_dag/grid")
    mark_no_reload(page)
    summary = '.task-row[data-task="check"] > .cell.mapped'
    page.wait_for_selector(f'{summary}[data-state="success"]')
    assert page.inner_text(summary) == "4"
    assert page.query_selector('.instance-row[data-task="check"]') is None

    page.click(".task.mapped-task button.expand-toggle")
    page.wait_for_selector(
        '.instance-row[data-task="check"][data-map-index="3"] > .cell[data-state="success"]'
    )
    assert page.locator(".instance-row").count() == 4
    page.click(summary)
    page.wait_for_selector("#grid-detail .instance-squares")
    assert "check (mapped)" in page.inner_text("#grid-detail h4")
    page.click('.instance-row[data-task="check"][data-map-index="2"] > .cell[data-state]')
    page.wait_for_function("() => document.querySelector('#grid-detail h4').textContent === 'check [2]'")
    page.screenshot(path=str(target / "grid_mapped.png"), full_page=True)

    page.click("#grid-detail a:text('Log and details')")
    page.wait_for_url(re.compile(r".*/tasks/check\?map_index=2$"))
    page.wait_for_selector("#ti-instances a.instance.active")
    assert page.inner_text(".ti-title .map-index") == "[2]"
    assert "checking c.csv as map index 2" in page.inner_text("#log")
    assert '"path": "c.csv"' in page.inner_text("#ti-result")
    assert page.locator("#ti-instances a.instance").count() == 4
    page.screenshot(path=str(target / "task_instance_mapped.png"), full_page=True)


def test_the_graph_badges_a_mapped_task_with_its_instance_count(
    open_as: Any, live_system: LiveSystem, mapped_run: str, tmp_path: Path
) -> None:
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/mapped_dag/graph?run_id={mapped_run}")
    page.wait_for_selector('g.node[data-task="check"] text.map-badge')
    page.wait_for_function(
        "() => document.querySelector('g.node[data-task=\"check\"] text.map-badge').textContent === '[4]'"
    )
    assert page.query_selector('g.node[data-task="summary"] text.map-badge') is None
    page.screenshot(path=str(target / "graph_mapped.png"), full_page=True)
