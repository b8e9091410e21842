"""Inserts that tolerate a concurrent writer: several schedulers may store the same row at once.

``insert_if_absent`` is the dialect's own "insert unless the key exists" (``ON CONFLICT DO NOTHING``
on PostgreSQL and SQLite, ``ON DUPLICATE KEY UPDATE key = key`` on MySQL/MariaDB, which unlike
``INSERT IGNORE`` still raises on every other error). A writer that loses the race waits for the
winner's transaction and then does nothing; it reads the winner's row afterwards with a locking read
(``lock_row``), which sees the latest committed version on every database, whatever the isolation
level.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session

T = TypeVar("T")


def insert_if_absent(session: Session, table: Table, values: dict[str, Any]) -> None:
    """Insert one row unless a row with the same primary or unique key exists (or is being
    inserted by another transaction: then wait for it, and insert nothing)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())
    elif dialect in ("mysql", "mariadb"):
        # ``key = key``: the existing row keeps its own value, whichever unique key was hit (a
        # table with an auto-increment key and another unique key is left untouched too).
        key = table.primary_key.columns.values()[0]
        statement = mysql.insert(table).values(**values)
        session.execute(statement.on_duplicate_key_update({key.name: key}))
    else:  # pragma: no cover - the three supported databases are above
        raise NotImplementedError(f"insert_if_absent does not support {dialect!r}")


def lock_row(session: Session, model: type[T], key: Any) -> T | None:
    """The row with primary key ``key``, locked for this transaction and freshly read (never a
    stale copy from the session's identity map)."""
    return session.get(model, key, with_for_update=True, populate_existing=True)


def locked_row(session: Session, model: type[T], key: Any, values: dict[str, Any]) -> T:
    """The row with primary key ``key``, locked for this transaction; inserted from ``values``
    first if it does not exist. A row deleted by another transaction between the insert (which
    found it) and the lock is inserted again."""
    table = model.__table__  # type: ignore[attr-defined]
    for _ in range(3):
        row = lock_row(session, model, key)
        if row is not None:
            return row
        insert_if_absent(session, table, values)
    raise RuntimeError(f"{table.name} row {key!r} kept disappearing while it was being stored")
