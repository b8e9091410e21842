"""Metastore: typed SQLAlchemy models, engine/session creation, migrations."""

from hareflow.common.db.engine import create_engine_for, make_session_factory
from hareflow.common.db.models import (
    ApiToken,
    AuditLog,
    Backfill,
    Base,
    Dag,
    DagCode,
    DagRun,
    ImportError_,
    Pool,
    SchedulerHeartbeat,
    TaskInstance,
    TaskLog,
    TaskRendered,
    TaskResult,
    User,
    WebSession,
    Worker,
)

__all__ = [
    "ApiToken",
    "AuditLog",
    "Backfill",
    "Base",
    "Dag",
    "DagCode",
    "DagRun",
    "ImportError_",
    "Pool",
    "SchedulerHeartbeat",
    "TaskInstance",
    "TaskLog",
    "TaskRendered",
    "TaskResult",
    "User",
    "WebSession",
    "Worker",
    "create_engine_for",
    "make_session_factory",
]
