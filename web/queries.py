"""The reads behind the pages and the API, returning plain JSON-able dicts.

Pages and API share these so that what a page shows and what its JavaScript refetches are the
same data. Every query is bounded: recent runs per DAG, a page of DAGs, one run's task instances;
nothing scans the whole history.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hareflow.common.db import (
    Backfill,
    Dag,
    DagCode,
    DagRun,
    DagVersion,
    ImportError_,
    SchedulerHeartbeat,
    TaskInstance,
    TaskLog,
    TaskRendered,
    TaskResult,
    TaskTry,
    Worker,
)
from hareflow.common.records import iso
from hareflow.common.states import TASK_DISPATCHED, TaskState
from hareflow.common.tries import COLUMNS as TRY_COLUMNS
from hareflow.web import task_groups
from sqlalchemy import (
    DateTime,
    Integer,
    Row,
    Select,
    Text,
    bindparam,
    cast,
    exists,
    func,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

#: How many of a DAG's latest runs the DAG list counts by state.
RECENT_RUNS = 25
#: Longest return value or error shown in full on a page (the API returns them whole).
PAGE_TEXT_LIMIT = 64 * 1024
#: A scheduler whose last heartbeat is older than this is reported unhealthy (it beats every 5 s).
SCHEDULER_STALE_AFTER = 30.0


def now_utc() -> datetime:
    return datetime.now(UTC)


def naive_utc(column: Any) -> Any:
    """``column`` read as the naive UTC datetime the database stores, labelled with its own name:
    list endpoints skip ``UtcDateTime``'s conversion of every value, and ``iso`` formats naive
    values as UTC anyway."""
    return type_coerce(column, DateTime()).label(column.key)


_run = DagRun.__table__.c
_dag = Dag.__table__.c
# -- DAGs -------------------------------------------------------------------------------------------

#: The DAG list's columns, in the order ``_dag_row_dict`` reads them.
_DAG_COLUMNS = (
    _dag.dag_id,
    _dag.owner,
    _dag.tags,
    _dag.schedule,
    _dag.timezone,
    _dag.is_paused,
    _dag.description,
    _dag.fileloc,
    naive_utc(_dag.next_logical_date),
    naive_utc(_dag.next_run_after),
    naive_utc(_dag.last_parsed_at),
)


@dataclass(frozen=True)
class DagPage:
    dags: list[dict[str, Any]]
    total: int
    tags: list[str]


def _dag_row_dict(row: Any) -> dict[str, Any]:
    dag_id, owner, tags, schedule, timezone, is_paused, description, fileloc, next_date, after, parsed = row
    return {
        "dag_id": dag_id,
        "owner": owner,
        "tags": list(tags or []),
        "schedule": schedule,
        "timezone": timezone,
        "is_paused": bool(is_paused),
        "description": description,
        "fileloc": fileloc,
        "next_logical_date": iso(next_date),
        "next_run_after": iso(after),
        "last_parsed_at": iso(parsed),
    }


@functools.cache
def _dag_list_query(by_ids: bool, paused: bool | None) -> Select[Any]:
    """The DAG list's query per combination of filters, built once (ids bound at execution)."""
    query = select(*_DAG_COLUMNS).where(_dag.is_active.is_(True)).order_by(_dag.dag_id)
    if by_ids:
        query = query.where(_dag.dag_id.in_(bindparam("dag_ids", expanding=True)))
    if paused is not None:
        query = query.where(_dag.is_paused.is_(paused))
    return query


def list_dags(
    s: Session,
    *,
    search: str | None = None,
    tag: str | None = None,
    paused: bool | None = None,
    dag_ids: Sequence[str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> DagPage:
    """A page of active DAGs (by id) with their recent runs, filtered by a search string (id,
    owner or description, case-insensitive), a tag and the paused flag. Core rows on the
    session's connection, read by position."""
    query = _dag_list_query(dag_ids is not None, paused)
    values = {"dag_ids": list(dag_ids)} if dag_ids is not None else {}
    rows = s.connection().execute(query, values).all()
    # Tags live in a JSON column, which the three databases query differently: the active DAGs'
    # small columns are filtered here instead (thousands of rows at most).
    tags = sorted({t for r in rows for t in (r[2] or [])})
    needle = (search or "").strip().lower()
    if needle:
        rows = [
            r
            for r in rows
            if needle in r[0].lower() or needle in (r[1] or "").lower() or needle in (r[6] or "").lower()
        ]
    if tag:
        rows = [r for r in rows if tag in (r[2] or [])]
    total = len(rows)
    page = [_dag_row_dict(r) for r in rows[offset : offset + limit]]
    recent = recent_runs(s, [d["dag_id"] for d in page])
    for d in page:
        d["recent_states"], d["last_run"] = recent.get(d["dag_id"], ({}, None))
    return DagPage(dags=page, total=total, tags=tags)


#: The columns the DAG list shows of each recent run, in the order ``recent_runs`` reads them.
_RECENT_COLUMNS = (
    _run.dag_id,
    _run.run_id,
    _run.state,
    _run.run_type,
    naive_utc(_run.logical_date),
    naive_utc(_run.start_date),
    naive_utc(_run.end_date),
)


def _latest_of(dag_id: Any) -> Select[Any]:
    """The latest ``per_dag`` runs of one DAG, newest first: a backward scan of the
    ``(dag_id, logical_date)`` index that stops after ``per_dag`` entries."""
    return (
        select(*_RECENT_COLUMNS, _run.id)
        .where(_run.dag_id == dag_id)
        .order_by(_run.logical_date.desc(), _run.id.desc())
        .limit(bindparam("per_dag", type_=Integer))
    )


@functools.cache
def _recent_runs_lateral() -> Select[Any]:
    """PostgreSQL: each listed DAG's latest runs through a LATERAL join (one index scan each)."""
    latest = _latest_of(_dag.dag_id).lateral("latest")
    return (
        select(*(latest.c[c.key] for c in _RECENT_COLUMNS))
        .select_from(Dag.__table__.join(latest, true()))
        .where(_dag.dag_id.in_(bindparam("dag_ids", expanding=True)))
        .order_by(latest.c.dag_id, latest.c.logical_date.desc(), latest.c.id.desc())
    )


#: DAGs per statement where the recent runs are a union (SQLite allows 500 terms in one).
UNION_BRANCHES = 100


@functools.cache
def _recent_runs_union(count: int) -> Select[Any]:
    """MySQL/MariaDB and SQLite (MariaDB has no LATERAL): one branch per listed DAG, each its own
    bounded index scan, built once per number of DAGs listed."""
    branches = [_latest_of(bindparam(f"dag_{i}")).subquery().select() for i in range(count)]
    both = union_all(*branches).subquery()
    return select(*(both.c[c.key] for c in _RECENT_COLUMNS)).order_by(
        both.c.dag_id, both.c.logical_date.desc(), both.c.id.desc()
    )


def recent_runs(
    s: Session, dag_ids: Sequence[str], per_dag: int = RECENT_RUNS
) -> dict[str, tuple[dict[str, int], dict[str, Any] | None]]:
    """For each DAG, how many of its latest ``per_dag`` runs are in each state, and the latest run
    (one query that reads at most ``per_dag`` runs of each, however long its history: a LATERAL join
    on PostgreSQL, a union of one bounded branch per DAG elsewhere). Only the latest run of each is
    formatted: a page of 100 DAGs reads 2,500 rows to count their states, fetched at once and read
    by position."""
    if not dag_ids:
        return {}
    out: dict[str, tuple[dict[str, int], dict[str, Any] | None]] = {}
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_recent_runs_lateral(), {"dag_ids": list(dag_ids), "per_dag": per_dag}).all()
    else:
        rows = []
        for start in range(0, len(dag_ids), UNION_BRANCHES):
            chunk = dag_ids[start : start + UNION_BRANCHES]
            values = {"per_dag": per_dag, **{f"dag_{i}": dag_id for i, dag_id in enumerate(chunk)}}
            rows += conn.execute(_recent_runs_union(len(chunk)), values).all()
    states: dict[str, int] = {}
    shown = None
    for dag_id, run_id, state, run_type, logical_date, start_date, end_date in rows:
        if dag_id != shown:
            shown = dag_id
            last = {
                "run_id": run_id,
                "state": state,
                "run_type": run_type,
                "logical_date": iso(logical_date),
                "start_date": iso(start_date),
                "end_date": iso(end_date),
            }
            states = {state: 1}
            out[dag_id] = (states, last)
        else:
            states[state] = states.get(state, 0) + 1
    return out


def get_dag(s: Session, dag_id: str) -> Dag | None:
    dag = s.get(Dag, dag_id)
    return dag if dag is not None and dag.is_active else None


def dag_exists(s: Session, dag_id: str) -> bool:
    """Whether an active DAG ``dag_id`` exists, without loading its serialized form (the largest
    column of the table, decoded from JSON on every load)."""
    found = s.scalar(select(Dag.dag_id).where(Dag.dag_id == dag_id, Dag.is_active.is_(True)))
    return found is not None


def dag_detail(dag: Dag) -> dict[str, Any]:
    serialized = dag.serialized or {}
    return {
        "dag_id": dag.dag_id,
        "owner": dag.owner,
        "tags": list(dag.tags or []),
        "schedule": dag.schedule,
        "timezone": dag.timezone,
        "is_paused": dag.is_paused,
        "description": dag.description,
        "doc_md": serialized.get("doc_md"),
        "fileloc": dag.fileloc,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "params": serialized.get("params") or {},
        "start_date": serialized.get("start_date"),
        "end_date": serialized.get("end_date"),
        "catchup": serialized.get("catchup"),
        "next_logical_date": iso(dag.next_logical_date),
        "next_run_after": iso(dag.next_run_after),
        "last_parsed_at": iso(dag.last_parsed_at),
        "tasks": list(serialized.get("tasks") or []),
    }


def import_errors(s: Session) -> list[dict[str, Any]]:
    rows = s.scalars(select(ImportError_).order_by(ImportError_.filename, ImportError_.line))
    return [
        {"filename": e.filename, "line": e.line, "message": e.message, "timestamp": iso(e.timestamp)}
        for e in rows
    ]


# -- runs and task instances ------------------------------------------------------------------------


#: The columns of a run's JSON form, in the order ``hareflow.common.records.run_dicts`` reads them.
_RUN_COLUMNS = (
    _run.dag_id,
    _run.run_id,
    _run.run_type,
    _run.state,
    naive_utc(_run.logical_date),
    naive_utc(_run.data_interval_start),
    naive_utc(_run.data_interval_end),
    # As the text the database holds: ``run_dicts`` decodes it, and most confs are ``{}``, which
    # it does not (the driver's JSON decoding was a sixth of the run list's time).
    cast(_run.conf, Text).label("conf"),
    _run.triggered_by,
    _run.backfill_id,
    naive_utc(_run.queued_at),
    naive_utc(_run.start_date),
    naive_utc(_run.end_date),
    # The number of the DAG version the run recorded (one primary-key lookup per listed run).
    select(DagVersion.version_number)
    .where(DagVersion.id == _run.dag_version_id)
    .scalar_subquery()
    .label("dag_version_number"),
)


@functools.cache
def _run_page_query(by_state: bool, by_type: bool) -> Select[Any]:
    """The run list's query, built once per combination of filters (its values are bound at
    execution): building a statement costs about as much as compiling one from the cache."""
    filters = [_run.dag_id == bindparam("dag_id")]
    if by_state:
        filters.append(_run.state == bindparam("state"))
    if by_type:
        filters.append(_run.run_type == bindparam("run_type"))
    active = exists().where(_dag.dag_id == bindparam("dag_id"), _dag.is_active.is_(True))
    return (
        select(*_RUN_COLUMNS, func.count().over().label("total"))
        .where(*filters, active)
        .order_by(_run.logical_date.desc(), _run.id.desc())
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )


def list_runs(
    s: Session,
    dag_id: str,
    *,
    state: str | None = None,
    run_type: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Row[Any]], int] | None:
    """A page of the runs of the active DAG ``dag_id`` (newest first) as rows of the columns
    ``run_dicts`` reads, and how many runs match in all; None when there is no such DAG.

    One query in the usual case: the rows carry the total (a window ``count(*) over ()``, which
    the three databases all support) and the DAG's existence (a condition on the same query). Only
    an empty page asks again: whether the DAG exists, then, past the last page, the count. Plain
    Core on the session's connection: the ORM has nothing to add to rows of columns."""
    values = {"dag_id": dag_id, "state": state, "run_type": run_type, "limit": limit, "offset": offset}
    query = _run_page_query(bool(state), bool(run_type))
    rows = s.connection().execute(query, values).all()
    if rows:
        return list(rows), int(rows[0].total)
    if not dag_exists(s, dag_id):
        return None
    if offset == 0:
        return [], 0
    count = select(func.count()).select_from(DagRun).where(DagRun.dag_id == dag_id)
    if state:
        count = count.where(DagRun.state == state)
    if run_type:
        count = count.where(DagRun.run_type == run_type)
    return [], int(s.scalar(count) or 0)


def get_run(s: Session, dag_id: str, run_id: str) -> DagRun | None:
    return s.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))


def task_order(serialized: dict[str, Any], extra: Iterable[str] = ()) -> list[str]:
    """Task ids in the DAG's topological order, then any others the run has (removed tasks)."""
    order = [t["task_id"] for t in serialized.get("tasks") or []]
    known = set(order)
    return order + sorted({t for t in extra if t not in known})


def run_task_instances(s: Session, run: DagRun, serialized: dict[str, Any]) -> list[TaskInstance]:
    tis = list(s.scalars(select(TaskInstance).where(TaskInstance.run_pk == run.id)))
    position = {t: i for i, t in enumerate(task_order(serialized, (ti.task_id for ti in tis)))}
    return sorted(tis, key=lambda ti: (position.get(ti.task_id, 1 << 30), ti.map_index))


def get_ti(s: Session, run: DagRun, task_id: str, map_index: int | None = None) -> TaskInstance | None:
    """One task instance: the one with ``map_index``, or by default the task's lowest map index
    (its only instance unless it is mapped)."""
    query = select(TaskInstance).where(TaskInstance.run_pk == run.id, TaskInstance.task_id == task_id)
    if map_index is not None:
        query = query.where(TaskInstance.map_index == map_index)
    return s.scalar(query.order_by(TaskInstance.map_index).limit(1))


def instance_states(s: Session, run: DagRun, task_id: str) -> list[tuple[int, str]]:
    """(map index, state) of each instance of a mapped task in ``run``; [] for a task not mapped
    (or not expanded yet)."""
    rows = s.execute(
        select(TaskInstance.map_index, TaskInstance.state)
        .where(TaskInstance.run_pk == run.id, TaskInstance.task_id == task_id, TaskInstance.map_index >= 0)
        .order_by(TaskInstance.map_index)
    ).all()
    return [(int(i), str(state)) for i, state in rows]


#: Which state a mapped task's summary shows: the first of these that one of its instances is in.
SUMMARY_ORDER = (
    "running",
    "queued",
    "up_for_retry",
    "up_for_reschedule",
    "scheduled",
    "none",
    "failed",
    "upstream_failed",
    "success",
    "skipped",
    "removed",
)


def summary_state(states: Iterable[str]) -> str:
    """One state for a mapped task's instances: still working if one is, else failed if one
    failed, else success if one succeeded, else skipped."""
    present = set(states)
    return next((state for state in SUMMARY_ORDER if state in present), "none")


def tries_of(s: Session, ti: TaskInstance) -> list[int]:
    """Every try that left a trace (a log, a result or a kept row), plus the current one."""
    logged = s.scalars(select(TaskLog.try_number).where(TaskLog.ti_id == ti.id).distinct())
    returned = s.scalars(select(TaskResult.try_number).where(TaskResult.ti_id == ti.id))
    kept = s.scalars(select(TaskTry.try_number).where(TaskTry.ti_id == ti.id))
    tries = set(logged) | set(returned) | set(kept)
    if ti.try_number > 0:
        tries.add(ti.try_number)
    return sorted(tries)


def try_view(s: Session, current: dict[str, Any], try_number: int) -> tuple[dict[str, Any], bool]:
    """The task instance as of one of its tries: the current try as it is, an earlier one with the
    state, times, worker, host and error it ended with (``common.tries``). The flag is False for an
    earlier try that was not kept (it ended before tries were kept): then the fields are blank."""
    if try_number == current["try_number"]:
        return current, True
    kept = s.get(TaskTry, (current["id"], try_number))
    view = {**current, "try_number": try_number}
    for name in TRY_COLUMNS:
        value = getattr(kept, name) if kept is not None else None
        view[name] = iso(value) if isinstance(value, datetime) else value
    if kept is None:
        view["state"] = "none"
    view["next_retry_at"] = None
    view["reschedules"] = 0
    return view, kept is not None


def result_of(s: Session, ti: TaskInstance, try_number: int) -> str | None:
    """The try's JSON return value, as stored (None if it returned nothing)."""
    return s.scalar(
        select(TaskResult.value_json).where(TaskResult.ti_id == ti.id, TaskResult.try_number == try_number)
    )


def rendered_of(s: Session, ti: TaskInstance, try_number: int) -> dict[str, Any] | None:
    """The try's template fields as its worker rendered them (None if it rendered none)."""
    value = s.scalar(
        select(TaskRendered.fields_json).where(
            TaskRendered.ti_id == ti.id, TaskRendered.try_number == try_number
        )
    )
    return None if value is None else json.loads(value)


def log_chunks(
    s: Session, ti: TaskInstance, try_number: int, after: int = 0, limit: int = 1000
) -> dict[str, Any]:
    """Log chunks of one try with ``seq > after`` (chunks are numbered from 1), each with ``at``,
    when its worker sent it (the lines' timestamps, within ``log_chunk_interval``). ``offset`` in the
    answer is the last seq returned: pass it back to get only what came next. ``finished`` says
    the try is over, so once a read returns no chunks there is nothing more to wait for."""
    rows = s.execute(
        select(TaskLog.seq, TaskLog.text, TaskLog.created_at)
        .where(TaskLog.ti_id == ti.id, TaskLog.try_number == try_number, TaskLog.seq > after)
        .order_by(TaskLog.seq)
        .limit(limit)
    ).all()
    chunks = [{"seq": seq, "text": text, "at": iso(at)} for seq, text, at in rows]
    return {
        "try_number": try_number,
        "chunks": chunks,
        "offset": chunks[-1]["seq"] if chunks else after,
        "more": len(chunks) == limit,
        "finished": not (ti.try_number == try_number and ti.state in TASK_DISPATCHED),
        "state": ti.state,
    }


def log_text(s: Session, ti: TaskInstance, try_number: int) -> str:
    """The whole log of one try, every chunk in order (what a download gives)."""
    rows = s.scalars(
        select(TaskLog.text)
        .where(TaskLog.ti_id == ti.id, TaskLog.try_number == try_number)
        .order_by(TaskLog.seq)
    )
    return "".join(rows)


#: Run states and run types the grid filters on (a run started by a broker or webhook event is "event").
RUN_STATES = ("queued", "running", "success", "failed")
RUN_TYPES = ("scheduled", "manual", "backfill", "asset_triggered", "event")
#: How many of the latest runs the grid offers to show (any number from 1 to the last is accepted).
GRID_RUN_CHOICES = (25, 50, 100, 365)
#: The grid's compact form writes each task's state in a run as one letter: the state's position
#: here ("a" none, "b" scheduled, ...), "." where the run has no such task instance.
GRID_STATE_CODES = tuple(state.value for state in TaskState)
_CODE_OF: defaultdict[str | None, str] = defaultdict(
    lambda: "a", {None: ".", **{state: chr(ord("a") + i) for i, state in enumerate(GRID_STATE_CODES)}}
)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round(max(0.0, (end - start).total_seconds()), 3)


def _grid_run(r: Any) -> dict[str, Any]:
    """One column head: the run's type, dates and the two parts of its duration bar (queued:
    ``queued_at`` to ``start_date``; running: ``start_date`` to ``end_date``, None while it runs)."""
    return {
        "run_id": r.run_id,
        "state": r.state,
        "run_type": r.run_type,
        "logical_date": iso(r.logical_date),
        "queued_at": iso(r.queued_at),
        "start_date": iso(r.start_date),
        "end_date": iso(r.end_date),
        "queued_duration": _seconds(r.queued_at, r.start_date),
        "duration": _seconds(r.start_date, r.end_date),
    }


def latest_runs(dag_id: str, limit: int) -> Select[Any]:
    """The latest ``limit`` runs of a DAG, newest first (the ``(dag_id, logical_date)`` index),
    with what the grid and the charts draw of each; callers may add filters."""
    return (
        select(
            _run.id,
            _run.run_id,
            _run.state,
            _run.run_type,
            naive_utc(_run.logical_date),
            naive_utc(_run.queued_at),
            naive_utc(_run.start_date),
            naive_utc(_run.end_date),
        )
        .where(_run.dag_id == dag_id)
        .order_by(_run.logical_date.desc(), _run.id.desc())
        .limit(limit)
    )


def _driver_rows(conn: Connection, query: Select[Any]) -> list[tuple[Any, ...]]:
    """All rows of ``query`` as the database driver returns them (plain tuples, no type
    processing: only for columns whose types process nothing on the way out)."""
    result = conn.execute(query)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def grid(
    s: Session,
    dag: Dag,
    limit: int = 25,
    *,
    run_type: str | None = None,
    state: str | None = None,
    compact: bool = False,
) -> dict[str, Any]:
    """The latest ``limit`` runs (of ``run_type``, in ``state`` when given) as columns, oldest
    first, tasks as rows (topological), each cell a state. Plain Core on the session's
    connection: the ORM's row handling would cost more than the rest for the thousands of cells
    of a large grid.

    ``compact`` (what the grid page uses) replaces ``states`` and ``group_states`` with ``cells``:
    run id -> one letter per task, in ``tasks`` order (``GRID_STATE_CODES``, sent along as
    ``state_codes``). For 100 runs x 500 tasks that is 50 KB instead of 1.1 MB of JSON to build,
    send and parse."""
    conn = s.connection()
    query = latest_runs(dag.dag_id, limit)
    if run_type:
        query = query.where(_run.run_type == run_type)
    if state:
        query = query.where(_run.state == state)
    runs = list(reversed(conn.execute(query).all()))
    #: run pk -> task id -> state (a mapped task's: its instances' summary, set below)
    by_run: dict[int, dict[str, str]] = {r.id: {} for r in runs}
    #: run pk -> mapped task id -> (map index, state) of each instance
    numbered: dict[int, dict[str, list[tuple[int, str]]]] = {r.id: {} for r in runs}
    seen: set[str] = set()
    if by_run:
        ti = TaskInstance.__table__.c
        # Unordered: only the few mapped instances need an order, sorted below, not the whole
        # grid's rows in the database. The driver's own tuples: SQLAlchemy's Row objects would
        # cost more than the query for the ~50,000 rows of a large grid.
        rows = _driver_rows(
            conn, select(ti.run_pk, ti.task_id, ti.map_index, ti.state).where(ti.run_pk.in_(list(by_run)))
        )
        seen = {row[1] for row in rows}
        for run_pk, task_id, map_index, ti_state in rows:
            if map_index < 0:
                by_run[run_pk][task_id] = ti_state
            else:
                numbered[run_pk].setdefault(task_id, []).append((map_index, ti_state))
    states = {r.run_id: by_run[r.id] for r in runs}
    #: run id -> mapped task id -> each instance's state, in map-index order
    mapped: dict[str, dict[str, list[str]]] = {r.run_id: {} for r in runs}
    for r in runs:
        for task_id, instances in numbered[r.id].items():
            mapped[r.run_id][task_id] = [state for _, state in sorted(instances)]
            states[r.run_id][task_id] = summary_state(mapped[r.run_id][task_id])
    serialized = dag.serialized or {}
    order = task_order(serialized, seen)
    group_list = task_groups.groups(serialized)
    out: dict[str, Any] = {
        "dag_id": dag.dag_id,
        "timezone": "UTC",
        "filters": {"limit": limit, "run_type": run_type, "state": state},
        "tasks": order,
        "rows": task_groups.rows(serialized, order),
        "groups": group_list,
        "mapped_tasks": [t["task_id"] for t in serialized.get("tasks") or [] if t.get("expand")],
        "mapped": mapped,
        "runs": [_grid_run(r) for r in runs],
    }
    if compact:
        out["state_codes"] = list(GRID_STATE_CODES)
        out["cells"] = {
            run_id: "".join(map(_CODE_OF.__getitem__, map(by_task.get, order)))
            for run_id, by_task in states.items()
        }
    else:
        out["group_states"] = task_groups.group_states(group_list, states)
        out["states"] = states
    return out


def graph(dag: Dag, serialized: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tasks (with their innermost group), edges, and the groups the graph draws as boxes: of the
    DAG's current form, or of ``serialized`` (one of its versions)."""
    serialized = serialized if serialized is not None else (dag.serialized or {})
    tasks = serialized.get("tasks") or []
    return {
        "dag_id": dag.dag_id,
        "nodes": [
            {
                "id": t["task_id"],
                "type": t.get("task_type"),
                "group": t.get("task_group"),
                "mapped": bool(t.get("expand")),
            }
            for t in tasks
        ],
        "edges": [[up, t["task_id"]] for t in tasks for up in t.get("upstream") or []],
        "groups": task_groups.groups(serialized),
    }


def stored_source(session: Session, fileloc: str) -> tuple[str | None, str | None]:
    """The DAG file's text as the DAG processor last stored it, or None and the reason it is not
    there. Never opens a file: a DAG can claim any ``fileloc``, and the web needs no DAG files."""
    code = session.get(DagCode, DagCode.key(fileloc))
    if code is None:
        return None, f"the source of {fileloc} has not been stored yet (it is stored when the file is parsed)"
    return code.source, None


def pretty_json(value_json: str | None) -> str | None:
    if value_json is None:
        return None
    try:
        return json.dumps(json.loads(value_json), indent=2, ensure_ascii=False)
    except ValueError:
        return value_json


# -- workers, health, backfills ---------------------------------------------------------------------


def known_queues(s: Session, default_queue: str) -> list[str]:
    """Queues worth showing: the default, those workers consume and those tasks name."""
    names = {default_queue}
    for queues in s.scalars(select(Worker.queues).where(Worker.state != "stopped")):
        names.update(queues or [])
    for serialized in s.scalars(select(Dag.serialized).where(Dag.is_active.is_(True))):
        names.update(t.get("queue") or default_queue for t in (serialized or {}).get("tasks") or [])
    return sorted(names)


def queue_task_counts(s: Session) -> dict[str, dict[str, int]]:
    """Queued and running task instances per queue, from the metastore."""
    out: dict[str, dict[str, int]] = {}
    rows = s.execute(
        select(TaskInstance.queue, TaskInstance.state, func.count())
        .where(TaskInstance.state.in_(TASK_DISPATCHED))
        .group_by(TaskInstance.queue, TaskInstance.state)
    )
    for queue, state, count in rows:
        out.setdefault(queue, {})[state] = int(count)
    return out


def scheduler_status(s: Session, now: datetime | None = None) -> dict[str, Any]:
    now = now or now_utc()
    last = s.scalar(select(func.max(SchedulerHeartbeat.last_heartbeat)))
    age = None if last is None else round((now - last).total_seconds(), 1)
    return {
        "ok": age is not None and age < SCHEDULER_STALE_AFTER,
        "last_heartbeat": iso(last),
        "heartbeat_age": age,
    }


def scheduler_alert(status: dict[str, Any]) -> str | None:
    """What to tell a user when the scheduler is not running (None when it is)."""
    from hareflow.web.filters import fmt_duration

    if status["ok"]:
        return None
    if status["heartbeat_age"] is None:
        return (
            "No scheduler has run against this metastore yet: nothing is scheduled until "
            "`hareflow scheduler` (or `hareflow standalone`) runs."
        )
    return (
        f"The scheduler was last heard from {fmt_duration(status['heartbeat_age'])} ago: runs and "
        "tasks are not being scheduled. Check `hareflow health scheduler` and the scheduler's log."
    )


def backfill_dict(b: Backfill, progress: Any | None = None) -> dict[str, Any]:
    out = {
        "id": b.id,
        "dag_id": b.dag_id,
        "from_date": iso(b.from_date),
        "to_date": iso(b.to_date),
        "max_active_runs": b.max_active_runs,
        "rerun_failed": b.rerun_failed,
        "state": b.state,
        "created_by": b.created_by,
        "created_at": iso(b.created_at),
        "completed_at": iso(b.completed_at),
    }
    if progress is not None:
        out["progress"] = {
            "total": progress.total,
            "queued": progress.queued,
            "running": progress.running,
            "success": progress.success,
            "failed": progress.failed,
            "tasks_running": progress.tasks_running,
            "tasks_failed": progress.tasks_failed,
        }
    return out


def list_backfills(
    s: Session, *, dag_id: str | None = None, state: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    from hareflow.common.backfill import backfill_progress

    query = select(Backfill).order_by(Backfill.id.desc()).limit(limit)
    if dag_id:
        query = query.where(Backfill.dag_id == dag_id)
    if state:
        query = query.where(Backfill.state == state)
    return [backfill_dict(b, backfill_progress(s, b.id)) for b in s.scalars(query)]
