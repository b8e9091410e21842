"""What parsing a large DAG folder costs: a fresh start and a restart with nothing changed.

``--files`` DAG files (default 1,000) are written to a temporary folder, each a small DAG of a few
tasks; one in three imports a shared module beside them (``shared_steps.py``). The real
``DagProcessor`` parses them into a fresh PostgreSQL metastore (``dag_file_processor_parallelism``
from ``--parallelism``), then a second processor over the same folder and database plays a
scheduler restarted with nothing changed.

    python -m benchmarks.dag_parse [--files 1000] [--parallelism 2]

Prints JSON lines: ``machine`` once, then one ``dag_parse`` object:

- ``fresh_first_dag_s``: start to the first file's DAG stored; ``fresh_all_s``: to every file stored;
- ``restart_first_pass_s``: a restarted processor's start to the end of its first scan call (files
  gone are forgotten, the rest handed to parses): from then on the scheduler's first pass sees every
  stored DAG as it was; ``restart_all_known_s``: to every file parsed again or found unchanged;
  ``restart_parsed``: how many files the restart parsed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import env

SHARED = '''
"""Steps several DAG files share."""


def make_steps(prefix):
    return [f"{prefix}_{n}" for n in range(3)]
'''

DAG_FILE = """
from datetime import datetime
from hareflow import DAG, task, BashTask
{shared_import}

with DAG("bench_parse_{n}", schedule="0 2 * * *", start_date=datetime(2026, 1, 1), catchup=False,
         tags=["bench"]):

    @task
    def extract(ctx):
        return [1, 2, 3]

    @task
    def total(rows):
        return sum(rows)

    report = BashTask("report", "echo {names}")
    total(extract()) >> report
"""


def write_folder(folder: Path, files: int) -> None:
    (folder / "shared_steps.py").write_text(SHARED)
    for n in range(files):
        shared = n % 3 == 0
        text = DAG_FILE.format(
            n=n,
            shared_import="from shared_steps import make_steps" if shared else "",
            names="{{ run_id }}",
        )
        if shared:
            text += f"\nSTEPS = make_steps('s{n}')\n"
        (folder / f"dag_{n:05d}.py").write_text(text)


class _Clock:
    """Records when the first DAG of a pass was stored."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first: float | None = None
        self._lock = threading.Lock()

    def on_change(self, events: Sequence[Any]) -> None:
        with self._lock:
            if self.first is None and events:
                self.first = time.monotonic() - self.started


def measure(files: int, parallelism: int) -> dict[str, Any]:
    from hareflow.common.config import Settings
    from hareflow.common.db import Dag, create_engine_for, make_session_factory
    from hareflow.common.db.migrate import migrate
    from hareflow.scheduler.dag_processor import DagProcessor
    from sqlalchemy import func, select

    name = env.new_db_name()
    env.create_database("postgres", name)
    try:
        with tempfile.TemporaryDirectory(prefix="hfbench-dags-") as tmp:
            folder = Path(tmp)
            write_folder(folder, files)
            url = env.database_url("postgres", name, folder)
            engine = create_engine_for(url)
            try:
                migrate(engine)
                sessions = make_session_factory(engine)
                settings = Settings(
                    home=folder,
                    database_url=url,
                    dags_folder=folder,
                    dags_are_paused_at_creation=False,
                    dag_file_processor_parallelism=parallelism,
                )
                clock = _Clock()
                processor = DagProcessor(
                    settings=settings, session_factory=sessions, on_change=clock.on_change
                )
                try:
                    fresh = processor.run_once(wait=True)
                    fresh_all = time.monotonic() - clock.started
                finally:
                    processor.close()
                with sessions() as session:
                    active = session.scalar(select(func.count()).select_from(Dag).where(Dag.is_active))

                started = time.monotonic()
                restarted = DagProcessor(settings=settings, session_factory=sessions)
                try:
                    restarted.run_once(wait=False)
                    first_pass = time.monotonic() - started
                    while not restarted.idle():
                        time.sleep(0.01)
                    all_known = time.monotonic() - started
                finally:
                    restarted.close()
                return {
                    "type": "dag_parse",
                    "files": files,
                    "parallelism": parallelism,
                    "fresh_parsed": len(fresh.parsed),
                    "fresh_errors": fresh.errors,
                    "active_dags": active,
                    "fresh_first_dag_s": round(clock.first or 0.0, 3),
                    "fresh_all_s": round(fresh_all, 3),
                    "restart_first_pass_s": round(first_pass, 3),
                    "restart_all_known_s": round(all_known, 3),
                    "restart_parsed": restarted.files_parsed,
                }
            finally:
                engine.dispose()
    finally:
        env.drop_database("postgres", name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=2)
    args = parser.parse_args(argv)
    print(json.dumps({"type": "machine", **env.machine_info()}), flush=True)
    with env.quiet_logging():
        print(json.dumps(measure(args.files, args.parallelism)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
