"""Render the figures fault tests appended to ``$HAREFLOW_FAULT_REPORT`` as a Markdown table.

    HAREFLOW_FAULT_REPORT=/tmp/faults.jsonl HAREFLOW_REQUIRE_SERVICES=1 python -m pytest tests/fault
    python -m tests.fault.report /tmp/faults.jsonl

A scenario reported several times (parametrised tests, repeated runs) gets one row: the sums of its
task counts and the slowest recovery.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


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
