"""Dispatch of a mapped task against a static fan-out of the same width, in-process.

Two DAGs, each ``start`` then N tasks (N = 1,000 by default):

- ``static``: ``start >> [m0000 ... m0999]``, N no-op tasks written out;
- ``mapped``: ``each.expand(x=start())``, where ``start`` returns ``list(range(N))``.

For each, a fresh metastore, the DAG processor, a warm-up run and iteration (DAG loading, caches),
then the measured run: its **first pass** (it creates the run's task instances: N + 1 for
``static``, 2 for ``mapped``, and dispatches ``start``), ``start``'s success recorded as the results
consumer would, and its **dispatch pass**, the one that makes the N task instances ready and
dispatches them all (for ``mapped`` it also expands: the placeholder replaced by N instances in one
batched insert, each message built with its own element). Both passes together do the same work
for either DAG (create N instances, schedule and queue them, build N messages), so their sum per
task is the comparison; each pass is reported too, and all N messages must be there. No broker
and no worker: the executor keeps the messages.
``max_active_tasks`` is N + 1 (the warm-up run holds one slot) so one pass dispatches every task.

    python -m benchmarks.mapping [--width 1000] [--repeat 5] [--database postgres|sqlite]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import textwrap
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import env

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)

STATIC = """
from hareflow import DAG, task

with DAG("bench_static", max_active_tasks={active}):
    @task
    def start():
        return list(range({width}))

    @task
    def noop():
        return None

    first = start()
    for i in range({width}):
        first >> noop.override(task_id=f"m{{i:04d}}")()
"""

MAPPED = """
from hareflow import DAG, task

with DAG("bench_mapped", max_active_tasks={active}):
    @task
    def start():
        return list(range({width}))

    @task
    def each(x):
        return None

    each.expand(x=start())
"""


def _measure(kind: str, source: str, dag_id: str, width: int, database: str, workdir: Path) -> dict[str, Any]:
    from hareflow.common.broker.local import LocalExecutor
    from hareflow.common.config import load_settings
    from hareflow.common.db import create_engine_for, make_session_factory
    from hareflow.common.db.migrate import migrate
    from hareflow.common.messages import ResultMessage, TaskMessage
    from hareflow.common.runs import trigger_run
    from hareflow.scheduler.dag_processor import DagProcessor
    from hareflow.scheduler.loop import LoopReport, Scheduler
    from hareflow.scheduler.results import apply_results

    class Keeping(LocalExecutor):
        def __init__(self) -> None:
            super().__init__()
            self.published: list[TaskMessage] = []

        def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
            self.published.extend(messages)

    name = env.new_db_name()
    env.create_database(database, name)
    url = env.database_url(database, name, workdir)
    folder = workdir / f"dags_{name}"
    folder.mkdir()
    (folder / "bench.py").write_text(textwrap.dedent(source.format(width=width, active=width + 1)))
    settings = load_settings(
        env={},
        overrides={
            "home": str(workdir / "home"),
            "database_url": url,
            "dags_folder": str(folder),
            "dags_are_paused_at_creation": False,
            "max_map_length": max(width, 1024),
        },
    )
    engine = create_engine_for(url)
    executor = Keeping()
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        DagProcessor(settings=settings, session_factory=sessions, folder=folder).run_once(NOW)
        with sessions() as s, s.begin():
            trigger_run(s, dag_id, now=NOW)
        scheduler = Scheduler(settings=settings, session_factory=sessions, executor=executor)
        scheduler.run_once(NOW)  # housekeeping and the first pass, unmeasured (DAG loading, caches)
        with sessions() as s, s.begin():
            trigger_run(s, dag_id, run_id="measured", now=NOW)
        began = time.perf_counter()
        scheduler.schedule_runs(NOW, LoopReport())
        first_pass = time.perf_counter() - began
        (start,) = [m for m in executor.published if m.key.run_id == "measured"]
        done = ResultMessage(
            key=start.key,
            outcome="success",
            worker="bench",
            hostname="bench",
            pid=1,
            at=NOW.timestamp(),
            result_json=json.dumps(list(range(width))),
        )
        with sessions() as s, s.begin():
            apply_results(s, [done], NOW)
        executor.published.clear()
        began = time.perf_counter()
        scheduler.schedule_runs(NOW, LoopReport())
        seconds = time.perf_counter() - began
        messages = [m for m in executor.published if m.key.run_id == "measured"]
    finally:
        executor.close()
        engine.dispose()
        env.drop_database(database, name)
    assert len(messages) == width, f"{kind}: {len(messages)} messages, expected {width}"
    if kind == "mapped":
        assert sorted(m.expand_args["x"] for m in messages) == list(range(width))  # type: ignore[index]
    return {"first_pass": first_pass, "seconds": seconds, "messages": len(messages)}


def run(width: int, repeat: int, database: str) -> dict[str, Any]:
    """Measure both DAGs ``repeat`` times, alternating; return the medians and every sample."""
    samples: dict[str, list[float]] = {"static": [], "mapped": []}
    firsts: dict[str, list[float]] = {"static": [], "mapped": []}
    with env.quiet_logging(), tempfile.TemporaryDirectory(prefix="hfbench-mapping-") as tmp:
        workdir = Path(tmp)
        for _ in range(repeat):
            for kind, source, dag_id in (
                ("static", STATIC, "bench_static"),
                ("mapped", MAPPED, "bench_mapped"),
            ):
                measured = _measure(kind, source, dag_id, width, database, workdir)
                samples[kind].append(measured["seconds"])
                firsts[kind].append(measured["first_pass"])
    out: dict[str, Any] = {
        "bench": "mapping_dispatch",
        "width": width,
        "database": database,
        "repeat": repeat,
    }
    for kind, values in samples.items():
        median = statistics.median(values)
        both = statistics.median(a + b for a, b in zip(firsts[kind], values, strict=True))
        out[kind] = {
            "first_pass_seconds": round(statistics.median(firsts[kind]), 4),
            "dispatch_pass_seconds": round(median, 4),
            "both_passes_seconds": round(both, 4),
            "us_per_task": round(both / width * 1e6, 1),
            "samples": [round(v, 4) for v in values],
        }
    out["mapped_over_static"] = round(
        out["mapped"]["both_passes_seconds"] / out["static"]["both_passes_seconds"], 2
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mapping", description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.width, args.repeat, args.database), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
