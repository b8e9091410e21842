"""The figures docs/reliability.md publishes: fault tests append them as JSON lines to
``$HAREFLOW_FAULT_REPORT`` (when it is set), and this module renders them as a Markdown table.

    HAREFLOW_FAULT_REPORT=/tmp/faults.jsonl HAREFLOW_REQUIRE_SERVICES=1 python -m pytest tests/fault
    python -m tests.fault.report /tmp/faults.jsonl

A scenario reported several times (parametrised tests, repeated runs) gets one row: the sums of its
task counts and the slowest recovery.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def executions(markers: Path) -> dict[str, int]:
    """How many times each task ran, from the markers the tasks themselves touched, named
    ``<kind>-<task key>-<anything unique>``."""
    counts: dict[str, int] = {}
    for marker in markers.iterdir():
        key = marker.name.split("-")[1]
        counts[key] = counts.get(key, 0) + 1
    return counts


def record_fault(scenario: str, *, tasks: int, lost: int, more_than_once: int, **figures: object) -> dict:
    """The figures of one fault scenario, appended as a JSON line to ``$HAREFLOW_FAULT_REPORT`` when
    it is set (``python -m tests.fault.report FILE`` renders them as docs/reliability.md's table).
    Returned so the test can show them in its assertions."""
    row = {"scenario": scenario, "tasks": tasks, "lost": lost, "executed_more_than_once": more_than_once}
    row.update(figures)
    target = os.environ.get("HAREFLOW_FAULT_REPORT")
    if target:
        with open(target, "a") as report:
            report.write(json.dumps(row) + "\n")
    return row


def table(lines: list[str]) -> str:
    rows: dict[str, dict] = {}
    for line in lines:
        if not line.strip():
            continue
        item = json.loads(line)
        empty = {"tasks": 0, "lost": 0, "twice": 0, "recovery": None, "runs": 0}
        row = rows.setdefault(item["scenario"], empty)
        row["runs"] += 1
        row["tasks"] += item["tasks"]
        row["lost"] += item["lost"]
        row["twice"] += item["executed_more_than_once"]
        if item.get("recovery_s") is not None:
            row["recovery"] = max(row["recovery"] or 0.0, item["recovery_s"])
    out = [
        "| scenario | tasks | lost | run more than once | recovery (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        recovery = "-" if row["recovery"] is None else f"{row['recovery']:.2f}"
        out.append(f"| {name} | {row['tasks']} | {row['lost']} | {row['twice']} | {recovery} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]).read_text().splitlines()))
