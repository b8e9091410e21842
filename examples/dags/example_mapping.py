"""File-per-partition ETL with dynamic task mapping: list the day's partitions, transform each in a
task instance of its own (one map index per partition, retried on its own), then add up the totals.

How many partitions there are is known only when the run starts: ``list_partitions`` returns them,
and ``transform`` is expanded over that list by the scheduler. Trigger it with
{"partitions": 6} in the run conf to make more.
"""

from datetime import datetime, timedelta

from hareflow import DAG, task

with DAG(
    "example_mapping",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"partitions": 4},
    tags=["example"],
    doc_md="Trigger it manually; `partitions` in the run conf says how many files the day has.",
):

    @task
    def list_partitions(ctx):
        """The day's input files (here made up: one per partition)."""
        day = (ctx.logical_date or datetime(2026, 1, 1)).date().isoformat()
        return [f"sales/{day}/part-{i:03d}.csv" for i in range(int(ctx.params["partitions"]))]

    @task(retries=2, retry_delay=timedelta(seconds=5))
    def transform(path, currency, ctx):
        """Clean one file and return its row count and revenue."""
        part = int(path.rsplit("-", 1)[1].split(".")[0])
        rows = 100 + 10 * part
        print(f"map index {ctx.map_index}: {path}, {rows} rows")
        return {"path": path, "rows": rows, "revenue": round(rows * 2.5, 2), "currency": currency}

    @task
    def total(summaries):
        """Add up every partition's summary (the list arrives in map-index order)."""
        return {
            "files": len(summaries),
            "rows": sum(s["rows"] for s in summaries),
            "revenue": round(sum(s["revenue"] for s in summaries), 2),
        }

    total(transform.partial(currency="EUR").expand(path=list_partitions()))
