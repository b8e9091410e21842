"""DAG versions: every run records the version of its DAG that was current when it was created.

A version is the DAG's serialized form plus its file's source, identified per DAG by
``version_hash`` (the hash of both hashes) and numbered 1, 2, 3... The DAG processor calls
:func:`record_version` only when a parse changed the DAG's serialized form or its file's source,
so a file parsed again unchanged costs nothing here. The row is inserted only if absent, under the
DAG's row lock the processor already holds: several schedulers storing the same DAG at once end
with one version. A DAG that goes back to an earlier form (an edit reverted) is that earlier
version again, not a new number. Runs get the DAG's current version from :func:`run_version`,
the one place every way of creating a run takes it from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hareflow.common.db import Dag, DagRun, DagVersion
from hareflow.common.db.upsert import insert_if_absent
from hareflow.common.records import iso
from sqlalchemy import func, select
from sqlalchemy.orm import Session


def source_hash(source: str | None) -> str:
    """The hash ``dag_code.source_hash`` holds for ``source`` ("" when there is no source)."""
    return "" if source is None else hashlib.sha256(source.encode()).hexdigest()


def version_hash(dag_hash: str, source_digest: str) -> str:
    """The version's identity: the serialized form's hash and the source's, hashed together.
    Migration 0013 computes the same formula for the versions it creates."""
    return hashlib.sha256(f"{dag_hash}\n{source_digest}".encode()).hexdigest()


def record_version(
    session: Session,
    dag: Dag,
    *,
    source: str | None,
    source_digest: str,
    now: datetime,
) -> DagVersion:
    """The version of ``dag``'s (already updated, locked) row with ``source``: the existing one
    with the same hash, or a new one numbered after the DAG's last. Sets ``dag.dag_version_id``."""
    digest = version_hash(dag.dag_hash, source_digest)
    found = _by_hash(session, dag.dag_id, digest)
    if found is None:
        number = (
            session.scalar(select(func.max(DagVersion.version_number)).where(DagVersion.dag_id == dag.dag_id))
            or 0
        ) + 1
        insert_if_absent(
            session,
            DagVersion.__table__,  # type: ignore[arg-type]
            {
                "dag_id": dag.dag_id,
                "version_number": number,
                "version_hash": digest,
                "dag_hash": dag.dag_hash,
                "fileloc": dag.fileloc,
                "serialized": dag.serialized,
                "source": source,
                "created_at": now,
            },
        )
        found = _by_hash(session, dag.dag_id, digest)
        if found is None:  # pragma: no cover - a concurrent writer took the number with another hash
            raise RuntimeError(f"DAG {dag.dag_id!r}: version {number} was taken while it was being stored")
    dag.dag_version_id = found.id
    return found


def _by_hash(session: Session, dag_id: str, digest: str) -> DagVersion | None:
    return session.scalars(
        select(DagVersion).where(DagVersion.dag_id == dag_id, DagVersion.version_hash == digest)
    ).first()


def run_version(dag: Dag) -> dict[str, Any]:
    """The version columns of a run of ``dag`` created now: every run creation path (scheduled,
    manual, backfill, asset-triggered, event) spreads these into its new row."""
    return {"dag_hash": dag.dag_hash, "dag_version_id": dag.dag_version_id}


# -- reads (web, API, CLI) --------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    """One version as listed: no serialized form or source (those are read one version at a time)."""

    id: int
    dag_id: str
    version_number: int
    version_hash: str
    fileloc: str
    created_at: datetime
    runs: int
    is_latest: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "version_number": self.version_number,
            "version_hash": self.version_hash,
            "fileloc": self.fileloc,
            "created_at": iso(self.created_at),
            "runs": self.runs,
            "is_latest": self.is_latest,
        }


def list_versions(session: Session, dag: Dag, limit: int = 100) -> list[VersionInfo]:
    """The DAG's versions, newest number first, each with how many runs recorded it."""
    rows = session.execute(
        select(
            DagVersion.id,
            DagVersion.version_number,
            DagVersion.version_hash,
            DagVersion.fileloc,
            DagVersion.created_at,
        )
        .where(DagVersion.dag_id == dag.dag_id)
        .order_by(DagVersion.version_number.desc())
        .limit(limit)
    ).all()
    ids = [r.id for r in rows]
    counts: dict[int, int] = {}
    if ids:
        query = (
            select(DagRun.dag_version_id, func.count())
            .where(DagRun.dag_version_id.in_(ids))
            .group_by(DagRun.dag_version_id)
        )
        counts = {vid: int(n) for vid, n in session.execute(query).tuples().all() if vid is not None}
    return [
        VersionInfo(
            id=r.id,
            dag_id=dag.dag_id,
            version_number=r.version_number,
            version_hash=r.version_hash,
            fileloc=r.fileloc,
            created_at=r.created_at,
            runs=counts.get(r.id, 0),
            is_latest=r.id == dag.dag_version_id,
        )
        for r in rows
    ]


def get_version(session: Session, dag_id: str, number: int) -> DagVersion | None:
    return session.scalars(
        select(DagVersion).where(DagVersion.dag_id == dag_id, DagVersion.version_number == number)
    ).first()


def get_version_by_id(session: Session, dag_id: str, version_id: int | None) -> DagVersion | None:
    if version_id is None:
        return None
    version = session.get(DagVersion, version_id)
    return version if version is not None and version.dag_id == dag_id else None


def version_dict(version: DagVersion, latest_id: int | None) -> dict[str, Any]:
    """One version in full: the listing's fields, its serialized form and its source."""
    return {
        "dag_id": version.dag_id,
        "version_number": version.version_number,
        "version_hash": version.version_hash,
        "fileloc": version.fileloc,
        "created_at": iso(version.created_at),
        "is_latest": version.id == latest_id,
        "serialized": version.serialized,
        "source": version.source,
    }
