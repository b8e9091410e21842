"""Which version of a DAG a page shows: the graph and source pages show the DAG as a run saw it.

``?version=N`` picks a version, ``?run_id=`` the version that run recorded; without either the
page shows the DAG's current form. A run older than DAG versions (``dag_version_id`` NULL) has no
recorded version: the page says so and shows the current form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hareflow.common.dag_versions import VersionInfo, get_version, get_version_by_id, list_versions
from hareflow.common.db import Dag, DagRun, DagVersion
from sqlalchemy import select
from sqlalchemy.orm import Session

#: Versions a picker lists (newest first); an older one is still reachable as ?version=N.
PICKER_VERSIONS = 100


@dataclass(frozen=True)
class Shown:
    """What a graph or source page shows: ``version`` (None: the DAG's current form, which has no
    stored version yet only before its first parse after migration 0013)."""

    version: DagVersion | None
    versions: list[VersionInfo]
    latest_number: int | None
    #: the run asked for, when its version is unknown (a run older than DAG versions)
    unknown_run: str | None = None

    @property
    def number(self) -> int | None:
        return self.version.version_number if self.version is not None else self.latest_number

    @property
    def is_latest(self) -> bool:
        return self.number == self.latest_number

    def serialized(self, dag: Dag) -> dict[str, Any]:
        return self.version.serialized if self.version is not None else (dag.serialized or {})

    def context(self) -> dict[str, Any]:
        """The template's view of it."""
        return {
            "number": self.number,
            "latest_number": self.latest_number,
            "is_latest": self.is_latest,
            "unknown_run": self.unknown_run,
            "created_at": self.version.created_at.isoformat() if self.version is not None else None,
            "hash": self.version.version_hash[:12] if self.version is not None else None,
            "versions": [v.to_dict() for v in self.versions],
        }


class NoSuchVersion(LookupError):
    pass


def shown_version(s: Session, dag: Dag, *, run_id: str | None, version: str | None) -> Shown:
    """The version a page shows for ``?run_id=`` / ``?version=`` (``version`` wins); NoSuchVersion
    for a version number the DAG does not have."""
    versions = list_versions(s, dag, PICKER_VERSIONS)
    latest = get_version_by_id(s, dag.dag_id, dag.dag_version_id)
    latest_number = latest.version_number if latest is not None else None
    if version:
        try:
            found = get_version(s, dag.dag_id, int(version))
        except ValueError:
            found = None
        if found is None:
            raise NoSuchVersion(f"DAG {dag.dag_id!r} has no version {version!r}")
        return Shown(found, versions, latest_number)
    if run_id:
        recorded = s.scalar(
            select(DagRun.dag_version_id).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id)
        )
        run_version = get_version_by_id(s, dag.dag_id, recorded)
        if run_version is not None:
            return Shown(run_version, versions, latest_number)
        exists = s.scalar(select(DagRun.id).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id))
        return Shown(latest, versions, latest_number, unknown_run=run_id if exists else None)
    return Shown(latest, versions, latest_number)


def run_versions(s: Session, dag_id: str, run_ids: list[str]) -> dict[str, int | None]:
    """Run id -> the number of the version it recorded (None: unknown), for the runs a page lists."""
    if not run_ids:
        return {}
    rows = s.execute(
        select(DagRun.run_id, DagVersion.version_number)
        .outerjoin(DagVersion, DagVersion.id == DagRun.dag_version_id)
        .where(DagRun.dag_id == dag_id, DagRun.run_id.in_(run_ids))
    ).tuples()
    return dict(rows.all())
