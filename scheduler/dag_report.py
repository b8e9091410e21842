"""``hareflow dags report``: how long each DAG file takes to parse, as the scheduler parses it.

Each file goes through the DAG processor's own ``parse_file`` (a fresh child interpreter, the
same loader, the same timeout), one file at a time so the times do not compete for the CPU.
``duration`` is the wall-clock time the scheduler waits for the file (interpreter start included);
``import_duration`` the part the child spent importing the file and serializing its DAGs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hareflow.common.dag.loader import find_dag_files
from hareflow.scheduler.dag_processor import parse_file


@dataclass(frozen=True)
class FileTiming:
    file: str
    duration: float
    import_duration: float | None
    dag_ids: list[str]
    tasks: int
    errors: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "duration": round(self.duration, 4),
            "import_duration": None if self.import_duration is None else round(self.import_duration, 4),
            "dags": len(self.dag_ids),
            "tasks": self.tasks,
            "dag_ids": self.dag_ids,
            "errors": self.errors,
        }


def report_folder(folder: Path, timeout: float) -> list[FileTiming]:
    """Parse every DAG file of ``folder`` (which must exist) once; slowest first."""
    timings = []
    root = folder.resolve()
    for path in find_dag_files(root):
        started = time.monotonic()
        parsed = parse_file(str(path), timeout, str(root))
        elapsed = time.monotonic() - started
        timings.append(
            FileTiming(
                file=str(path),
                duration=elapsed,
                import_duration=parsed.import_duration,
                dag_ids=[d["dag_id"] for d in parsed.dags],
                tasks=sum(len(d.get("tasks") or ()) for d in parsed.dags),
                errors=[_one_line(e) for e in parsed.errors],
            )
        )
    timings.sort(key=lambda t: (-t.duration, t.file))
    return timings


def _one_line(error: dict[str, Any]) -> str:
    line = error.get("line")
    first = (error.get("message") or "").strip().splitlines()[:1]
    return (f"line {line}: " if line else "") + (first[0] if first else "error")
