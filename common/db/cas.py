"""Compare-and-set writes of task-instance and run states, on PostgreSQL, MariaDB and SQLite.

Every write of ``task_instance.state`` goes through :func:`set_task_states` (one set of values for
many rows) or :func:`set_each_task_state` (values per row): ``UPDATE ... WHERE id = ? AND
try_number = ? AND state IN (the transition's allowed previous states)``, the table of which is
``hareflow.common.states.TASK_TRANSITIONS``. Each returns the ids the write changed, so a caller
emits state events, stores results and dispatches only for writes that took effect. A write that
loses (another results consumer, scheduler or operator moved the row on since the caller read it)
is a no-op, logged at debug and counted in ``hareflow_state_writes_lost_total``.

Which rows changed, batched on every database: where ``UPDATE ... RETURNING`` exists (PostgreSQL,
SQLite) one statement says it. MariaDB has no RETURNING on UPDATE, so there the rows that qualify
are first selected ``FOR UPDATE`` (read committed: the latest committed version, then locked until
commit) and the UPDATE, still with its compare-and-set, is sent for those. Per-row values use the
same lock-then-write on every database (an executemany cannot return rows): on SQLite the
transaction already holds the write lock (``BEGIN IMMEDIATE``), so no ``FOR UPDATE`` is needed.
Row locks are taken in id order, so two writers of overlapping batches wait rather than deadlock.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hareflow.common import metrics
from hareflow.common.db.models import DagRun, TaskInstance
from hareflow.common.states import (
    RUN_TRANSITIONS,
    TASK_FINISHED,
    TASK_TRANSITIONS,
    RunTransition,
    TaskTransition,
)
from sqlalchemy import and_, bindparam, exists, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

log = logging.getLogger(__name__)

_TI = TaskInstance.__table__
_RUN = DagRun.__table__
_CHUNK = 500


def _lost(transition: str, ids: Iterable[int]) -> None:
    lost = sorted(ids)
    if lost:
        log.debug("%s: %d write(s) lost the race and changed nothing (ids %s)", transition, len(lost), lost)
        metrics.STATE_WRITES_LOST.labels(transition).inc(len(lost))


def _check_target(transition: TaskTransition, values: Mapping[str, Any]) -> frozenset[str]:
    rule = TASK_TRANSITIONS[transition]
    state = values.get("state")
    if state not in rule.targets:
        raise ValueError(f"transition {transition} writes {sorted(rule.targets)}, not {state!r}")
    return rule.sources


def set_task_states(
    session: Session,
    transition: TaskTransition,
    keys: Iterable[tuple[int, int]],
    values: Mapping[str, Any],
) -> set[int]:
    """Write ``values`` (which name the new ``state``) to the task instances ``keys`` = (id, the
    try number the caller read) that are still in one of ``transition``'s allowed previous states
    with that try; return the ids changed."""
    sources = _check_target(transition, values)
    by_try: dict[int, list[int]] = defaultdict(list)
    for ti_id, try_number in keys:
        by_try[try_number].append(ti_id)
    returning = session.get_bind().dialect.update_returning
    changed: set[int] = set()
    wanted: set[int] = set()
    for try_number, ids in by_try.items():
        ids.sort()
        wanted.update(ids)
        for start in range(0, len(ids), _CHUNK):
            where = and_(
                _TI.c.id.in_(ids[start : start + _CHUNK]),
                _TI.c.try_number == try_number,
                _TI.c.state.in_(sorted(sources)),
            )
            if returning:
                stmt = update(_TI).where(where).values(**values).returning(_TI.c.id)
                changed.update(session.execute(stmt).scalars())
                continue
            locked = list(
                session.execute(select(_TI.c.id).where(where).order_by(_TI.c.id).with_for_update()).scalars()
            )
            if locked:
                session.execute(update(_TI).where(where, _TI.c.id.in_(locked)).values(**values))
                changed.update(locked)
    _lost(transition, wanted - changed)
    return changed


def set_each_task_state(
    session: Session,
    transition: TaskTransition,
    rows: Sequence[tuple[int, int, Mapping[str, Any]]],
    *,
    reschedules: Mapping[int, int] | None = None,
) -> set[int]:
    """Like :func:`set_task_states` with values per row: ``rows`` = (id, try number read, values).
    Rows with the same columns go in one executemany; return the ids changed.

    ``reschedules`` (id -> the ``reschedules`` number read): compare and set on it too, so a
    report from an earlier delivery of a rescheduled sensor's try changes nothing."""
    if not rows:
        return set()
    sources = sorted(_check_target(transition, rows[0][2]))
    for _, _, values in rows:
        _check_target(transition, values)
    expected = {ti_id: try_number for ti_id, try_number, _ in rows}
    ids = sorted(expected)
    qualifying: set[int] = set()
    sqlite = session.get_bind().dialect.name == "sqlite"
    for start in range(0, len(ids), _CHUNK):
        query = (
            select(_TI.c.id, _TI.c.try_number, _TI.c.reschedules)
            .where(_TI.c.id.in_(ids[start : start + _CHUNK]), _TI.c.state.in_(sources))
            .order_by(_TI.c.id)
        )
        if not sqlite:  # SQLite: BEGIN IMMEDIATE already holds the database's write lock
            query = query.with_for_update()
        qualifying.update(
            i
            for i, t, r in session.execute(query).tuples()
            if expected[i] == t and (reschedules is None or reschedules.get(i, 0) == (r or 0))
        )
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for ti_id, try_number, values in rows:
        if ti_id in qualifying:
            params = {f"v_{k}": v for k, v in values.items()}
            if reschedules is not None:
                params["b_resch"] = reschedules.get(ti_id, 0)
            groups[tuple(sorted(values))].append({"b_id": ti_id, "b_try": try_number, **params})
    for columns, params in groups.items():
        where = [
            _TI.c.id == bindparam("b_id"),
            _TI.c.try_number == bindparam("b_try"),
            # one bound value each: an expanding IN cannot be used in an executemany
            _TI.c.state.in_([literal(state, _TI.c.state.type) for state in sources]),
        ]
        if reschedules is not None:
            where.append(_TI.c.reschedules == bindparam("b_resch"))
        stmt = (
            update(_TI).where(*where).values({c: bindparam(f"v_{c}", type_=_TI.c[c].type) for c in columns})
        )
        session.execute(stmt, params)
    _lost(transition, set(ids) - qualifying)
    return qualifying


def set_run_state(session: Session, run: DagRun, transition: RunTransition, **values: Any) -> bool:
    """Compare-and-set ``run``'s state (``values`` name it) from ``transition``'s allowed previous
    states; on success the loaded ``run`` shows the new values. ``FINISH`` also requires, in the
    same statement, that no task instance of the run is unfinished: a clear committed since the
    caller read the run's task instances keeps the run going."""
    rule = RUN_TRANSITIONS[transition]
    if values.get("state") not in rule.targets:
        raise ValueError(
            f"transition {transition} writes {sorted(rule.targets)}, not {values.get('state')!r}"
        )
    where = [_RUN.c.id == run.id, _RUN.c.state.in_(sorted(rule.sources))]
    if transition is RunTransition.FINISH:
        unfinished = select(_TI.c.id).where(_TI.c.run_pk == run.id, _TI.c.state.not_in(sorted(TASK_FINISHED)))
        where.append(~exists(unfinished))
    result = session.execute(update(_RUN).where(*where).values(**values))
    if result.rowcount != 1:
        _lost(f"run_{transition}", [run.id])
        return False
    for name, value in values.items():
        set_committed_value(run, name, value)
    return True
