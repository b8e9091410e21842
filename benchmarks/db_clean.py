"""What ``hareflow db clean`` costs on PostgreSQL, and what a results writer sees meanwhile.

A fresh PostgreSQL metastore is filled, server-side (``INSERT ... SELECT generate_series``), with
``--runs`` finished runs of ``--tasks`` task instances each, spread over ten DAGs; every task
instance has a stored result and two log chunks, one in ten an earlier try. ``--old`` of the runs
(a fraction) ended 60 days ago, the rest yesterday. Then ``clean_history`` deletes what is older
than 30 days, with the batch sizes of the CLI (``cli``) or of the scheduler's hourly step
(``scheduler``), while a thread plays a results consumer: one log chunk inserted and committed at a
time for a running task instance, its latency recorded.

    python -m benchmarks.db_clean [--runs 2000] [--tasks 100] [--old 0.9] [--mode cli|scheduler|both]
        [--retained 500000]

Ten more DAGs stopped running 90 days ago: their last runs are kept. Last, ``--retained``
recent runs are added and the clean-up looks again, finding nothing: the scheduler's hourly cost
once a backlog is gone.

Prints JSON lines: ``machine`` once, then one ``db_clean`` object per mode (rows deleted, rows/s,
transactions, the longest one, the writer's latency percentiles, how often a connection was seen
waiting for a lock, sampled every 20 ms, the dry run's time, the last look's time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import env

POPULATE = [
    # Ten DAGs that stopped running long ago: each one's last run is kept (its DAG's newest).
    """
    INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, interval_key, conf, queued_at,
                         start_date, end_date)
    SELECT 'dormant_' || g, 'last', 'manual', 'success', now() - interval '90 days',
           now() - interval '90 days', '{}', now() - interval '90 days', now() - interval '90 days',
           now() - interval '90 days'
    FROM generate_series(1, 10) AS g
    """,
    """
    INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, interval_key,
                         data_interval_start, data_interval_end, conf, queued_at, start_date, end_date)
    SELECT 'bench_' || (g % 10), 'run_' || g, 'manual', 'success', t, t, t, t, '{}', t, t,
           t + interval '5 minutes'
    FROM (SELECT g, CASE WHEN g <= :old_runs THEN now() - interval '60 days' + g * interval '1 second'
                         ELSE now() - interval '1 day' + g * interval '1 second' END AS t
          FROM generate_series(1, :runs) AS g) AS s
    """,
    """
    INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, interval_key, conf, queued_at,
                         start_date)
    VALUES ('bench_0', 'running', 'manual', 'running', now(), now(), '{}', now(), now())
    """,
    """
    INSERT INTO task_instance (run_pk, dag_id, run_id, task_id, map_index, state, try_number, max_tries,
                               queue, priority, pool_slots, reschedules, start_date, end_date)
    SELECT r.id, r.dag_id, r.run_id, 't' || k, -1,
           CASE WHEN r.state = 'running' THEN 'running' ELSE 'success' END, 1, 1, 'default', 1, 1, 0,
           r.start_date, r.end_date
    FROM dag_run AS r, generate_series(1, :tasks) AS k
    """,
    """
    INSERT INTO task_result (ti_id, try_number, value_json, created_at)
    SELECT id, 1, '{"rows": [1, 2, 3], "path": "s3://bucket/some/key"}', now() FROM task_instance
    """,
    """
    INSERT INTO task_log (ti_id, try_number, seq, text, created_at)
    SELECT id, 1, s, repeat('a log line of a task, about eighty characters long, as tasks print\n', 4),
           now()
    FROM task_instance, generate_series(0, 1) AS s
    """,
    """
    INSERT INTO task_try (ti_id, try_number, state, error)
    SELECT id, 0, 'failed', 'the first try failed' FROM task_instance WHERE id % 10 = 0
    """,
    "ANALYZE",
]
RETAINED = """
    INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, interval_key, conf, queued_at,
                         start_date, end_date)
    SELECT 'bench_' || (g % 10), 'retained_' || g, 'manual', 'success', t, t, '{}', t, t, t
    FROM (SELECT g, now() - interval '2 days' + g * interval '100 milliseconds' AS t
          FROM generate_series(1, :retained) AS g) AS s
"""
#: (runs, task instances, other rows) per transaction: the CLI's defaults and the scheduler's.
MODES = {"cli": (100, 2000, 2000), "scheduler": (20, 500, 500)}


def populate(engine: Any, runs: int, tasks: int, old: float) -> dict[str, int]:
    from sqlalchemy import text

    with engine.begin() as conn:
        for statement in POPULATE:
            conn.execute(text(statement), {"runs": runs, "tasks": tasks, "old_runs": int(runs * old)})
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0)
            for t in ("dag_run", "task_instance", "task_result", "task_log", "task_try")
        }


def writer(engine: Any, stop: threading.Event, latencies: list[float]) -> None:
    """A results consumer's smallest write: one log chunk of the running task instance, committed."""
    from sqlalchemy import text

    with engine.connect() as conn:
        ti_id = conn.execute(text("SELECT id FROM task_instance WHERE state = 'running' LIMIT 1")).scalar()
    seq = 1000
    while not stop.is_set():
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO task_log (ti_id, try_number, seq, text, created_at) "
                    "VALUES (:ti, 1, :seq, 'live line', now())"
                ),
                {"ti": ti_id, "seq": seq},
            )
        latencies.append(time.perf_counter() - started)
        seq += 1
        time.sleep(0.005)


def lock_watch(engine: Any, stop: threading.Event, seen: list[str]) -> None:
    """Every 20 ms, note any other connection to the database waiting for a lock (and on what)."""
    from sqlalchemy import text

    query = text(
        "SELECT left(query, 60) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as conn:
        while not stop.is_set():
            seen.extend(conn.execute(query).scalars())
            conn.commit()
            time.sleep(0.02)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def measure(mode: str, runs: int, tasks: int, old: float, retained: int) -> dict[str, Any]:
    from hareflow.common.db import create_engine_for, make_session_factory
    from hareflow.common.db.migrate import migrate
    from hareflow.common.retention import clean_history
    from sqlalchemy import text

    name = env.new_db_name()
    env.create_database("postgres", name)
    try:
        engine = create_engine_for(env.database_url("postgres", name, Path(tempfile.gettempdir())))
        try:
            migrate(engine)
            started = time.monotonic()
            before = populate(engine, runs, tasks, old)
            populate_s = time.monotonic() - started
            sessions = make_session_factory(engine)
            cutoff = datetime.now(UTC) - timedelta(days=30)
            per_run, per_ti, per_row = MODES[mode]
            started = time.monotonic()
            dry = clean_history(
                sessions, cutoff=cutoff, dry_run=True, runs_per_batch=per_run, tis_per_batch=per_ti
            )
            dry_s = time.monotonic() - started
            stop, latencies, waits = threading.Event(), [], []
            thread = threading.Thread(target=writer, args=(engine, stop, latencies))
            watch = threading.Thread(target=lock_watch, args=(engine, stop, waits))
            thread.start()
            watch.start()
            time.sleep(0.5)
            idle = list(latencies)
            started = time.monotonic()
            try:
                report = clean_history(
                    sessions,
                    cutoff=cutoff,
                    runs_per_batch=per_run,
                    tis_per_batch=per_ti,
                    rows_per_batch=per_row,
                )
            finally:
                took = time.monotonic() - started
                stop.set()
                thread.join(30)
                watch.join(30)
            during = latencies[len(idle) :]
            # The hourly look once nothing is left to delete, with much newer history retained.
            with engine.begin() as conn:
                conn.execute(text(RETAINED), {"retained": retained})
                conn.execute(text("ANALYZE"))
            started = time.monotonic()
            clean_history(sessions, cutoff=cutoff, runs_per_batch=per_run, tis_per_batch=per_ti)
            again_s = time.monotonic() - started
            return {
                "type": "db_clean",
                "mode": mode,
                "batch": {"runs": per_run, "task_instances": per_ti, "rows": per_row},
                "history": before,
                "populate_s": round(populate_s, 1),
                "deleted": {k: v for k, v in report.counts.items() if v},
                "deleted_total": report.total,
                "matches_dry_run": dry.counts == report.counts,
                "dry_run_s": round(dry_s, 2),
                "seconds": round(took, 2),
                "rows_per_s": round(report.total / took),
                "task_instances_per_s": round(report.counts["task_instance"] / took),
                "transactions": report.transactions,
                "longest_transaction_ms": round(report.longest_transaction * 1000, 1),
                "kept_runs": report.kept_runs,
                "nothing_left_s": round(again_s, 3),
                "nothing_left_runs": before["dag_run"] - report.counts["dag_run"] + retained,
                "lock_waits_seen": len(waits),
                "lock_waits_on": sorted(set(waits))[:5],
                "writer_ms": {
                    "idle_p50": round(statistics.median(idle) * 1000, 2) if idle else None,
                    "p50": round(statistics.median(during) * 1000, 2) if during else None,
                    "p99": round(percentile(during, 0.99) * 1000, 2),
                    "max": round(max(during, default=0.0) * 1000, 2),
                    "writes": len(during),
                },
            }
        finally:
            engine.dispose()
    finally:
        env.drop_database("postgres", name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--old", type=float, default=0.9, help="fraction of the runs older than the cutoff")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--retained", type=int, default=500_000, help="recent runs added for the last look")
    args = parser.parse_args(argv)
    print(json.dumps({"type": "machine", **env.machine_info()}), flush=True)
    for mode in MODES if args.mode == "both" else [args.mode]:
        print(json.dumps(measure(mode, args.runs, args.tasks, args.old, args.retained)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
