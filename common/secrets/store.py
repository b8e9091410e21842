"""Connections and Variables in the metastore, encrypted at rest.

Sessions are passed in; the caller owns the transaction. Only the password and ``extra`` of a
connection and a variable's value are encrypted (with :class:`~hareflow.common.secrets.crypto.Cipher`):
ids, types, hosts and logins are what lists and allow-lists are built from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hareflow.common.db.models import ConnectionRow, VariableRow
from hareflow.common.secrets.connection import Connection, check_id
from hareflow.common.secrets.crypto import Cipher
from hareflow.common.secrets.errors import SecretsError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session


def _now() -> datetime:
    return datetime.now(UTC)


def put_connection(session: Session, conn: Connection, cipher: Cipher) -> bool:
    """Insert or replace ``conn``; True if it is new."""
    row = session.get(ConnectionRow, conn.conn_id, with_for_update=True)
    created = row is None
    if row is None:
        row = ConnectionRow(conn_id=conn.conn_id)
        session.add(row)
    row.conn_type = conn.conn_type
    row.description = conn.description
    row.host = conn.host
    row.port = conn.port
    row.login = conn.login
    row.password = cipher.encrypt(conn.password) if conn.password else None
    row.schema = conn.schema
    row.extra = cipher.encrypt(json.dumps(conn.extra)) if conn.extra else None
    row.allowed_dag_ids = list(conn.allowed_dag_ids) if conn.allowed_dag_ids is not None else None
    row.updated_at = _now()
    session.flush()
    return created


def decode_connection(row: ConnectionRow, cipher: Cipher) -> Connection:
    what = f"connection {row.conn_id!r}"
    password = cipher.decrypt(row.password, f"{what} password") if row.password else None
    extra: dict[str, Any] = {}
    if row.extra:
        try:
            extra = json.loads(cipher.decrypt(row.extra, f"{what} extra"))
        except ValueError:
            raise SecretsError(f"{what}: its stored extra is not JSON") from None
    return Connection(
        row.conn_id,
        row.conn_type,
        host=row.host,
        port=row.port,
        login=row.login,
        password=password,
        schema=row.schema,
        extra=extra,
        description=row.description,
        allowed_dag_ids=tuple(row.allowed_dag_ids) if row.allowed_dag_ids is not None else None,
    )


def get_connection(session: Session, conn_id: str, cipher: Cipher) -> Connection | None:
    row = session.get(ConnectionRow, conn_id)
    return None if row is None else decode_connection(row, cipher)


@dataclass(frozen=True)
class ConnectionSummary:
    """A connection as lists show it: nothing decrypted, only whether a password is set."""

    conn_id: str
    conn_type: str
    description: str | None
    host: str | None
    port: int | None
    login: str | None
    schema: str | None
    password_set: bool
    extra_set: bool
    allowed_dag_ids: list[str] | None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["updated_at"] = self.updated_at.isoformat()
        return out


def list_connections(session: Session) -> list[ConnectionSummary]:
    rows = session.scalars(select(ConnectionRow).order_by(ConnectionRow.conn_id))
    return [
        ConnectionSummary(
            r.conn_id,
            r.conn_type,
            r.description,
            r.host,
            r.port,
            r.login,
            r.schema,
            bool(r.password),
            bool(r.extra),
            r.allowed_dag_ids,
            r.updated_at,
        )
        for r in rows
    ]


def delete_connection(session: Session, conn_id: str) -> bool:
    return bool(session.execute(delete(ConnectionRow).where(ConnectionRow.conn_id == conn_id)).rowcount)


# -- variables -------------------------------------------------------------------------------


def variable_text(value: Any) -> str:
    """A variable's stored text: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def put_variable(
    session: Session, key: str, value: Any, cipher: Cipher, description: str | None = None
) -> bool:
    check_id(key, "variable key")
    row = session.get(VariableRow, key, with_for_update=True)
    created = row is None
    if row is None:
        row = VariableRow(key=key)
        session.add(row)
    row.val = cipher.encrypt(variable_text(value))
    if description is not None or created:
        row.description = description
    row.updated_at = _now()
    session.flush()
    return created


def get_variable(session: Session, key: str, cipher: Cipher) -> str | None:
    row = session.get(VariableRow, key)
    return None if row is None else cipher.decrypt(row.val, f"variable {key!r}")


@dataclass(frozen=True)
class VariableEntry:
    key: str
    value: str
    description: str | None
    updated_at: datetime


def list_variables(session: Session, cipher: Cipher) -> list[VariableEntry]:
    rows = session.scalars(select(VariableRow).order_by(VariableRow.key))
    return [
        VariableEntry(r.key, cipher.decrypt(r.val, f"variable {r.key!r}"), r.description, r.updated_at)
        for r in rows
    ]


def delete_variable(session: Session, key: str) -> bool:
    return bool(session.execute(delete(VariableRow).where(VariableRow.key == key)).rowcount)


def rotate_keys(session: Session, cipher: Cipher) -> tuple[int, int]:
    """Re-encrypt every stored secret with the first key; return (connections, variables)."""
    conns = 0
    for row in session.scalars(select(ConnectionRow).with_for_update()):
        what = f"connection {row.conn_id!r}"
        if row.password:
            row.password = cipher.rotate(row.password, f"{what} password")
        if row.extra:
            row.extra = cipher.rotate(row.extra, f"{what} extra")
        conns += 1
    variables = 0
    for var in session.scalars(select(VariableRow).with_for_update()):
        var.val = cipher.rotate(var.val, f"variable {var.key!r}")
        variables += 1
    session.flush()
    return conns, variables
