"""The provider registry: which connection types, hooks and task types are installed.

Hooks and task types are named ``"module:Class"``: listing providers imports nothing but their
``ProviderInfo`` callables. A DAG file uses a provider's task type by importing its class (the
worker rebuilds the DAG from the file, so an importable class is all it needs); the registry is
what ``providers list``, the connection form and ``connections test`` read.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    """What one provider package offers; a ``hareflow.providers`` entry point returns one."""

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
        # hareflow's own entry point is the builtin above, always first.
        if ep.value.startswith("hareflow.common.providers.builtin"):
            continue
        try:
            info = ep.load()()
        except Exception as exc:  # a broken third-party package must not break hareflow
            log.warning("provider %s failed to load: %s: %s", ep.name, type(exc).__name__, exc)
            continue
        if not isinstance(info, ProviderInfo):
            log.warning("provider %s returned %r, not a ProviderInfo", ep.name, type(info).__name__)
        elif any(p.name == info.name for p in found):
            log.warning("provider %s: a provider named %r is already registered", ep.name, info.name)
        else:
            found.append(info)
    return tuple(found)


def connection_types() -> dict[str, ConnectionType]:
    """Every installed connection type by name; the first provider to claim a name keeps it
    (hareflow's own come first)."""
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


def load_reference(reference: str) -> Any:
    """The object a ``"module:attribute"`` reference names (a hook or a task type), imported now."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{reference!r} is not a 'module:attribute' reference")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def task_types() -> dict[str, str]:
    """Every provider task type: class name -> ``"module:Class"`` (the first provider keeps a name)."""
    out: dict[str, str] = {}
    for info in providers():
        for reference in info.task_types:
            out.setdefault(reference.rpartition(":")[2].rpartition(".")[2], reference)
    return out


def hook_for(conn_type: str) -> Any:
    """The hook class of a connection type; LookupError when the type is unknown or has none."""
    ct = connection_types().get(conn_type)
    if ct is None or ct.hook is None:
        raise LookupError(
            f"connection type {conn_type!r} has no hook (known: {', '.join(sorted(connection_types()))})"
        )
    return load_reference(ct.hook)
