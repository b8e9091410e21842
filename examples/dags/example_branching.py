"""Branching on data freshness: load only when the source changed since the last run.

``check_source`` asks when the source table was last updated (here a parameter stands in for the
source system's answer; trigger with ``{"source_updated_at": "..."}`` to change it). If that is
inside this run's data interval, the branch follows ``load``; otherwise it follows
``nothing_changed`` and ``load`` is skipped, with the branch named as the reason. ``report`` runs
either way (none_failed_min_one_success: nothing failed and one path succeeded). ``publish`` is
a short-circuit: it skips the notification when the load wrote no rows.
"""

from datetime import datetime

from hareflow import DAG, BashTask, task

with DAG(
    "example_branching",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"source_updated_at": "2026-01-01T00:00:00+00:00"},
    tags=["example", "branching"],
):

    @task.branch
    def check_source(ctx):
        """Follow 'load' if the source changed during this run's interval, else 'nothing_changed'."""
        updated = datetime.fromisoformat(ctx.params["source_updated_at"])
        since = ctx.data_interval_start
        print(f"source last updated {updated.isoformat()}; this run covers from {since}")
        return "load" if since is None or updated >= since else "nothing_changed"

    @task
    def load():
        """Copy the changed rows (a stand-in for the real load)."""
        rows = 42
        print(f"loaded {rows} rows")
        return {"rows": rows}

    @task.short_circuit
    def wrote_rows(result):
        """Only notify downstream consumers when rows were written."""
        return result["rows"] > 0

    nothing_changed = BashTask("nothing_changed", "echo 'source unchanged since the last run; load skipped'")
    notify = BashTask("notify", "echo 'new rows are available'")
    report = BashTask("report", "echo 'freshness check done'", trigger_rule="none_failed_min_one_success")

    loaded = load()
    check_source() >> [loaded, nothing_changed]
    wrote_rows(loaded) >> notify
    [loaded, nothing_changed] >> report
