"""The provider registry: which connection types, hooks and task types are installed."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hareflow.common.secrets.connection import Connection

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "hareflow.providers"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str
    seconds: float = 0.0


@dataclass(frozen=True)
class ConnectionType:
    """One kind of connection: its name (the URI scheme), a label, which fields the form shows
    (and hints for them), and how ``connections test`` checks one."""

    conn_type: str
    label: str
    fields: tuple[str, ...] = ("host", "port", "login", "password", "schema", "extra")
    hints: dict[str, str] = field(default_factory=dict)
    hook: str | None = None  # "module:Class" of its hook
    test: Callable[[Connection], str] | None = None  # raises on failure, returns what it checked


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    version: str
    description: str = ""
    connection_types: tuple[ConnectionType, ...] = ()
    hooks: tuple[str, ...] = ()  # "module:Class"
    task_types: tuple[str, ...] = ()  # "module:Class"


@functools.cache
def providers() -> tuple[ProviderInfo, ...]:
    """Every installed provider (hareflow's own first); one that fails to load is logged and left out."""
    from hareflow.common.providers.builtin import builtin_provider

    found = [builtin_provider()]
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.startswith("hareflow.common.providers.builtin"):
            continue
        try:
            info = ep.load()()
        except Exception as exc:  # a broken third-party package must not break hareflow
            log.warning("provider %s failed to load: %s: %s", ep.name, type(exc).__name__, exc)
            continue
        if isinstance(info, ProviderInfo):
            found.append(info)
        else:
            log.warning("provider %s returned %r, not a ProviderInfo", ep.name, type(info).__name__)
    return tuple(found)


def connection_types() -> dict[str, ConnectionType]:
    out: dict[str, ConnectionType] = {}
    for info in providers():
        for ct in info.connection_types:
            out.setdefault(ct.conn_type, ct)
    return out


def test_connection(conn: Connection) -> ProbeResult:
    """Really reach the system ``conn`` points at (a database: ``SELECT 1``; HTTP: a request)."""
    ct = connection_types().get(conn.conn_type)
    if ct is None or ct.test is None:
        known = ", ".join(sorted(t for t, c in connection_types().items() if c.test))
        return ProbeResult(False, f"no test for connection type {conn.conn_type!r} (testable: {known})")
    started = time.monotonic()
    try:
        what = ct.test(conn)
    except Exception as exc:  # the point is to report any failure, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return ProbeResult(False, f"{type(exc).__name__}: {first}", time.monotonic() - started)
    return ProbeResult(True, what, time.monotonic() - started)
