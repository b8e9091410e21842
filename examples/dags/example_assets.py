"""Data-aware scheduling: a producer writes two warehouse tables (assets); one DAG runs once both
have new data, another whenever either has, and each sees the events that started it.

Trigger ``example_assets_producer`` (or run ``hareflow assets emit warehouse://sales/orders``) and
watch the consumers start on the Assets page.
"""

from datetime import datetime

from hareflow import DAG, Asset, task

orders = Asset("warehouse://sales/orders", name="sales.orders")
customers = Asset("warehouse://sales/customers", name="sales.customers")

with DAG(
    "example_assets_producer",
    start_date=datetime(2026, 1, 1),
    tags=["example", "assets"],
    description="Writes two warehouse tables",
):

    @task(outlets=[orders])
    def load_orders(outlet_events):
        """Pretend to load the day's orders; the row count travels with the asset event."""
        rows = 1200
        outlet_events[orders].extra = {"rows": rows}
        return rows

    @task(outlets=[customers])
    def load_customers():
        return 310

    load_orders() >> load_customers()


with DAG(
    "example_assets_report",
    schedule=[orders, customers],
    start_date=datetime(2026, 1, 1),
    tags=["example", "assets"],
    description="Runs once both tables have new data",
):

    @task
    def report(triggering_asset_events):
        for uri, events in triggering_asset_events.items():
            for e in events:
                print(f"{uri}: from {e.source_dag_id}/{e.source_run_id} ({e.extra})")
        return sorted(triggering_asset_events)

    report()


with DAG(
    "example_assets_audit",
    schedule=orders | customers,
    start_date=datetime(2026, 1, 1),
    tags=["example", "assets"],
    description="Runs whenever either table has new data",
):

    @task
    def audit(triggering_asset_events):
        return {uri: len(events) for uri, events in triggering_asset_events.items()}

    audit()
