"""Earlier tries of a task instance: copied to ``task_try`` before the next try replaces them.

The ``task_instance`` row describes its latest try only. Two writes start a new try over an
ended one: the scheduler queueing a retry (or a cleared instance) with ``try_number + 1``, and a
clear, which blanks the ended try's end, duration and error first. Both call ``keep_tries`` in
their transaction, before their update; the copy is insert-if-absent on (ti_id, try_number), so
the clear's copy (the try as it ended) is the one kept when the scheduler later queues the next
try. A first try (``try_number`` 0) has nothing to keep, so a task that never retries costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from hareflow.common.db import TaskInstance, TaskTry
from sqlalchemy import Select, literal, select, tuple_
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session

COLUMNS = ("state", "queued_at", "start_date", "end_date", "duration", "worker", "hostname", "pid", "error")


def keep_tries(session: Session, keys: Sequence[tuple[int, int]], *, ended_as: str | None = None) -> None:
    """Copy the tries ``(ti_id, try_number)`` that the task instances are at now into ``task_try``
    (those still at that try; try 0, not started, is skipped). ``ended_as``: the state to record
    when the row no longer says how the try ended (a retry is ``scheduled`` by the time the
    scheduler queues its next try, but its try ended ``up_for_retry``)."""
    keys = [(ti_id, number) for ti_id, number in keys if number >= 1]
    if not keys:
        return
    columns = [
        literal(ended_as, type_=TaskInstance.state.type).label("state")
        if c == "state" and ended_as
        else getattr(TaskInstance, c)
        for c in COLUMNS
    ]
    source = select(TaskInstance.id, TaskInstance.try_number, *columns).where(
        tuple_(TaskInstance.id, TaskInstance.try_number).in_(keys)
    )
    session.execute(_insert_ignoring_existing(session, source))


def _insert_ignoring_existing(session: Session, source: Select[tuple[object, ...]]) -> object:
    table = TaskTry.__table__
    names = ["ti_id", "try_number", *COLUMNS]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).from_select(names, source).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).from_select(names, source).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        statement = mysql.insert(table).from_select(names, source)
        return statement.on_duplicate_key_update({"ti_id": table.c.ti_id})
    raise NotImplementedError(f"keep_tries does not support {dialect!r}")  # pragma: no cover


def tries_of(session: Session, ti_id: int) -> dict[int, TaskTry]:
    return {t.try_number: t for t in session.scalars(select(TaskTry).where(TaskTry.ti_id == ti_id))}
