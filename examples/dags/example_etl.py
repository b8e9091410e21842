"""Extract, transform, load: return values flow from task to task, then a shell task reports.

This is the one example with catch-up: it backfills the first week of 2026 (end_date bounds it).
"""

import time
from datetime import datetime, timedelta

from hareflow import DAG, BashTask, task

with DAG(
    "example_etl",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    end_date=datetime(2026, 1, 7),
    catchup=True,
    max_active_runs=2,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    tags=["example", "etl"],
    description="Daily sales ETL with return-value passing",
):

    @task
    def extract(ctx):
        """Pretend to read the day's orders from a source system."""
        ctx.log.info("extracting orders for %s", ctx.logical_date)
        time.sleep(0.5)
        return [
            {"order": 1, "region": "north", "amount": 120.0},
            {"order": 2, "region": "south", "amount": 80.5},
            {"order": 3, "region": "north", "amount": 42.25},
        ]

    @task
    def transform(orders):
        """Sum the amounts per region."""
        totals = {}
        for order in orders:
            totals[order["region"]] = totals.get(order["region"], 0.0) + order["amount"]
        return totals

    @task(priority=5)
    def load(totals, ctx):
        """Pretend to write the totals to a warehouse table."""
        for region, amount in sorted(totals.items()):
            print(f"{ctx.logical_date:%Y-%m-%d} {region}: {amount:.2f}")
        return {"rows_written": len(totals)}

    report = BashTask(
        "report",
        'echo "run $HAREFLOW_RUN_ID loaded its totals"; echo "report ready"',
        doc="Shell step run after the load.",
    )

    load(transform(extract())) >> report
