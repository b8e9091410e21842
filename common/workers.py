"""The workers the metastore knows: what the page, the API and ``hareflow workers list`` show, and
the pruning of workers long gone.

A worker's ``running`` count is read from the task instances it holds (``state = running``, its
name in ``worker``), not from its last heartbeat: a heartbeat is up to ``heartbeat_interval`` old,
so a count taken from it still shows tasks that finished seconds ago, and a lost worker's last
heartbeat would show its tasks running forever. Workers stopped or lost for longer than
``HIDE_AFTER`` are left out unless asked for; ``prune_workers`` deletes them after the
``worker_retention_days`` setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hareflow.common.db import TaskInstance, Worker
from hareflow.common.records import iso
from hareflow.common.states import TaskState
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

#: Workers stopped or lost for longer than this are hidden by default (``--all`` / ``?all=true``).
HIDE_AFTER = timedelta(days=1)
GONE = ("stopped", "lost")


@dataclass(frozen=True)
class WorkerList:
    workers: list[dict[str, Any]]
    hidden: int  # stopped or lost for longer than HIDE_AFTER, left out


def list_workers(session: Session, *, include_gone: bool = False, now: datetime | None = None) -> WorkerList:
    now = now or datetime.now(UTC)
    recent = or_(Worker.state.not_in(GONE), Worker.last_heartbeat >= now - HIDE_AFTER)
    query = select(Worker).order_by(Worker.state, Worker.hostname, Worker.name)
    if not include_gone:
        query = query.where(recent)
    rows = list(session.scalars(query))
    hidden = (
        0 if include_gone else session.scalar(select(func.count()).select_from(Worker).where(~recent)) or 0
    )
    running = (
        dict(
            session.execute(
                select(TaskInstance.worker, func.count())
                .where(
                    TaskInstance.worker.in_([w.name for w in rows]), TaskInstance.state == TaskState.RUNNING
                )
                .group_by(TaskInstance.worker)
            ).all()
        )
        if rows
        else {}
    )
    return WorkerList(
        workers=[
            {
                "name": w.name,
                "hostname": w.hostname,
                "pid": w.pid,
                "queues": list(w.queues or []),
                "concurrency": w.concurrency,
                "running": int(running.get(w.name, 0)),
                "state": w.state,
                "first_seen": iso(w.first_seen),
                "last_heartbeat": iso(w.last_heartbeat),
                "heartbeat_age": round((now - w.last_heartbeat).total_seconds(), 1),
            }
            for w in rows
        ],
        hidden=int(hidden),
    )


def prune_workers(session: Session, retention_days: float, *, now: datetime | None = None) -> int:
    """Delete workers stopped or lost for longer than ``retention_days`` (0 keeps them all); return
    how many. A worker that comes back after that simply registers again with its next heartbeat."""
    if retention_days <= 0:
        return 0
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    result = session.execute(
        delete(Worker).where(and_(Worker.state.in_(GONE), Worker.last_heartbeat < cutoff))
    )
    return int(result.rowcount or 0)
