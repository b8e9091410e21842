"""What one web application holds besides Flask: settings, the metastore, the executor, the relay.

The executor is either handed in (``hareflow standalone`` shares its in-process one) or, when a
broker is configured, opened here on first need: the first Socket.IO connection, a queue listing,
a health check or an action that wakes the scheduler. Creating the app connects to nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import current_app, g
from hareflow.common.broker import Executor
from hareflow.common.config import Settings
from hareflow.common.messages import StateEvent
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from hareflow.web.live import EventRelay

log = logging.getLogger(__name__)

EXTENSION = "hareflow"
#: After a failed broker connection, wait this long before trying again (requests must not each
#: pay a connection timeout while the broker is down).
RECONNECT_AFTER = 10.0


class WebRuntime:
    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], executor: Executor | None = None
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self._executor = executor
        self._own_executor = False
        self._lock = threading.Lock()
        self._failed_at = 0.0
        self.last_broker_error: str | None = None
        self.relay: EventRelay | None = None
        self._read_bind: Engine | None = None
        self._own_read_bind = False

    def request_bind(self) -> Engine:
        """What a request's own session runs on: on PostgreSQL, a read engine of its own
        (:func:`hareflow.common.db.create_read_engine`: always in autocommit, no ping round trip).
        The authentication's one write, a "last used" time, then commits on its own. Elsewhere the
        engine as it is: MySQL drivers switch autocommit with a statement each way (no saving),
        and SQLite's ``BEGIN IMMEDIATE`` is what serialises its writers."""
        if self._read_bind is None:
            engine = self.sessions.kw["bind"]
            with self._lock:
                if self._read_bind is None:
                    if engine.dialect.name == "postgresql":
                        from hareflow.common.db import create_read_engine

                        self._read_bind, self._own_read_bind = create_read_engine(engine), True
                    else:
                        self._read_bind = engine
        return self._read_bind

    @property
    def has_broker(self) -> bool:
        return self.settings.effective_executor == "rabbitmq"

    def executor(self) -> Executor | None:
        """The executor to read queues from and publish events to, or None when there is none
        (a web process of its own with the local executor has no one to talk to)."""
        if self._executor is not None:
            return self._executor
        if not self.has_broker:
            return None
        with self._lock:
            if self._executor is not None:
                return self._executor
            if time.monotonic() - self._failed_at < RECONNECT_AFTER:
                return None
            from hareflow.common.broker import make_executor

            executor = make_executor(self.settings, connection_name="hareflow-web")
            try:
                executor.start(timeout=5)  # type: ignore[call-arg]
            except Exception as exc:  # noqa: BLE001 - reported by the health check and the pages
                self._failed_at = time.monotonic()
                self.last_broker_error = str(exc) or type(exc).__name__
                log.warning("cannot reach the broker: %s", self.last_broker_error)
                try:
                    executor.close()
                except Exception:  # noqa: BLE001
                    pass
                return None
            self.last_broker_error = None
            self._executor, self._own_executor = executor, True
            return executor

    def notify(self, events: Iterable[StateEvent]) -> None:
        """Tell the schedulers (so they act at once) and the other web servers about a change.
        Best effort: schedulers notice within ``scheduler_idle_wait`` anyway."""
        events = list(events)
        executor = self.executor()
        if executor is None or not events:
            return
        try:
            executor.publish_events(events)
        except Exception:  # noqa: BLE001
            log.debug("could not publish %d event(s)", len(events), exc_info=True)

    def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        if self._own_read_bind and self._read_bind is not None:
            self._read_bind.dispose()
            self._read_bind, self._own_read_bind = None, False
        with self._lock:
            if self._own_executor and self._executor is not None:
                self._executor.close()
                self._executor = None
                self._own_executor = False


def runtime() -> WebRuntime:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def open_session() -> Session:
    """A new metastore session; use it in a ``with`` block (and ``with s.begin():`` to write).

    The request's own session (:func:`request_session`) is closed first, so a request never holds
    two pooled connections at once (threads each holding one and waiting for a second could use
    up the pool), and on SQLite its ``BEGIN IMMEDIATE`` never blocks this session's writes."""
    end_request_session()
    return runtime().sessions()


def request_session() -> Session:
    """The session of the current request: authentication and the read-only views share it, so a
    read is one connection checkout (and at most one transaction, none on PostgreSQL: see
    :meth:`WebRuntime.request_bind`), closed when the request ends (:func:`end_request_session`, a
    teardown hook). Views that write use :func:`open_session`."""
    session: Session | None = g.get("db_session")
    if session is None:
        web = runtime()
        session = g.db_session = web.sessions(bind=web.request_bind())
    return session


def end_request_session(_exc: BaseException | None = None) -> None:
    """Close the request's session, if it opened one. Whatever it had to write (the
    authentication's "last used" time) it committed at once, so closing discards nothing."""
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()


def event(kind: str, dag_id: str, state: str, run_id: str | None = None, **extra: object) -> StateEvent:
    return StateEvent(kind=kind, dag_id=dag_id, run_id=run_id, state=state, at=time.time(), **extra)  # type: ignore[arg-type]
