"""Engines and sessions for the three supported databases.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` transactions: the scheduler, the results consumer
and the DAG processor write from different threads, and a deferred transaction that later tries to
write can fail at once with "database is locked"; taking the write lock up front lets the busy
timeout do its job instead.
"""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker


def create_engine_for(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings each backend needs."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=10, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    if backend in ("mysql", "mariadb"):
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_recycle=1800,
            isolation_level="READ COMMITTED",
            **kwargs,
        )
    if parsed.get_driver_name() == "psycopg2":
        # The results consumer updates a batch of task instances with one executemany; psycopg2's
        # own executemany is one round trip per row, execute_batch sends them in pages of 100.
        kwargs.setdefault("executemany_mode", "values_plus_batch")
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def create_read_engine(engine: Engine, *, pool_size: int = 10, max_overflow: int = 10) -> Engine:
    """A second engine on ``engine``'s PostgreSQL database for short reads: always in autocommit,
    and checking a pooled connection without a round trip.

    Under READ COMMITTED (PostgreSQL's default) every statement sees what was committed when it
    started, inside a transaction or not, so a read loses nothing without one and saves
    psycopg2's ``BEGIN`` and the ``ROLLBACK`` that ends it. A pool of its own keeps its
    connections in autocommit: on ``engine``'s pool each checkout would switch a connection to
    autocommit and each checkin back, and roll it back, which costs about a third of a small
    request's own time. Instead of ``pool_pre_ping``'s ``SELECT 1`` (a round trip per checkout),
    a connection is replaced when its socket is readable while idle: the server has closed it (a
    restart, ``pg_terminate_backend``, an idle timeout) or sent something unasked, either way not
    a connection to reuse. A server that vanished without closing is not noticed here, nor by a
    ping (it would wait for TCP's timeout too)."""
    read = create_engine(
        engine.url,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,  # nothing to reset: a connection in autocommit has no transaction
        pool_size=pool_size,
        max_overflow=max_overflow,
    )

    @event.listens_for(read, "checkout")
    def _closed_by_the_server(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        readable, _, _ = select.select([dbapi_conn.fileno()], [], [], 0)
        if readable:  # the pool discards it and checks out another (or connects)
            raise exc.DisconnectionError("the server closed the connection")

    return read


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
