"""Connections and Variables as the pages and the API manage them.

Shared by the forms and the JSON API, like :mod:`hareflow.web.actions`: each function opens its own
transaction, writes an ``audit_log`` row naming what changed (never a secret value) and raises
:class:`~hareflow.web.actions.ActionError` with the HTTP status and, for a bad input, the field.

What leaves the server is the browser-safe form: a connection's password never (``password_set``
says whether there is one), its sensitive ``extra`` values and the value of a variable with a
sensitive key as ``***``. Writing ``***`` back where a sensitive value was keeps the stored value,
so a client may send back what it read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hareflow.common.db.models import ConnectionRow, VariableRow
from hareflow.common.operations import audit
from hareflow.common.providers import connection_types, test_connection
from hareflow.common.secrets import store
from hareflow.common.secrets.connection import Connection, check_id
from hareflow.common.secrets.crypto import Cipher, cipher_from_settings
from hareflow.common.secrets.errors import DecryptFailed, KeyMissing, SecretsError
from hareflow.common.secrets.masking import MASK, Masker, connection_secrets, is_sensitive
from hareflow.web.actions import ActionError
from hareflow.web.runtime import open_session, runtime
from sqlalchemy.exc import IntegrityError

TEXT_FIELDS = ("conn_type", "description", "host", "login", "schema")
CONNECTION_FIELDS = ("conn_id", "uri", *TEXT_FIELDS, "port", "password", "extra", "allowed_dag_ids")
VARIABLE_FIELDS = ("key", "value", "description")


def cipher() -> Cipher:
    """The configured Fernet cipher; a missing or bad key is a 503 that says how to set one."""
    try:
        return cipher_from_settings(runtime().settings)
    except KeyMissing as exc:
        raise ActionError(503, str(exc)) from None


def _secrets_error(exc: SecretsError, field: str | None = None) -> ActionError:
    if isinstance(exc, KeyMissing):
        return ActionError(503, str(exc))
    if isinstance(exc, DecryptFailed):
        return ActionError(500, str(exc))
    return ActionError(400, str(exc), field)


# -- connections: reading ---------------------------------------------------------------------------


def type_list() -> list[dict[str, Any]]:
    """The installed connection types, for the form's dropdown and ``/connection-types``."""
    return [
        {
            "conn_type": ct.conn_type,
            "label": ct.label,
            "fields": list(ct.fields),
            "hints": dict(ct.hints),
            "testable": ct.test is not None,
        }
        for ct in connection_types().values()
    ]


def list_connections() -> list[dict[str, Any]]:
    """Every stored connection as lists show it (nothing is decrypted: no key is needed)."""
    with open_session() as s:
        return [c.to_dict() for c in store.list_connections(s)]


def _load(s: Any, conn_id: str, key: Cipher) -> Connection:
    try:
        conn = store.get_connection(s, conn_id, key)
    except SecretsError as exc:
        raise _secrets_error(exc) from None
    if conn is None:
        raise ActionError(404, f"no connection {conn_id!r}")
    return conn


def safe_connection(conn: Connection, updated_at: Any = None) -> dict[str, Any]:
    """The browser-safe form of ``conn``: no password, sensitive extra values masked."""
    out = conn.to_dict(secrets=False)
    if updated_at is not None:
        out["updated_at"] = updated_at.isoformat()
    return out


def get_connection(conn_id: str) -> dict[str, Any]:
    key = cipher()
    with open_session() as s:
        conn = _load(s, conn_id, key)
        row = s.get(ConnectionRow, conn_id)
        return safe_connection(conn, row.updated_at if row is not None else None)


# -- connections: checking input ----------------------------------------------------------------------


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _check_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with each known field checked and normalised; a wrong one is a 400 naming it."""
    unknown = sorted(set(body) - set(CONNECTION_FIELDS))
    if unknown:
        raise ActionError(400, f"unknown field(s): {', '.join(unknown)}", unknown[0])
    data = dict(body)
    for name in ("uri", *TEXT_FIELDS, "password"):
        if name in data and data[name] is not None and not isinstance(data[name], str):
            raise ActionError(400, f"{name} must be a string", name)
    for name in ("uri", "host", "login", "schema", "description", "conn_type"):
        if name in data:
            data[name] = _blank_to_none(data[name])
            if isinstance(data[name], str) and name != "description":
                data[name] = data[name].strip()
    if data.get("password") == "":
        data["password"] = None
    if "port" in data:
        data["port"] = _port(data["port"])
    if "extra" in data:
        data["extra"] = _extra(data["extra"])
    if "allowed_dag_ids" in data:
        data["allowed_dag_ids"] = _allowed(data["allowed_dag_ids"])
    return data


def _port(value: Any) -> int | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ActionError(400, f"port must be a TCP port (1-65535), not {value!r}", "port")
    return value


def _extra(value: Any) -> dict[str, Any]:
    value = _blank_to_none(value)
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ActionError(400, f"extra is not valid JSON: {exc}", "extra") from None
    if not isinstance(value, dict):
        raise ActionError(400, 'extra must be a JSON object, like {"sslmode": "require"}', "extra")
    return value


def _allowed(value: Any) -> tuple[str, ...] | None:
    value = _blank_to_none(value)
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ActionError(400, "allowed_dag_ids must be a list of DAG ids", "allowed_dag_ids")
    return tuple(value)


def _keep_masked(new: Any, old: Any) -> Any:
    """``new`` with each ``***`` that stands where ``old`` has a value replaced by that value: a
    client sends back the masked form it read without overwriting the secret."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: old[k] if v == MASK and k in old else _keep_masked(v, old.get(k)) for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [o if n == MASK else _keep_masked(n, o) for n, o in zip(new, old, strict=True)]
    return new


def _from_uri(conn_id: str, uri: str) -> Connection:
    try:
        return Connection.from_uri(conn_id, uri)
    except SecretsError as exc:
        raise ActionError(400, str(exc), "uri") from None


def _build(conn_id: str, fields: dict[str, Any]) -> Connection:
    try:
        return Connection(conn_id=conn_id, **fields)
    except SecretsError as exc:
        raise _secrets_error(exc) from None


def connection_from_body(body: dict[str, Any], existing: Connection | None = None) -> Connection:
    """The connection a POST body (``existing`` None) or a PATCH body describes.

    A body holds fields, or a ``uri`` with optional fields beside it (the fields win). In a PATCH,
    a field left out keeps its stored value; ``"password": null`` (or ``""``) clears the password,
    and a ``uri`` without a password keeps the stored one.
    """
    data = _check_fields(body)
    data.pop("conn_id", None)
    if existing is None:
        conn_id = body.get("conn_id")
        if not isinstance(conn_id, str) or not conn_id:
            raise ActionError(400, "conn_id is required", "conn_id")
        try:
            check_id(conn_id)
        except SecretsError as exc:
            raise ActionError(400, str(exc).replace("connection id", "conn_id", 1), "conn_id") from None
        base: dict[str, Any] = {}
    else:
        conn_id = existing.conn_id
        base = existing.to_dict(secrets=True)
        for name in ("conn_id", "allowed_dag_ids"):
            base.pop(name)
        base["allowed_dag_ids"] = existing.allowed_dag_ids
    uri = data.pop("uri", None)
    if uri is not None:
        parsed = _from_uri(conn_id, uri)
        for name in ("conn_type", "host", "port", "login", "schema", "extra"):
            base[name] = getattr(parsed, name)
        if parsed.password is not None or existing is None:
            base["password"] = parsed.password
    base.update(data)
    if existing is not None and "extra" in data:
        base["extra"] = _keep_masked(data["extra"], existing.extra)
    if not base.get("conn_type"):
        raise ActionError(400, "conn_type is required (or give a uri)", "conn_type")
    return _build(conn_id, base)


def _changed(old: Connection | None, new: Connection) -> dict[str, Any]:
    """What an audit row says about a write: which fields changed, and what became of the
    password, never a value that could be secret."""
    names = ("conn_type", "description", "host", "port", "login", "schema", "extra", "allowed_dag_ids")
    if old is None:
        fields = [n for n in names if getattr(new, n) not in (None, {}, "")]
        password = "set" if new.password else "none"
    else:
        fields = [n for n in names if getattr(old, n) != getattr(new, n)]
        if old.password == new.password:
            password = "unchanged"
        else:
            password = "changed" if new.password else "cleared"
    return {"conn_id": new.conn_id, "conn_type": new.conn_type, "fields": fields, "password": password}


# -- connections: writing -----------------------------------------------------------------------------


def create_connection(body: dict[str, Any], *, username: str) -> dict[str, Any]:
    conn = connection_from_body(body)
    key = cipher()
    try:
        with open_session() as s, s.begin():
            if s.get(ConnectionRow, conn.conn_id) is not None:
                raise ActionError(409, f"connection {conn.conn_id!r} exists already", "conn_id")
            store.put_connection(s, conn, key)
            audit(s, "connection_create", username=username, details=_changed(None, conn))
    except IntegrityError:  # created by someone else between the check and the insert
        raise ActionError(409, f"connection {conn.conn_id!r} exists already", "conn_id") from None
    return get_connection(conn.conn_id)


def update_connection(conn_id: str, body: dict[str, Any], *, username: str) -> dict[str, Any]:
    if "conn_id" in body and body["conn_id"] != conn_id:
        raise ActionError(400, "conn_id cannot be changed (create a new connection instead)", "conn_id")
    key = cipher()
    with open_session() as s, s.begin():
        if s.get(ConnectionRow, conn_id, with_for_update=True) is None:
            raise ActionError(404, f"no connection {conn_id!r}")
        old = _load(s, conn_id, key)
        new = connection_from_body(body, old)
        store.put_connection(s, new, key)
        audit(s, "connection_update", username=username, details=_changed(old, new))
    return get_connection(conn_id)


def delete_connection(conn_id: str, *, username: str) -> None:
    with open_session() as s, s.begin():
        if not store.delete_connection(s, conn_id):
            raise ActionError(404, f"no connection {conn_id!r}")
        audit(s, "connection_delete", username=username, details={"conn_id": conn_id})


def probe_connection(conn_id: str) -> dict[str, Any]:
    """Reach the system the stored connection points at; the message never holds its secrets."""
    key = cipher()
    with open_session() as s:
        conn = _load(s, conn_id, key)
    result = test_connection(conn)
    masker = Masker()
    masker.add(connection_secrets(conn))
    return {"ok": result.ok, "message": masker.redact(result.message), "seconds": round(result.seconds, 3)}


# -- variables ------------------------------------------------------------------------------------------


def safe_variable(key: str, value: str, description: str | None, updated_at: Any) -> dict[str, Any]:
    sensitive = is_sensitive(key)
    return {
        "key": key,
        "value": MASK if sensitive else value,
        "sensitive": sensitive,
        "description": description,
        "updated_at": updated_at.isoformat() if updated_at is not None else None,
    }


def list_variables() -> list[dict[str, Any]]:
    key = cipher()
    with open_session() as s:
        try:
            entries = store.list_variables(s, key)
        except SecretsError as exc:
            raise _secrets_error(exc) from None
    return [safe_variable(e.key, e.value, e.description, e.updated_at) for e in entries]


def get_variable(var_key: str) -> dict[str, Any]:
    key = cipher()
    with open_session() as s:
        row = s.get(VariableRow, var_key)
        if row is None:
            raise ActionError(404, f"no variable {var_key!r}")
        try:
            value = store.get_variable(s, var_key, key) or ""
        except SecretsError as exc:
            raise _secrets_error(exc) from None
        return safe_variable(var_key, value, row.description, row.updated_at)


def _check_variable(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    unknown = sorted(set(body) - set(VARIABLE_FIELDS))
    if unknown:
        raise ActionError(400, f"unknown field(s): {', '.join(unknown)}", unknown[0])
    if not partial and "value" not in body:
        raise ActionError(400, "value is required", "value")
    if "value" in body and body["value"] is None:
        raise ActionError(400, "value cannot be null (delete the variable instead)", "value")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise ActionError(400, "description must be a string", "description")
    return body


def create_variable(body: dict[str, Any], *, username: str) -> dict[str, Any]:
    var_key = body.get("key")
    if not isinstance(var_key, str) or not var_key:
        raise ActionError(400, "key is required", "key")
    try:
        check_id(var_key, "key")
    except SecretsError as exc:
        raise ActionError(400, str(exc), "key") from None
    _check_variable(body, partial=False)
    key = cipher()
    try:
        with open_session() as s, s.begin():
            if s.get(VariableRow, var_key) is not None:
                raise ActionError(409, f"variable {var_key!r} exists already", "key")
            store.put_variable(s, var_key, body["value"], key, _blank_to_none(body.get("description")))
            audit(s, "variable_create", username=username, details={"key": var_key})
    except IntegrityError:
        raise ActionError(409, f"variable {var_key!r} exists already", "key") from None
    return get_variable(var_key)


def update_variable(var_key: str, body: dict[str, Any], *, username: str) -> dict[str, Any]:
    if "key" in body and body["key"] != var_key:
        raise ActionError(400, "key cannot be changed (create a new variable instead)", "key")
    _check_variable(body, partial=True)
    key = cipher()
    with open_session() as s, s.begin():
        row = s.get(VariableRow, var_key, with_for_update=True)
        if row is None:
            raise ActionError(404, f"no variable {var_key!r}")
        fields = []
        value = body.get("value")
        if "value" in body and not (value == MASK and is_sensitive(var_key)):
            store.put_variable(s, var_key, value, key)
            fields.append("value")
        if "description" in body:
            row.description = _blank_to_none(body["description"])
            row.updated_at = datetime.now(UTC)
            fields.append("description")
        audit(s, "variable_update", username=username, details={"key": var_key, "fields": fields})
    return get_variable(var_key)


def delete_variable(var_key: str, *, username: str) -> None:
    with open_session() as s, s.begin():
        if not store.delete_variable(s, var_key):
            raise ActionError(404, f"no variable {var_key!r}")
        audit(s, "variable_delete", username=username, details={"key": var_key})
