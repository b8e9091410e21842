"""An hourly DAG on a cron expression evaluated in a local time zone, one run at a time."""

import time
from datetime import datetime

from hareflow import DAG, BashTask, task

with DAG(
    "example_cron_hourly",
    schedule="15 * * * *",
    start_date=datetime(2026, 1, 1),
    timezone="Europe/Amsterdam",
    catchup=False,
    max_active_runs=1,
    tags=["example", "cron"],
):

    @task(priority=3)
    def check_feed(ctx):
        """Look at the last hour's data interval."""
        time.sleep(0.5)
        start, end = ctx.data_interval_start, ctx.data_interval_end
        print(f"checking events between {start} and {end}")
        return {"window_start": str(start), "window_end": str(end), "events": 17}

    @task
    def summarize(stats):
        """Turn the counts into a one-line summary."""
        return f"{stats['events']} events between {stats['window_start']} and {stats['window_end']}"

    archive = BashTask("archive", "echo archiving hour $HAREFLOW_LOGICAL_DATE", queue="default")

    summarize(check_feed()) >> archive
