"""``conn`` and ``var`` in templates and the task context, Airflow's spelling:
``{{ conn.warehouse.host }}``, ``{{ var.value.threshold }}``, ``{{ var.json.cfg.key }}``,
``{{ var.value.get("x", "fallback") }}``. Each lookup goes through the process's resolver, so it
is cached for the try and its secrets are masked like any other."""

from __future__ import annotations

from typing import Any

from hareflow.common.secrets.connection import Connection, Variable

_MISSING: Any = object()


class ConnectionAccessor:
    def __getattr__(self, conn_id: str) -> Connection:
        if conn_id.startswith("__"):
            raise AttributeError(conn_id)
        return Connection.get(conn_id)

    def __getitem__(self, conn_id: str) -> Connection:
        return Connection.get(conn_id)

    def get(self, conn_id: str, default: Any = None) -> Any:
        from hareflow.common.secrets.errors import ConnectionNotFound

        try:
            return Connection.get(conn_id)
        except ConnectionNotFound:
            return default

    def __repr__(self) -> str:
        return "<connections>"


class _Variables:
    def __init__(self, as_json: bool) -> None:
        self._json = as_json

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return Variable.get(key, deserialize_json=self._json)

    def __getitem__(self, key: str) -> Any:
        return Variable.get(key, deserialize_json=self._json)

    def get(self, key: str, default: Any = None) -> Any:
        return Variable.get(key, default, deserialize_json=self._json)

    def __repr__(self) -> str:
        return "<variables>"


class VariableAccessor:
    value = _Variables(as_json=False)
    json = _Variables(as_json=True)

    def __repr__(self) -> str:
        return "<variables>"


CONN = ConnectionAccessor()
VAR = VariableAccessor()
