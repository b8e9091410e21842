"""Task groups in the browser: graph boxes that collapse to one node and expand again, grid group rows
that hide and show their tasks, each with its group's state in the run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import LiveSystem, grid_cell

pytestmark = pytest.mark.browser

SCREENSHOTS_ENV = "HAREFLOW_SCREENSHOTS"


@pytest.fixture(scope="module")
def grouped_run(live_system: LiveSystem) -> str:
    """One finished run of grouped_dag: the extract group succeeded, a check failed, load ran anyway."""
    run_id = live_system.cluster.trigger("grouped_dag")
    assert live_system.wait_run("grouped_dag", run_id) in ("success", "failed")
    return run_id


def screenshots(tmp_path: Path) -> Path:
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def test_a_graph_group_collapses_to_one_node_with_its_task_count_and_state_and_expands_again(
    open_as: Any, live_system: LiveSystem, grouped_run: str, tmp_path: Path
) -> None:
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/grouped_dag/graph?run_id={grouped_run}")
    page.wait_for_selector('g.node[data-task="extract.db.orders"][data-state="success"]')
    assert page.locator("g.cluster").evaluate_all("els => els.map(e => e.dataset.group)") == [
        "extract",
        "checks",
        "extract.db",
    ]
    assert page.get_attribute('g.cluster[data-group="checks"]', "data-state") == "failed"
    assert page.text_content('g.node[data-task="extract.db.orders"] text') == "orders"
    page.screenshot(path=str(screenshots(tmp_path) / "graph_groups.png"), full_page=True)

    page.click('g.cluster[data-group="extract"] text')
    node = 'g.group-node[data-group="extract"]'
    page.wait_for_selector(node)
    assert page.locator('g.node[data-task^="extract."]').count() == 0
    assert page.locator('g.cluster[data-group^="extract"]').count() == 0
    assert page.get_attribute(node, "data-state") == "success"
    assert page.text_content(f"{node} text.state-label") == "3 tasks \u00b7 success"
    page.click('g.cluster[data-group="checks"] text')
    page.wait_for_selector('g.group-node[data-group="checks"][data-state="failed"]')
    page.screenshot(path=str(screenshots(tmp_path) / "graph_groups_collapsed.png"), full_page=True)

    page.reload()  # the browser remembers what was collapsed
    page.wait_for_selector(node)
    page.click(node)
    page.wait_for_selector('g.node[data-task="extract.db.orders"]')
    assert page.locator(node).count() == 0
    page.click("#graph-expand")
    page.wait_for_selector('g.node[data-task="checks.fresh"][data-state="failed"]')
    assert page.locator("g.group-node").count() == 0


def test_grid_group_rows_summarise_each_run_and_hide_their_tasks_when_collapsed(
    open_as: Any, live_system: LiveSystem, grouped_run: str, tmp_path: Path
) -> None:
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/grouped_dag/grid")
    summary = grid_cell(grouped_run, group="checks")
    page.wait_for_selector(summary)
    rows = page.locator("#gridtable .grid-body .task").evaluate_all("els => els.map(e => e.textContent)")
    assert rows == [
        "\u25be extract",
        "\u25be db",
        "orders",
        "customers",
        "api",
        "\u25be checks",
        "not_empty",
        "fresh",
        "load",
    ]
    assert page.get_attribute(summary, "data-state") == "failed"
    extract = grid_cell(grouped_run, group="extract")
    assert page.get_attribute(extract, "data-state") == "success"

    page.click(summary)
    page.wait_for_selector("#grid-detail h4:text-is('checks')")
    assert "Data quality" in page.inner_text("#grid-detail")
    assert page.locator('#grid-detail .badge[data-state="failed"]').count() == 2  # the group's and fresh's
    page.screenshot(path=str(screenshots(tmp_path) / "grid_groups.png"), full_page=True)

    orders = grid_cell(grouped_run, "extract.db.orders")
    page.click('button.group-toggle[data-group="extract"]')
    assert not page.is_visible(orders) and not page.is_visible('button.group-toggle[data-group="extract.db"]')
    assert page.is_visible(summary) and page.is_visible(extract)
    page.click('button.group-toggle[data-group="extract"]')
    assert page.is_visible(orders)
    page.click('button.group-toggle[data-group="extract.db"]')
    assert not page.is_visible(orders) and page.is_visible(grid_cell(grouped_run, "extract.api"))
