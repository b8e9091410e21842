"""Providers: hooks, task types and connection types for the systems pipelines reach.

A provider is a Python package that registers, under the ``hareflow.providers`` entry-point group,
a callable returning a :class:`ProviderInfo`. hareflow's own (SQL, HTTP, notifications) is
registered the same way. The registry below is what the UI's connection form, ``hareflow
providers list`` and ``hareflow connections test`` read.

The hooks and task types live in ``sql`` and ``http``; this package imports neither SQLAlchemy nor
httpx until a hook is used.
"""

from __future__ import annotations

from hareflow.common.providers.registry import (
    ConnectionType,
    ProbeResult,
    ProviderInfo,
    connection_types,
    hook_for,
    load_reference,
    providers,
    task_types,
    test_connection,
)

__all__ = [
    "ConnectionType",
    "ProbeResult",
    "ProviderInfo",
    "connection_types",
    "hook_for",
    "load_reference",
    "providers",
    "task_types",
    "test_connection",
]
