"""Fan-out / fan-in: one task splits the work, three parallel tasks process it, one task merges.

Params have defaults that a manual trigger's conf can override, e.g. {"parts": 6, "factor": 10}.
"""

import time
from datetime import datetime

from hareflow import DAG, task

WORKERS = 3

with DAG(
    "example_fanout",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"parts": 3, "factor": 2},
    max_active_tasks=4,
    tags=["example"],
    doc_md="Trigger it manually; pass `parts` and `factor` in the run conf to change its work.",
):

    @task
    def plan(ctx):
        """Decide how to split the numbers 1..30 into parts."""
        parts = int(ctx.params["parts"])
        numbers = list(range(1, 31))
        return [numbers[i::parts] for i in range(parts)]

    @task
    def process(chunks, worker, ctx):
        """Multiply this worker's share of the parts by the factor and add them up."""
        time.sleep(0.5)
        mine = chunks[worker::WORKERS]
        return sum(n * int(ctx.params["factor"]) for chunk in mine for n in chunk)

    @task
    def merge(*partials):
        """Add up the partial sums."""
        return {"total": sum(partials), "parts": len(partials)}

    chunks = plan()
    partials = [process(chunks, worker) for worker in range(WORKERS)]
    merge(*partials)
