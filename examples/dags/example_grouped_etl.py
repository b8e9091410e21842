"""Extract, transform, load in task groups, written with ``@dag``, ``TaskGroup``, ``@task_group`` and
``chain``; a ``multiple_outputs`` task hands each of its keys to a different downstream task.

Task ids carry their group: ``extract.orders``, ``transform.summarise``, ``load.totals``. The graph
draws each group as a box that collapses to one node; the grid gives each group a row of its own.
Trigger it with {"min_amount": 50} to drop the small orders.
"""

from datetime import datetime, timedelta

from hareflow import BashTask, TaskGroup, chain, dag, task, task_group


@dag(
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    tags=["example", "etl", "groups"],
)
def example_grouped_etl(min_amount: float = 0.0):
    """Daily sales by region, in extract / transform / load groups."""
    with TaskGroup("extract", tooltip="Read the day's orders and the region names"):

        @task
        def orders(ctx):
            """Pretend to read the day's orders from the shop database."""
            ctx.log.info("reading orders for %s", ctx.logical_date)
            return [
                {"order": 1, "region": "N", "amount": 120.0},
                {"order": 2, "region": "S", "amount": 80.5},
                {"order": 3, "region": "N", "amount": 42.25},
                {"order": 4, "region": "W", "amount": 310.0},
            ]

        @task
        def regions():
            """Pretend to read the region names from a reference table."""
            return {"N": "north", "S": "south", "W": "west"}

        raw_orders, names = orders(), regions()

    @task_group(tooltip="Filter and summarise", default_args={"retries": 2})
    def transform(rows, names, min_amount):
        @task
        def keep(rows, min_amount):
            """Drop the orders below the run's min_amount param."""
            return [r for r in rows if r["amount"] >= float(min_amount)]

        @task
        def summarise(rows, names) -> dict[str, object]:
            """Totals per region and the count, as separate outputs (a dict return is multiple_outputs)."""
            totals: dict[str, float] = {}
            for row in rows:
                region = names[row["region"]]
                totals[region] = round(totals.get(region, 0.0) + row["amount"], 2)
            return {"totals": totals, "count": len(rows)}

        return summarise(keep(rows, min_amount), names)

    summary = transform(raw_orders, names, min_amount)

    with TaskGroup("load", tooltip="Write the results") as load:

        @task(multiple_outputs=True)
        def totals(per_region):
            """Pretend to upsert the totals into the warehouse."""
            for region, amount in sorted(per_region.items()):
                print(f"{region}: {amount:.2f}")
            return {"rows_written": len(per_region), "table": "sales_by_region"}

        @task
        def audit(count):
            """Record how many orders the day had."""
            print(f"{count} orders loaded")
            return count

        written = totals(summary["totals"])
        audit(summary["count"])

    @task
    def report(rows_written, table):
        """Say what was loaded, from two of the load's outputs."""
        return f"{rows_written} regions written to {table}"

    notify = BashTask("notify", 'echo "run $HAREFLOW_RUN_ID is loaded"')
    chain(load, report(written["rows_written"], written["table"]), notify)


example_grouped_etl()
