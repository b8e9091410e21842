"""Where :meth:`Connection.get` and :meth:`Variable.get` look, depending on where the code runs.

- In a task process on a worker: :class:`RemoteResolver`. The worker's own environment first
  (``HAREFLOW_CONN_<ID>``, ``HAREFLOW_VAR_<KEY>``: a per-host override), then a lookup request
  that the worker relays to the control plane (``hareflow.worker.lookups``), which holds the
  metastore and the secrets backends. Workers hold no database credentials.
- Everywhere else (``hareflow dags test``, ``tasks test``, DAG callbacks in the scheduler, a plain
  script): :class:`ChainResolver`, the lookup chain read in this process.

Either way, answers are cached for the life of the resolver (one task process runs one try, so
"per task"), and every secret value that comes back is added to the process's masker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from hareflow.common.secrets.backends import EnvironmentBackend, SecretsChain
from hareflow.common.secrets.connection import Connection
from hareflow.common.secrets.errors import AccessDenied, ConnectionNotFound, LookupUnavailable, SecretsError
from hareflow.common.secrets.masking import Masker, connection_secrets, masker, variable_secrets


class Resolver(Protocol):
    def connection(self, conn_id: str) -> Connection: ...

    def variable(self, key: str) -> str | None: ...

    def task_state(self, query: dict[str, Any]) -> dict[str, Any] | None: ...


class _Cached:
    def __init__(self, mask: Masker) -> None:
        self._conns: dict[str, Connection] = {}
        self._vars: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._mask = mask

    def connection(self, conn_id: str) -> Connection:
        with self._lock:
            cached = self._conns.get(conn_id)
        if cached is not None:
            return cached
        conn = self._fetch_connection(conn_id)
        self._mask.add(connection_secrets(conn))
        with self._lock:
            self._conns[conn_id] = conn
        return conn

    def variable(self, key: str) -> str | None:
        with self._lock:
            if key in self._vars:
                return self._vars[key]
        text = self._fetch_variable(key)
        self._mask.add(variable_secrets(key, text))
        with self._lock:
            self._vars[key] = text
        return text

    def _fetch_connection(self, conn_id: str) -> Connection:
        raise NotImplementedError

    def _fetch_variable(self, key: str) -> str | None:
        raise NotImplementedError

    def task_state(self, query: dict[str, Any]) -> dict[str, Any] | None:
        """Another DAG's run (and task) state (``hareflow.common.runs.external_state``); never
        cached: a sensor asks again at every poke."""
        raise NotImplementedError


class ChainResolver(_Cached):
    """Reads the chain in this process, as ``dag_id`` (its allow-lists apply) when given."""

    def __init__(
        self, chain: SecretsChain, dag_id: str | None = None, mask: Masker = masker, sessions: Any = None
    ) -> None:
        super().__init__(mask)
        self._chain = chain
        self._dag_id = dag_id
        self._sessions = sessions

    def task_state(self, query: dict[str, Any]) -> dict[str, Any] | None:
        from hareflow.common.runs import external_state

        if self._sessions is None:
            raise SecretsError("no metastore to read another DAG's state from")
        with self._sessions() as session:
            if isinstance(session, _NoRows):
                return None
            return external_state(session, query)

    def _fetch_connection(self, conn_id: str) -> Connection:
        return self._chain.connection(conn_id, dag_id=self._dag_id)

    def _fetch_variable(self, key: str) -> str | None:
        return self._chain.variable(key)


#: ``ask(kind, name) -> reply dict`` (the ``lookup_reply`` message's fields); raises
#: LookupUnavailable when no answer comes in time.
Ask = Callable[[str, str], dict[str, Any]]


class RemoteResolver(_Cached):
    """The task process's resolver: its environment, then the control plane through ``ask``."""

    def __init__(self, ask: Ask, env: EnvironmentBackend | None = None, mask: Masker = masker) -> None:
        super().__init__(mask)
        self._ask = ask
        self._env = env or EnvironmentBackend()

    def _reply(self, kind: str, name: str) -> Any:
        reply = self._ask(kind, name)
        if reply.get("ok"):
            return reply.get("value")
        error = str(reply.get("error") or f"the {kind} lookup of {name!r} failed")
        code = reply.get("code")
        if code == "denied":
            raise AccessDenied(error)
        if code == "not_found":
            raise ConnectionNotFound(error)
        if code == "unavailable":
            raise LookupUnavailable(error)
        raise SecretsError(error)

    def _fetch_connection(self, conn_id: str) -> Connection:
        local = self._env.get_connection(conn_id)
        if local is not None:
            return local
        value = self._reply("connection", conn_id)
        if not isinstance(value, dict):
            raise SecretsError(f"connection {conn_id!r}: the control plane sent no connection")
        return Connection.from_dict(conn_id, value)

    def _fetch_variable(self, key: str) -> str | None:
        local = self._env.get_variable(key)
        if local is not None:
            return local
        value = self._reply("variable", key)
        return None if value is None else str(value)

    def task_state(self, query: dict[str, Any]) -> dict[str, Any] | None:
        import json

        value = self._reply("task_state", json.dumps(query, sort_keys=True))
        return value if isinstance(value, dict) else None


_current: Resolver | None = None
_default_lock = threading.Lock()


def set_resolver(resolver: Resolver | None) -> Resolver | None:
    """Install ``resolver`` for this process; return the previous one."""
    global _current
    previous, _current = _current, resolver
    return previous


def current_resolver() -> Resolver:
    """The installed resolver, else (first use outside a task) the chain read from the settings
    and the configured metastore."""
    global _current
    if _current is not None:
        return _current
    with _default_lock:
        if _current is None:
            _current = local_resolver()
        return _current


def local_resolver(settings: Any = None, dag_id: str | None = None) -> ChainResolver:
    """The chain this process can read: environment, backends, then the configured metastore
    (opened on first use; a SQLite file that does not exist holds nothing)."""
    from hareflow.common.config import load_settings
    from hareflow.common.secrets.backends import chain_from_settings

    settings = settings or load_settings()
    sessions = _LazySessions(settings)
    return ChainResolver(chain_from_settings(settings, sessions), dag_id=dag_id, sessions=sessions)


class _LazySessions:
    """A session factory that connects on first use, and a missing SQLite file reads as empty."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings
        self._factory: Any = None

    def __call__(self) -> Any:
        import contextlib
        from pathlib import Path

        from hareflow.common.db import create_engine_for, make_session_factory

        url = self._settings.effective_database_url
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
            return contextlib.nullcontext(_NoRows())
        if self._factory is None:
            self._factory = make_session_factory(create_engine_for(url))
        return self._factory()


class _NoRows:
    def get(self, *_: Any, **__: Any) -> None:
        return None
