"""Fan-out / fan-in: one task splits the work, parallel tasks process parts, one task merges.

Params have defaults that a manual trigger's conf can override, e.g. {"parts": 4, "factor": 10}.
"""

import time
from datetime import datetime

from hareflow import DAG, task

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
    def process(chunks, index, ctx):
        """Multiply one part of the numbers by the factor."""
        time.sleep(0.5)
        chunk = chunks[index] if index < len(chunks) else []
        return sum(n * int(ctx.params["factor"]) for n in chunk)

    @task
    def merge(*partials):
        """Add up the partial sums."""
        return {"total": sum(partials), "parts": len(partials)}

    chunks = plan()
    partials = [process(chunks, i) for i in range(3)]
    merge(*partials)
