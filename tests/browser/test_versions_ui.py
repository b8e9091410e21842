"""DAG versions and docs in the browser: after a DAG file is edited, choosing an older run on the
graph page draws the DAG as that run saw it, the version picker of the graph and source pages
shows any version, the details page lists the versions; doc_md is rendered, and script in it
never runs."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import Dag

from tests.browser.conftest import LiveSystem
from tests.browser.test_ui import SCREENSHOTS_ENV
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.browser

DOC = (
    "# Versioned sales\\n\\nLoads **orders** nightly; see the [runbook](https://runbooks.example/sales).\\n\\n"
    "* extract: reads the day's orders\\n* load: writes them to the `warehouse`"
)
HOSTILE = (
    "Reads the **orders** of the day.\\n\\n<script>window.__pwned = 1</script>\\n\\n"
    "<img src=x onerror='window.__pwned = 3'> [click](javascript:window.__pwned=2)"
)
LOAD_DOC = (
    "Writes the day's orders to `warehouse.orders`:\\n\\n1. drops duplicates by `order_id`\\n"
    "2. upserts the rest\\n\\n> Safe to re-run: the load is idempotent."
)
VERSION_1 = f'''
    from hareflow import DAG, task

    with DAG("ver_sales", tags=["versions"], doc_md="{DOC}"):
        @task(doc_md="{HOSTILE}")
        def extract():
            return 1

        extract()
'''
VERSION_2 = f'''
    from hareflow import DAG, task

    with DAG("ver_sales", tags=["versions"], doc_md="{DOC}"):
        @task(doc_md="{HOSTILE}")
        def extract():
            return 1

        @task(doc_md="{LOAD_DOC}")
        def load(n):
            return n

        load(extract())
'''


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def _version_id(system: LiveSystem) -> int | None:
    with system.cluster.sessions() as s:
        dag = s.get(Dag, "ver_sales")
        return dag.dag_version_id if dag is not None and dag.is_active else None


@pytest.fixture(scope="module")
def two_versions(live_system: LiveSystem) -> tuple[LiveSystem, str, str]:
    """ver_sales at version 2, with a finished run of each version (old, new)."""
    path = Path(live_system.cluster.settings.dags_folder) / "ver_sales.py"
    path.write_text(textwrap.dedent(VERSION_1))
    first = wait_until(lambda: _version_id(live_system), timeout=60, message="ver_sales version 1")
    old = live_system.cluster.trigger("ver_sales")
    assert live_system.wait_run("ver_sales", old) == "success"
    path.write_text(textwrap.dedent(VERSION_2))
    wait_until(lambda: _version_id(live_system) not in (None, first), timeout=60, message="version 2")
    new = live_system.cluster.trigger("ver_sales")
    assert live_system.wait_run("ver_sales", new) == "success"
    return live_system, old, new


def _drawn(page: Any) -> list[str]:
    return sorted(page.eval_on_selector_all("#graph svg g.node", "ns => ns.map(n => n.dataset.task)"))


def test_choosing_an_old_run_draws_the_graph_it_ran_and_the_picker_shows_any_version(
    open_as: Any, two_versions: tuple[LiveSystem, str, str], screenshots: Path
) -> None:
    system, old, new = two_versions
    page = open_as("viewer")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(system.url + "/dags/ver_sales/graph")
    page.wait_for_selector("#graph svg g.node")
    assert _drawn(page) == ["extract", "load"]
    assert page.locator("#version-note").count() == 0
    assert page.input_value("#version-select") == "2"

    page.select_option("#graph-run", old)  # a run of version 1: its own graph opens
    page.wait_for_url("**/graph?run_id=*")
    page.wait_for_selector("#graph svg g.node")
    assert _drawn(page) == ["extract"]
    assert "the latest is version 2" in page.inner_text("#version-note")
    assert page.input_value("#version-select") == "1" and page.input_value("#graph-run") == old
    page.screenshot(path=str(screenshots / "graph_version.png"))

    page.select_option("#version-select", "2")  # the picker: the latest version, same run selected
    page.wait_for_url("**version=2**")
    page.wait_for_selector("#graph svg g.node")
    assert _drawn(page) == ["extract", "load"]
    assert page.locator("#version-note").count() == 0

    page.goto(system.url + f"/dags/ver_sales/source?run_id={old.replace('+', '%2B')}")
    assert "def load" not in page.inner_text(".source") and "def extract" in page.inner_text(".source")
    assert "as run" in page.inner_text("#version-note")
    page.select_option("#version-select", "2")
    page.wait_for_url("**version=2**")
    assert "def load" in page.inner_text(".source")


def test_the_details_page_lists_versions_and_renders_doc_md_without_running_its_script(
    open_as: Any, two_versions: tuple[LiveSystem, str, str], screenshots: Path
) -> None:
    system, old, new = two_versions
    page = open_as("viewer")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(system.url + "/dags/ver_sales/details")
    rows = page.locator("#versions tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).get_attribute("data-version") == "2" and "latest" in rows.nth(0).inner_text()
    assert rows.nth(1).inner_text().split()[0] == "v1"
    doc = page.locator("#dag-doc")
    assert doc.locator("h1").inner_text() == "Versioned sales"
    assert doc.locator("strong").inner_text() == "orders"
    assert doc.locator("a").get_attribute("href") == "https://runbooks.example/sales"
    page.screenshot(path=str(screenshots / "versions.png"), full_page=True)

    page.set_viewport_size({"width": 800, "height": 900})
    page.reload()
    assert page.locator("#versions tbody tr").count() == 2
    page.screenshot(path=str(screenshots / "details_narrow.png"), full_page=True)

    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(system.url + f"/dags/ver_sales/runs/{old.replace('+', '%2B')}/tasks/extract")
    task_doc = page.locator("#task-doc")
    assert task_doc.locator("strong").inner_text() == "orders"
    assert "<script>window.__pwned = 1</script>" in task_doc.inner_text()  # shown as text
    assert task_doc.locator("img").count() == 0 and task_doc.locator("a").count() == 0
    assert page.evaluate("window.__pwned") is None

    page.goto(system.url + f"/dags/ver_sales/runs/{new.replace('+', '%2B')}/tasks/load")
    assert page.locator("#task-doc ol li").count() == 2 and page.locator("#task-doc blockquote").count() == 1
    page.screenshot(path=str(screenshots / "doc_md.png"), full_page=True)


VERSION_3 = VERSION_2.replace("        load(extract())", "        load(extract()) >> report()").replace(
    '        @task(doc_md="' + LOAD_DOC + '")',
    '        @task\n        def report():\n            return 3\n\n        @task(doc_md="' + LOAD_DOC + '")',
)


def test_a_graph_following_the_newest_run_redraws_when_a_run_of_a_new_version_arrives(
    open_as: Any, two_versions: tuple[LiveSystem, str, str]
) -> None:
    system, _, _ = two_versions  # runs last in this module: it makes version 3
    page = open_as("viewer")
    page.goto(system.url + "/dags/ver_sales/graph")
    page.wait_for_selector("#graph svg g.node")
    assert _drawn(page) == ["extract", "load"]

    before = _version_id(system)
    (Path(system.cluster.settings.dags_folder) / "ver_sales.py").write_text(textwrap.dedent(VERSION_3))
    wait_until(lambda: _version_id(system) not in (None, before), timeout=60, message="version 3")
    newest = system.cluster.trigger("ver_sales")
    wait_until(lambda: _drawn_now(page) == ["extract", "load", "report"], timeout=30, message="the new graph")
    assert page.input_value("#graph-run") == newest and page.input_value("#version-select") == "3"


def _drawn_now(page: Any) -> list[str] | None:
    """The drawn tasks, or None while the page is reloading."""
    try:
        return _drawn(page)
    except Exception:  # noqa: BLE001 - the page's context goes away during a reload
        return None
