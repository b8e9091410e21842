"""The audit log: who changed what, when and from where.

Every state-changing action writes one row, whichever door it came through: the web UI and the API
record the logged-in user and the client's address, the CLI the OS user (the ``audit_user``
setting may name a configured identity instead, for shared service accounts) and the host it ran on. The
operation in ``common`` writes the row in its own transaction, so no door can forget it.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from hareflow.common.db import AuditLog
from sqlalchemy.orm import Session

#: Where the actions of this thread come from, for audit rows that do not say: the CLI sets it
#: once per command (``cli@host``), the web server once per request (``web <client address>``).
_current_origin: ContextVar[str | None] = ContextVar("hareflow_audit_origin", default=None)


def set_origin(origin: str | None) -> None:
    """Name where this thread's actions come from (see ``_current_origin``)."""
    _current_origin.set(origin)


def audit(
    session: Session,
    action: str,
    *,
    username: str | None,
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    origin: str | None = None,
    now: datetime | None = None,
) -> AuditLog:
    """Record who did what; ``origin`` says from where (``cli@host``, ``web 10.0.0.5``)."""
    data = dict(details) if details is not None else None
    origin = origin or _current_origin.get()
    if origin:
        data = {**(data or {}), "origin": origin}
    row = AuditLog(
        at=now or datetime.now(UTC),
        username=username,
        action=action,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        details=data,
    )
    session.add(row)
    return row


def cli_user(settings: Any = None) -> str:
    """Who runs this command: the ``audit_user`` setting (``HAREFLOW_AUDIT_USER``: a configured
    identity, for shared service accounts) if set, else the OS user ("cli" if it has no passwd
    entry)."""
    configured = (getattr(settings, "audit_user", "") or os.environ.get("HAREFLOW_AUDIT_USER", "")).strip()
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def cli_origin() -> str:
    return f"cli@{socket.gethostname()}"
