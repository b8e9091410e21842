"""Connections and Variables: what a task needs to reach another system.

A :class:`Connection` is an id, a type and the usual fields (host, port, login, password, schema,
extra JSON). It can be written as a URI, ``postgresql://user:pw@host:5432/db?sslmode=require``:
the scheme is the type (``-`` in a scheme reads as ``_``), the path is the schema, query
parameters go to ``extra`` (a ``__extra__`` parameter holds a whole JSON object instead). SQLite
keeps its file in ``host``: ``sqlite:////var/data/app.db``.

A Variable is a key with a text value (JSON text for a structured value) and a description.

Task code reads both with :meth:`Connection.get` and :meth:`Variable.get`; where they are looked
up depends on where the code runs (``hareflow.common.secrets.client``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from hareflow.common.config import mask_url
from hareflow.common.secrets.errors import SecretsError

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_FIELDS = ("conn_type", "description", "host", "port", "login", "password", "schema", "extra")


def check_id(value: str, what: str = "connection id") -> str:
    """``value`` if it is a valid connection id or variable key, else a clear error."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise SecretsError(f"{what} {value!r}: use 1-250 letters, digits, '_', '.' or '-'")
    return value


@dataclass(frozen=True)
class Connection:
    """How to reach one system. Immutable; ``extra`` is a JSON object."""

    conn_id: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    #: DAG ids whose tasks may read it; None: every DAG.
    allowed_dag_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_id(self.conn_id)
        if not isinstance(self.conn_type, str) or not self.conn_type:
            raise SecretsError(f"connection {self.conn_id!r}: conn_type is required")
        if self.port is not None and (
            isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536
        ):
            raise SecretsError(f"connection {self.conn_id!r}: port {self.port!r} is not a TCP port")
        for name in ("host", "login", "password", "schema", "description"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                shown = "" if name == "password" else f" {value!r}"
                raise SecretsError(
                    f"connection {self.conn_id!r}: {name}{shown} must be text, not "
                    f"{type(value).__name__} (in YAML, quote it)"
                )
        if not isinstance(self.extra, dict):
            raise SecretsError(
                f"connection {self.conn_id!r}: extra must be a JSON object, got {self.extra!r}"
            )

    # -- task-side lookup ----------------------------------------------------------------------

    @classmethod
    def get(cls, conn_id: str) -> Connection:
        """The connection ``conn_id``, looked up where the calling code runs (a task asks the
        control plane over the broker; ``dags test`` and the scheduler read the chain directly).
        Raises :class:`~hareflow.common.secrets.errors.ConnectionNotFound` if it is not defined."""
        from hareflow.common.secrets.client import current_resolver

        return current_resolver().connection(conn_id)

    # Airflow's spelling, for code typed from habit.
    get_connection_from_secrets = get

    # -- forms ---------------------------------------------------------------------------------

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """Airflow's name for the parsed ``extra``."""
        return dict(self.extra)

    @classmethod
    def from_uri(cls, conn_id: str, uri: str, **fields: Any) -> Connection:
        """Parse ``scheme://login:password@host:port/schema?extra=...``; a clear error names
        what is wrong (never the password)."""
        uri = uri.strip()
        scheme, sep, rest = uri.partition("://")
        if not sep or not scheme:
            raise SecretsError(f"connection {conn_id!r}: {mask_url(uri)!r} is not a URI (scheme://...)")
        conn_type = scheme.replace("-", "_").lower()
        if conn_type == "sqlite":
            path, _, query = rest.partition("?")
            path = unquote(path[1:] if path.startswith("/") else path)
            return cls(
                conn_id, "sqlite", host=path or None, extra=_extra_from_query(conn_id, query), **fields
            )
        try:
            parts = urlsplit(f"x://{rest}")
            port = parts.port
        except ValueError as exc:
            raise SecretsError(f"connection {conn_id!r}: bad URI {mask_url(uri)!r}: {exc}") from None
        schema = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        return cls(
            conn_id,
            conn_type,
            host=unquote(parts.hostname) if parts.hostname else None,
            port=port,
            login=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            schema=schema or None,
            extra=_extra_from_query(conn_id, parts.query),
            **fields,
        )

    def get_uri(self) -> str:
        """The URI form (``from_uri`` reads it back to an equal connection, but for
        ``description`` and ``allowed_dag_ids``, which a URI does not carry)."""
        scheme = self.conn_type.replace("_", "-")
        if self.conn_type == "sqlite":
            uri = f"sqlite:///{quote(self.host or '', safe='/')}"
        else:
            auth = ""
            if self.login is not None or self.password is not None:
                auth = quote(self.login or "", safe="")
                if self.password is not None:
                    auth += ":" + quote(self.password, safe="")
                auth += "@"
            host = quote(self.host or "", safe="")
            port = f":{self.port}" if self.port is not None else ""
            path = "/" + quote(self.schema, safe="") if self.schema else ""
            uri = f"{scheme}://{auth}{host}{port}{path}"
        if self.extra:
            flat = all(isinstance(v, str) for v in self.extra.values())
            query = urlencode(self.extra if flat else {"__extra__": json.dumps(self.extra)})
            uri += "?" + query
        return uri

    @classmethod
    def from_dict(cls, conn_id: str, data: dict[str, Any]) -> Connection:
        """From the JSON form (``to_dict``), or ``{"uri": ...}`` with optional other fields."""
        if not isinstance(data, dict):
            raise SecretsError(f"connection {conn_id!r}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        data.pop("conn_id", None)
        allowed = data.pop("allowed_dag_ids", None)
        known = {"uri", *_FIELDS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SecretsError(f"connection {conn_id!r}: unknown field(s) {', '.join(unknown)}")
        extra = data.get("extra")
        if isinstance(extra, str):
            try:
                data["extra"] = json.loads(extra) if extra.strip() else {}
            except ValueError as exc:
                raise SecretsError(f"connection {conn_id!r}: extra is not valid JSON: {exc}") from None
        elif extra is None:
            data.pop("extra", None)
        port = data.get("port")
        if isinstance(port, str) and port.strip().isdigit():
            data["port"] = int(port)
        if allowed is not None:
            if isinstance(allowed, str):
                allowed = [a.strip() for a in allowed.split(",") if a.strip()]
            if not isinstance(allowed, list | tuple) or not all(isinstance(a, str) for a in allowed):
                raise SecretsError(f"connection {conn_id!r}: allowed_dag_ids must be a list of DAG ids")
            allowed = tuple(allowed)
        uri = data.pop("uri", None)
        if uri is not None:
            base = cls.from_uri(conn_id, str(uri))
            overrides = {k: v for k, v in data.items() if v is not None}
            return replace(base, allowed_dag_ids=allowed, **overrides)
        if "conn_type" not in data:
            raise SecretsError(f"connection {conn_id!r}: conn_type is required (or give a uri)")
        return cls(conn_id=conn_id, allowed_dag_ids=allowed, **data)

    def to_dict(self, *, secrets: bool = True) -> dict[str, Any]:
        """The JSON form. Without ``secrets`` the password is left out (``password_set`` says
        whether there is one) and sensitive extra values read ``***``: what the UI and lists show."""
        from hareflow.common.secrets.masking import redact_mapping

        out: dict[str, Any] = {
            "conn_id": self.conn_id,
            "conn_type": self.conn_type,
            "description": self.description,
            "host": self.host,
            "port": self.port,
            "login": self.login,
            "schema": self.schema,
            "extra": dict(self.extra) if secrets else redact_mapping(self.extra),
            "allowed_dag_ids": list(self.allowed_dag_ids) if self.allowed_dag_ids is not None else None,
        }
        if secrets:
            out["password"] = self.password
        else:
            out["password_set"] = bool(self.password)
        return out

    def may_be_read_by(self, dag_id: str) -> bool:
        return self.allowed_dag_ids is None or dag_id in self.allowed_dag_ids

    def __repr__(self) -> str:  # never the password, whoever prints it
        return f"Connection(conn_id={self.conn_id!r}, conn_type={self.conn_type!r}, host={self.host!r})"


def connection_from_text(conn_id: str, text: str) -> Connection:
    """A connection written as a URI or as a JSON object (environment variables, secret files)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SecretsError(f"connection {conn_id!r}: not valid JSON: {exc}") from None
        return Connection.from_dict(conn_id, data)
    return Connection.from_uri(conn_id, text)


def _extra_from_query(conn_id: str, query: str) -> dict[str, Any]:
    if not query:
        return {}
    pairs = parse_qsl(query, keep_blank_values=True)
    as_dict = dict(pairs)
    if "__extra__" in as_dict:
        try:
            extra = json.loads(as_dict["__extra__"])
        except ValueError as exc:
            raise SecretsError(f"connection {conn_id!r}: __extra__ is not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise SecretsError(f"connection {conn_id!r}: __extra__ must be a JSON object")
        return extra
    return as_dict


class Variable:
    """Task-side access to Variables: ``Variable.get("threshold", default=10)``."""

    _NO_DEFAULT: Any = object()

    @classmethod
    def get(cls, key: str, default: Any = _NO_DEFAULT, *, deserialize_json: bool = False) -> Any:
        """The variable's text (parsed from JSON with ``deserialize_json``), ``default`` if it is
        not defined, else :class:`~hareflow.common.secrets.errors.VariableNotFound`."""
        from hareflow.common.secrets.client import current_resolver
        from hareflow.common.secrets.errors import VariableNotFound

        text = current_resolver().variable(key)
        if text is None:
            if default is cls._NO_DEFAULT:
                raise VariableNotFound(f"variable {key!r} is not defined")
            return default
        if not deserialize_json:
            return text
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SecretsError(f"variable {key!r} is not valid JSON: {exc}") from None
