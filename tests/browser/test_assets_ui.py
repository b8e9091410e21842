"""Assets in the browser: the Assets page lists producers, consumers and the latest events with
links to the producing runs, and a new event appears without a reload; the lineage graph draws
producer DAG -> asset -> consumer DAG; the DAG list shows what an asset-scheduled DAG waits on."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.browser.conftest import LiveSystem
from tests.browser.test_ui import SCREENSHOTS_ENV
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.browser

ASSET_DAGS = '''
    """A producer writing two warehouse tables and two DAGs scheduled on them."""
    from hareflow import DAG, Asset, task

    orders = Asset("warehouse://sales/orders", name="sales.orders")
    customers = Asset("warehouse://sales/customers", name="sales.customers")

    with DAG("load_sales", tags=["assets"], description="Loads orders and customers"):
        @task(outlets=[orders])
        def load_orders(outlet_events=None, run_id=None):
            outlet_events[orders].extra = {"rows": 1200}
            return "ok"

        @task(outlets=[customers])
        def load_customers():
            return "ok"

        load_orders() >> load_customers()

    with DAG("sales_report", schedule=[orders, customers], tags=["assets"]):
        @task
        def report():
            return "ok"
        report()

    with DAG("orders_audit", schedule=orders | customers, tags=["assets"]):
        @task
        def audit():
            return "ok"
        audit()
'''


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture(scope="module")
def asset_dags(live_system: LiveSystem) -> LiveSystem:
    folder = Path(live_system.cluster.settings.dags_folder)
    (folder / "asset_dags.py").write_text(textwrap.dedent(ASSET_DAGS))
    for dag_id in ("load_sales", "sales_report", "orders_audit"):
        live_system.cluster.wait_for_dag(dag_id, timeout=60)
    return live_system


def orders_events(page: Any) -> int:
    return int(page.locator('tr[data-asset="warehouse://sales/orders"] .asset-event').count())


def test_the_assets_page_shows_events_as_they_happen_and_the_lineage_graph_links_dags(
    open_as: Any, asset_dags: LiveSystem, screenshots: Path
) -> None:
    cluster = asset_dags.cluster
    first = cluster.trigger("load_sales")
    assert asset_dags.wait_run("load_sales", first) == "success"

    page = open_as("viewer")
    page.click("nav.mainnav a:text-is('Assets')")
    page.wait_for_url("**/assets")
    row = page.locator('tr[data-asset="warehouse://sales/orders"]')
    assert "sales.orders" in row.inner_text()
    assert "load_sales.load_orders" in row.inner_text()
    assert "sales_report" in row.inner_text() and "orders_audit" in row.inner_text()
    assert orders_events(page) == 1
    link = row.locator(".asset-event a")
    assert unquote(link.get_attribute("href") or "") == f"/dags/load_sales/runs/{first}"
    assert '{"rows": 1200}' in row.inner_text() or '{"rows":1200}' in row.inner_text()

    page.evaluate("window.__no_reload = true")
    second = cluster.trigger("load_sales")
    assert asset_dags.wait_run("load_sales", second) == "success"
    # The second event arrives over Socket.IO: the row gains it without a reload.
    page.locator('tr[data-asset="warehouse://sales/orders"] .asset-event').nth(1).wait_for()
    assert page.evaluate("window.__no_reload") is True  # updated live, not reloaded
    # Both consumers ran on the producer's events (sales_report once both tables were written).
    wait_until(
        lambda: all(
            any(r.run_type == "asset_triggered" and r.state == "success" for r in runs(cluster, dag_id))
            for dag_id in ("sales_report", "orders_audit")
        ),
        timeout=60,
        message="both consumers' asset-triggered runs",
    )
    page.screenshot(path=str(screenshots / "assets.png"), full_page=True)

    page.click("#lineage-link")
    page.wait_for_url("**/assets/lineage")
    page.wait_for_selector("#lineage svg")
    drawn = page.eval_on_selector_all("#lineage svg g.node", "ns => ns.map(n => n.dataset.node)")
    assert {"dag:load_sales", "dag:sales_report", "dag:orders_audit"} <= set(drawn)
    assert sum(1 for n in drawn if n.startswith("asset:")) >= 2
    assert page.locator("#lineage svg path.edge").count() >= 6
    page.screenshot(path=str(screenshots / "asset_lineage.png"), full_page=True)
    page.click('#lineage g.node[data-node="dag:sales_report"]')
    page.wait_for_url("**/dags/sales_report/graph")

    page.goto(asset_dags.url + "/dags?tag=assets")
    schedule = page.locator('tr[data-dag="sales_report"] a.asset-schedule').inner_text()
    assert schedule == "assets: warehouse://sales/orders & warehouse://sales/customers"


def runs(cluster: Any, dag_id: str) -> list[Any]:
    from hareflow.common.db import DagRun
    from sqlalchemy import select

    with cluster.sessions() as s:
        return list(s.scalars(select(DagRun).where(DagRun.dag_id == dag_id)))
