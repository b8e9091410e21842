"""What the charts' reads cost on a DAG with a long history; one JSON object per line on stdout.

    python -m benchmarks.charts [--runs 1000] [--long 4000] [--tasks 50] [--repeat 9]

Builds a temporary PostgreSQL database (``HAREFLOW_TEST_DATABASE_URL``, default the local
``postgres`` superuser) with two DAGs of ``--tasks`` tasks: one with ``--runs`` finished runs and
one with ``--long`` (every run has all its task instances, with varied queued, start and end
times). Then times, ``--repeat`` times each, in this process on one session as a request would:

- ``durations``: ``hareflow.web.charts.durations`` (the Durations tab and its API endpoint) for
  the latest 25, 50, 100 and 365 runs of each DAG, plus encoding its JSON (the answer's size too);
- ``gantt``: ``hareflow.web.charts.gantt`` of one run of ``--tasks`` task instances;
- ``whole_history``: for comparison, reading every task instance of the DAG (what a chart that is
  not bounded by the latest runs would read).

Medians, min and max in milliseconds. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from hareflow.common.db import Dag, DagRun, TaskInstance, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from sqlalchemy import insert, select, text

from benchmarks import env
from benchmarks.web_pages import T0, _dag_row, _run_row, serialized

N_CHOICES = (25, 50, 100, 365)
BATCH = 20_000


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def populate(sessions: Any, dag_id: str, n_runs: int, n_tasks: int) -> None:
    data = serialized(dag_id, n_tasks)
    now = T0 + timedelta(days=n_runs + 1)
    with sessions() as s, s.begin():
        s.execute(insert(Dag), [_dag_row(dag_id, data, now)])
        runs = []
        for r in range(n_runs):
            row = _run_row(dag_id, T0 + timedelta(hours=r), "failed" if r % 17 == 0 else "success")
            row["end_date"] = row["start_date"] + timedelta(seconds=60 + r % 90)
            runs.append(row)
        s.execute(insert(DagRun), runs)
        pks = s.execute(
            select(DagRun.id, DagRun.run_id, DagRun.start_date).where(DagRun.dag_id == dag_id)
        ).all()
        batch: list[dict[str, Any]] = []
        for pk, run_id, start in pks:
            for i, task in enumerate(data["tasks"]):
                begin = start + timedelta(seconds=i + (pk * 7 + i) % 5)
                batch.append(
                    {
                        "run_pk": pk,
                        "dag_id": dag_id,
                        "run_id": run_id,
                        "task_id": task["task_id"],
                        "map_index": -1,
                        "state": "success",
                        "try_number": 1,
                        "max_tries": 1,
                        "queue": "default",
                        "priority": 1,
                        "pool_slots": 1,
                        "hostname": "bench-host",
                        "queued_at": begin - timedelta(seconds=1 + i % 3),
                        "start_date": begin,
                        "end_date": begin + timedelta(seconds=2 + (pk + i) % 11),
                        "duration": float(2 + (pk + i) % 11),
                    }
                )
                if len(batch) >= BATCH:
                    s.execute(insert(TaskInstance), batch)
                    batch = []
        if batch:
            s.execute(insert(TaskInstance), batch)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[dict[str, float], Any]:
    fn()  # warm: statement caches, the connection, the database's buffers
    samples, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return (
        {
            "median_ms": round(statistics.median(samples), 2),
            "min_ms": round(min(samples), 2),
            "max_ms": round(max(samples), 2),
        },
        result,
    )


def measure(sessions: Any, dag_id: str, n_runs: int, n_tasks: int, repeat: int) -> None:
    from hareflow.web import charts

    with sessions() as s:
        dag = s.get(Dag, dag_id)
        assert dag is not None
        for n in N_CHOICES:
            stats, body = timed(lambda n=n: json.dumps(charts.durations(s, dag, n)), repeat)
            emit(
                {
                    "bench": "durations",
                    "history_runs": n_runs,
                    "tasks": n_tasks,
                    "last_runs": n,
                    "bytes": len(body),
                    **stats,
                }
            )
        run = s.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        ).one()
        stats, body = timed(lambda: json.dumps(charts.gantt(s, dag, run)), repeat)
        emit({"bench": "gantt", "history_runs": n_runs, "tasks": n_tasks, "bytes": len(body), **stats})
        whole = select(
            TaskInstance.run_pk, TaskInstance.task_id, TaskInstance.start_date, TaskInstance.end_date
        ).where(TaskInstance.dag_id == dag_id)
        stats, rows = timed(lambda: s.execute(whole).all(), max(3, repeat // 3))
        emit({"bench": "whole_history", "history_runs": n_runs, "tasks": n_tasks, "rows": len(rows), **stats})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--long", type=int, default=4000, help="runs of the second DAG (0: none)")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    name = env.new_db_name()
    env.create_database("postgres", name)
    engine = create_engine_for(env.database_url("postgres", name, Path(".")))
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        histories = [args.runs] + ([args.long] if args.long else [])
        for n_runs in histories:
            t0 = time.perf_counter()
            populate(sessions, f"history_{n_runs}", n_runs, args.tasks)
            print(
                f"seeded {n_runs} runs x {args.tasks} tasks in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
        with engine.connect() as conn:  # the statistics autovacuum would have gathered by now
            conn.execute(text("ANALYZE"))
            conn.commit()
        for n_runs in histories:
            measure(sessions, f"history_{n_runs}", n_runs, args.tasks, args.repeat)
    finally:
        engine.dispose()
        env.drop_database("postgres", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
