"""Where connections and variables come from: an ordered chain of secrets backends.

Lookup order: the environment (``HAREFLOW_CONN_<ID>`` as a URI or JSON, ``HAREFLOW_VAR_<KEY>``;
the id upper-cased, ``.`` and ``-`` read as ``_``), then the backends named by ``secrets_backends``
in that order, then the metastore. The first backend that knows the id answers.

A backend is a class with ``get_connection(conn_id)`` and ``get_variable(key)`` (returning None when
it does not know it), registered under the ``hareflow.secrets`` entry-point group and built with the
keyword arguments ``secrets_backend_options`` gives for its name. Built in: ``files``, a directory
of files in the Docker / Kubernetes secrets layout (one file per secret: ``conn_<id>`` holding a URI
or JSON, ``var_<key>`` holding the value).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from hareflow.common.config import ConfigError, Settings
from hareflow.common.secrets.connection import Connection, connection_from_text
from hareflow.common.secrets.errors import AccessDenied, ConnectionNotFound, SecretsError

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "hareflow.secrets"
CONN_ENV_PREFIX = "HAREFLOW_CONN_"
VAR_ENV_PREFIX = "HAREFLOW_VAR_"


class SecretsBackend(Protocol):
    name: str

    def get_connection(self, conn_id: str) -> Connection | None: ...

    def get_variable(self, key: str) -> str | None: ...


def env_name(prefix: str, ident: str) -> str:
    return prefix + ident.upper().replace(".", "_").replace("-", "_")


class EnvironmentBackend:
    """``HAREFLOW_CONN_<ID>`` and ``HAREFLOW_VAR_<KEY>``."""

    name = "environment"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env

    def get_connection(self, conn_id: str) -> Connection | None:
        name = env_name(CONN_ENV_PREFIX, conn_id)
        text = self._env.get(name)
        if text is None:
            return None
        try:
            return connection_from_text(conn_id, text)
        except SecretsError as exc:
            raise SecretsError(f"{name}: {exc}") from None

    def get_variable(self, key: str) -> str | None:
        return self._env.get(env_name(VAR_ENV_PREFIX, key))


class FilesBackend:
    """A directory with one file per secret (``/run/secrets``, a mounted Kubernetes Secret)."""

    name = "files"

    def __init__(
        self, directory: str, connections_prefix: str = "conn_", variables_prefix: str = "var_"
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ConfigError(f"secrets backend 'files': {self.directory} is not a directory")
        self._conn_prefix = connections_prefix
        self._var_prefix = variables_prefix

    def _read(self, name: str) -> str | None:
        if "/" in name or name.startswith("."):
            return None
        try:
            return (self.directory / name).read_text().rstrip("\n")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretsError(
                f"secrets backend 'files': cannot read {self.directory / name}: {exc}"
            ) from None

    def get_connection(self, conn_id: str) -> Connection | None:
        text = self._read(self._conn_prefix + conn_id)
        if text is None:
            return None
        try:
            return connection_from_text(conn_id, text)
        except SecretsError as exc:
            raise SecretsError(f"{self.directory / (self._conn_prefix + conn_id)}: {exc}") from None

    def get_variable(self, key: str) -> str | None:
        return self._read(self._var_prefix + key)


class MetastoreBackend:
    """The ``connection`` and ``variable`` tables, decrypted with the configured Fernet keys."""

    name = "metastore"

    def __init__(
        self, sessions: Callable[[], AbstractContextManager[Any]], cipher_factory: Callable[[], Any]
    ) -> None:
        self._sessions = sessions
        self._cipher_factory = cipher_factory
        self._cipher: Any = None

    def _cipher_now(self) -> Any:
        if self._cipher is None:
            self._cipher = self._cipher_factory()
        return self._cipher

    def get_connection(self, conn_id: str) -> Connection | None:
        from hareflow.common.db.models import ConnectionRow
        from hareflow.common.secrets import store

        with self._sessions() as session:
            row = session.get(ConnectionRow, conn_id)
            return None if row is None else store.decode_connection(row, self._cipher_now())

    def get_variable(self, key: str) -> str | None:
        from hareflow.common.db.models import VariableRow

        with self._sessions() as session:
            row = session.get(VariableRow, key)
            return None if row is None else self._cipher_now().decrypt(row.val, f"variable {key!r}")


def configured_backends(settings: Settings) -> list[SecretsBackend]:
    """The backends ``secrets_backends`` names, built with their options; a clear error for an
    unknown name or bad options."""
    names = [n.strip() for n in settings.secrets_backends.split(",") if n.strip()]
    if not names:
        return []
    try:
        options = (
            json.loads(settings.secrets_backend_options) if settings.secrets_backend_options.strip() else {}
        )
    except ValueError as exc:
        raise ConfigError(f"secrets_backend_options is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ConfigError("secrets_backend_options must be a JSON object of {backend name: {options}}")
    available = {"files": FilesBackend}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        available.setdefault(ep.name, ep)  # type: ignore[arg-type]
    out: list[SecretsBackend] = []
    for name in names:
        if name not in available:
            known = ", ".join(sorted(available))
            raise ConfigError(f"secrets_backends: no backend named {name!r} (installed: {known})")
        factory: Any = available[name]
        if isinstance(factory, importlib.metadata.EntryPoint):
            try:
                factory = factory.load()
            except Exception as exc:
                raise ConfigError(
                    f"secrets backend {name!r} failed to load: {type(exc).__name__}: {exc}"
                ) from None
        kwargs = options.get(name, {})
        if not isinstance(kwargs, dict):
            raise ConfigError(f"secrets_backend_options[{name!r}] must be a JSON object")
        try:
            backend = factory(**kwargs)
        except ConfigError:
            raise
        except TypeError as exc:
            raise ConfigError(f"secrets backend {name!r}: bad options {kwargs!r}: {exc}") from None
        if not getattr(backend, "name", None):
            backend.name = name
        out.append(backend)
    return out


class SecretsChain:
    """The ordered lookup: the first backend that knows an id answers."""

    def __init__(self, backends: list[SecretsBackend]) -> None:
        self.backends = backends

    def describe(self) -> str:
        return " → ".join(b.name for b in self.backends)

    def connection(self, conn_id: str, *, dag_id: str | None = None) -> Connection:
        """The connection, checked against its allow-list when ``dag_id`` is given."""
        for backend in self.backends:
            conn = backend.get_connection(conn_id)
            if conn is not None:
                if dag_id is not None and not conn.may_be_read_by(dag_id):
                    raise AccessDenied(
                        f"DAG {dag_id!r} may not read connection {conn_id!r} (its allowed_dag_ids)"
                    )
                return conn
        raise ConnectionNotFound(
            f"connection {conn_id!r} is not defined (looked in: {self.describe()}; "
            f"in the environment as {env_name(CONN_ENV_PREFIX, conn_id)})"
        )

    def variable(self, key: str) -> str | None:
        for backend in self.backends:
            value = backend.get_variable(key)
            if value is not None:
                return value
        return None


def chain_from_settings(
    settings: Settings,
    sessions: Callable[[], AbstractContextManager[Any]] | None = None,
    env: Mapping[str, str] | None = None,
) -> SecretsChain:
    """environment → configured backends → metastore (when ``sessions`` is given)."""
    from hareflow.common.secrets.crypto import cipher_from_settings

    backends: list[SecretsBackend] = [EnvironmentBackend(env)]
    backends.extend(configured_backends(settings))
    if sessions is not None:
        backends.append(MetastoreBackend(sessions, lambda: cipher_from_settings(settings)))
    return SecretsChain(backends)
