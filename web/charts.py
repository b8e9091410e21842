"""The reads behind the charts: a run's Gantt (one bar per task instance) and a DAG's durations
over its latest runs.

Both are bounded like every other page query: the Gantt reads one run's task instances, the
durations chart reads the latest N runs (the ``(dag_id, logical_date)`` index) and then only the
task instances of those runs (the ``(run_pk, task_id, map_index)`` unique index), aggregated per
run and task by the database. However long a DAG's history, the cost is N runs × its tasks.

The metastore keeps one row per task instance, holding its current try's times, and the tries
before it as they ended (``task_try``, kept since a retry or a clear started the next one): the
Gantt draws each instance's earlier tries on its row, before the current one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hareflow.common.db import Dag, DagRun, TaskInstance, TaskTry
from hareflow.common.records import iso, seconds_between
from hareflow.web.queries import latest_runs, naive_utc, now_utc, task_order
from sqlalchemy import DateTime, func, select, type_coerce
from sqlalchemy.orm import Session

#: Run counts the durations chart offers (the grid's largest, 365, is the upper bound).
DURATION_RUNS = (25, 50, 100, 365)

_ti = TaskInstance.__table__.c
_try = TaskTry.__table__.c


def _naive(expression: Any, name: str) -> Any:
    """An aggregate of a UTC column read as the naive UTC datetime the database stores."""
    return type_coerce(expression, DateTime()).label(name)


def gantt(s: Session, dag: Dag, run: DagRun) -> dict[str, Any]:
    """One run's task instances with their queued, start and end times, in the DAG's task order
    (mapped instances by map index), the tasks that have no instance yet, and the server's clock
    (a bar still running ends at ``now``: the browser's clock may be off)."""
    rows = (
        s.connection()
        .execute(
            select(
                _ti.id,
                _ti.task_id,
                _ti.map_index,
                _ti.state,
                _ti.try_number,
                _ti.max_tries,
                naive_utc(_ti.queued_at),
                naive_utc(_ti.start_date),
                naive_utc(_ti.end_date),
                _ti.duration,
                _ti.hostname,
                naive_utc(_ti.next_retry_at),
            ).where(_ti.run_pk == run.id)
        )
        .all()
    )
    order = task_order(dag.serialized or {}, (r.task_id for r in rows))
    position = {t: i for i, t in enumerate(order)}
    rows.sort(key=lambda r: (position[r.task_id], r.map_index))
    present = {r.task_id for r in rows}
    earlier: dict[int, list[dict[str, Any]]] = {}
    if any(r.try_number > 1 for r in rows):
        kept = s.connection().execute(
            select(
                _try.ti_id,
                _try.try_number,
                _try.state,
                naive_utc(_try.queued_at),
                naive_utc(_try.start_date),
                naive_utc(_try.end_date),
                _try.hostname,
            )
            .join(TaskInstance, TaskInstance.id == _try.ti_id)
            .where(_ti.run_pk == run.id)
            .order_by(_try.ti_id, _try.try_number)
        )
        for ti_id, number, state, queued_at, start, end, host in kept:
            earlier.setdefault(ti_id, []).append(
                {
                    "try_number": number,
                    "state": state,
                    "queued_at": iso(queued_at),
                    "start_date": iso(start),
                    "end_date": iso(end),
                    "hostname": host,
                }
            )
    return {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "run_state": run.state,
        "queued_at": iso(run.queued_at),
        "start_date": iso(run.start_date),
        "end_date": iso(run.end_date),
        "now": iso(now_utc()),
        "task_instances": [
            {
                "task_id": r.task_id,
                "map_index": r.map_index,
                "state": r.state,
                "try_number": r.try_number,
                "max_tries": r.max_tries,
                "queued_at": iso(r.queued_at),
                "start_date": iso(r.start_date),
                "end_date": iso(r.end_date),
                "duration": r.duration,
                "hostname": r.hostname,
                "next_retry_at": iso(r.next_retry_at),
                "earlier_tries": earlier.get(r.id, []),
            }
            for r in rows
        ],
        "missing": [t for t in order if t not in present],
    }


def _queued_seconds(queued: datetime | None, start: datetime | None) -> float | None:
    seconds = seconds_between(queued, start)
    return None if seconds is None else max(seconds, 0.0)


def durations(s: Session, dag: Dag, limit: int) -> dict[str, Any]:
    """The latest ``limit`` runs of ``dag`` (oldest first) with their queued and running seconds,
    and per task the same over those runs (lists aligned with the runs; None where the task did
    not run to its end in that run). A mapped task counts from its first instance's start to its
    last one's end: the wall-clock time it held the run up."""
    conn = s.connection()
    runs = conn.execute(latest_runs(dag.dag_id, limit)).all()
    runs.reverse()
    column = {r.id: i for i, r in enumerate(runs)}
    running: dict[str, list[float | None]] = {}
    queued: dict[str, list[float | None]] = {}
    if column:
        rows = conn.execute(
            select(
                _ti.run_pk,
                _ti.task_id,
                _naive(func.min(_ti.queued_at), "queued_at"),
                _naive(func.min(_ti.start_date), "start_date"),
                _naive(func.max(_ti.end_date), "end_date"),
                func.count().label("instances"),
                func.count(_ti.end_date).label("ended"),
            )
            .where(_ti.run_pk.in_(list(column)))
            .group_by(_ti.run_pk, _ti.task_id)
        )
        width = len(runs)
        # Tuples, not attribute access: 365 runs of 50 tasks are 18,250 rows.
        for run_pk, task_id, queued_at, start, end, instances, ended in rows:
            if task_id not in running:
                running[task_id], queued[task_id] = [None] * width, [None] * width
            if start is None:
                continue
            i = column[run_pk]  # the datetimes are all naive UTC (naive_utc): subtract directly
            if ended == instances and end is not None:
                running[task_id][i] = round((end - start).total_seconds(), 3)
            if queued_at is not None:
                queued[task_id][i] = max(round((start - queued_at).total_seconds(), 3), 0.0)
    return {
        "dag_id": dag.dag_id,
        "limit": limit,
        "runs": [
            {
                "run_id": r.run_id,
                "state": r.state,
                "run_type": r.run_type,
                "logical_date": iso(r.logical_date),
                "queued_at": iso(r.queued_at),
                "start_date": iso(r.start_date),
                "end_date": iso(r.end_date),
                "duration": seconds_between(r.start_date, r.end_date),
                "queued": _queued_seconds(r.queued_at, r.start_date),
            }
            for r in runs
        ],
        "tasks": [t for t in task_order(dag.serialized or {}, running) if t in running],
        "task_durations": running,
        "task_queued": queued,
    }
