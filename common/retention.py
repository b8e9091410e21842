"""History retention: delete finished runs older than a cutoff, everything keyed to them, and the
other rows that only grow. ``hareflow db clean`` and the scheduler's hourly step (the
``retention_days`` setting) both call :func:`clean_history`.

What is deleted, table by table (docs/cli.md lists the same with the reasons):

- ``dag_run``: runs in ``success`` or ``failed`` whose end (else logical date, else queue time) is
  before the cutoff; never a queued or running run, however old. With each run: its
  ``task_instance`` rows and, keyed to those, ``task_try``, ``task_result`` (the return values
  downstream tasks read), ``task_rendered`` and ``task_log``; and its ``dag_run_asset_event`` links.
- ``backfill``: finished backfills none of whose runs is left.
- ``asset_event``: events before the cutoff that no remaining run names as its trigger, that no
  consumer DAG is still waiting for (``asset_dag_run_queue``) and that are not their asset's latest.
- ``audit_log``: entries before the cutoff. ``dead_letter``: dead letters already requeued or
  discarded before the cutoff (those still ``dead`` wait for an operator). ``scheduler_heartbeat``:
  schedulers silent since before the cutoff.

Some old finished runs are kept because the scheduler still reads them (:func:`_protected`): the
latest scheduled or backfill run of a DAG (its next interval is computed from that run's logical
date: without it a catch-up DAG would create its old runs again) and any run at a later logical
date (those intervals are passed over); the DAG's newest run; the run just before an active run
(``depends_on_past`` reads it); the runs of a backfill still running (it would plan them again);
and the run of the newest task instance (SQLite gives a deleted highest id to the next row, and
asset events and dead letters name task instances by id).

Each table is walked in key order up to the highest key an old row has, found first through an
index on its time (migration 0015 for runs and asset events): the walk never reads the newer
history, so the hourly look of the scheduler costs what the old rows cost, however long the
retained history is.

Work is done in short transactions of at most ``runs_per_batch`` runs and ``tis_per_batch`` task
instances (one run's are never split), so no lock is held long: the runs a batch deletes are
locked with ``SKIP LOCKED`` and their state and age checked again under the lock, so a run cleared
back to ``queued`` meanwhile is left alone; results written concurrently for other runs are never
touched, and a late report for a task instance just deleted is dropped by the results consumer as
one for an unknown task instance. An archive, when given, receives each batch's rows, flushed to
disk, before that batch commits.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from hareflow.common.audit import audit
from hareflow.common.db import (
    AssetDagRunQueue,
    AssetEvent,
    AuditLog,
    Backfill,
    Dag,
    DagRun,
    DagRunAssetEvent,
    DeadLetter,
    SchedulerHeartbeat,
    TaskInstance,
    TaskLog,
    TaskRendered,
    TaskResult,
    TaskTry,
)
from hareflow.common.runs import schedule_args
from hareflow.common.states import RUN_ACTIVE, RUN_FINISHED
from sqlalchemy import Table, delete, exists, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, aliased, sessionmaker
from sqlalchemy.sql import ColumnElement

log = logging.getLogger(__name__)

#: Every table the clean-up deletes from, in the order reports list them.
TABLES = (
    "dag_run",
    "task_instance",
    "task_try",
    "task_result",
    "task_rendered",
    "task_log",
    "dag_run_asset_event",
    "backfill",
    "asset_event",
    "audit_log",
    "dead_letter",
    "scheduler_heartbeat",
)
#: Rows keyed to a task instance, deleted before it (the foreign keys cascade too, but explicit
#: deletes give exact counts and rows for the archive).
TI_CHILDREN = (TaskTry, TaskResult, TaskRendered, TaskLog)
#: Dead letters an operator has settled; those still ``dead`` are never deleted.
SETTLED_DEAD_LETTERS = ("requeued", "discarded")
#: Ids per ``IN (...)`` list: well under every backend's limit on bound parameters.
CHUNK = 500
#: Attempts of one batch that hit a deadlock or a lock timeout before the clean-up gives up.
ATTEMPTS = 3


class CleanError(ValueError):
    """A clean-up asked for with a bad argument (the CLI shows it as one line)."""


class Archive(Protocol):
    """Where deleted rows are written before their deletion commits."""

    def write(self, table: str, rows: Sequence[dict[str, Any]]) -> None: ...

    def flush(self) -> None:
        """Make everything written so far durable (called before each batch commits)."""

    def committed(self) -> None:
        """The batch written since the last call committed: its rows stay."""

    def rollback(self) -> None:
        """Forget what was written since the last commit (its batch did not commit)."""


@dataclass
class CleanReport:
    """What one clean-up deleted (or, in a dry run, would delete)."""

    cutoff: datetime
    dry_run: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    #: Finished runs older than the cutoff kept because the scheduler still reads them.
    kept_runs: int = 0
    transactions: int = 0
    longest_transaction: float = 0.0  # seconds
    #: False when ``budget`` ran out first: call again to go on.
    done: bool = True

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# -- the entry point ------------------------------------------------------------------------------------


def clean_history(
    sessions: sessionmaker[Session],
    *,
    cutoff: datetime,
    dag_id: str | None = None,
    dry_run: bool = False,
    archive: Archive | None = None,
    runs_per_batch: int = 100,
    tis_per_batch: int = 2000,
    rows_per_batch: int = 2000,
    budget: float | None = None,
) -> CleanReport:
    """Delete (``dry_run``: count) finished runs before ``cutoff`` with what belongs to them, then
    the other old rows (module docstring). ``dag_id`` limits it to that DAG's runs, backfills,
    audit entries and dead letters. ``budget`` (seconds) stops after the first transaction that
    ends past it, with ``done`` False; a later call goes on where this one stopped."""
    if cutoff.tzinfo is None:
        raise CleanError("the cutoff needs a time zone")
    if runs_per_batch < 1 or tis_per_batch < 1 or rows_per_batch < 1:
        raise CleanError("batch sizes must be at least 1")
    report = CleanReport(cutoff=cutoff, dry_run=dry_run)
    started = time.monotonic()

    def out_of_time() -> bool:
        return budget is not None and time.monotonic() - started >= budget

    steps: list[Callable[[], bool]] = [
        lambda: _clean_runs(sessions, report, dag_id, archive, runs_per_batch, tis_per_batch, out_of_time)
    ]
    for spec in _row_specs(cutoff, dag_id):
        steps.append(
            lambda spec=spec: _clean_rows(sessions, report, spec, archive, rows_per_batch, out_of_time)
        )
    for step in steps:
        if not step():
            report.done = False
            break
    return report


def audit_clean(
    sessions: sessionmaker[Session],
    counts: dict[str, int],
    *,
    cutoff: datetime,
    username: str,
    dag_id: str | None = None,
    origin: str | None = None,
    archive: str | None = None,
) -> None:
    """Record a clean-up that deleted something in the audit log (``history_clean``), with the
    cutoff and the rows deleted per table, in its own transaction."""
    if not any(counts.values()):
        return
    details: dict[str, Any] = {
        "cutoff": cutoff.isoformat(),
        "deleted": {t: n for t, n in counts.items() if n},
    }
    if archive is not None:
        details["archive"] = archive
    with sessions() as session, session.begin():
        audit(session, "history_clean", username=username, dag_id=dag_id, details=details, origin=origin)


def cutoff_for(days: float, now: datetime | None = None) -> datetime:
    """``now`` minus ``days`` days; a CleanError for a number of days that is not positive."""
    from datetime import timedelta

    if not days > 0:  # also refuses NaN
        raise CleanError(f"the number of days must be more than 0, not {days:g}")
    return (now or datetime.now(UTC)) - timedelta(days=days)


# -- runs -----------------------------------------------------------------------------------------------


def _run_age() -> ColumnElement[Any]:
    return func.coalesce(DagRun.end_date, DagRun.logical_date, DagRun.queued_at)


def _clean_runs(
    sessions: sessionmaker[Session],
    report: CleanReport,
    dag_id: str | None,
    archive: Archive | None,
    runs_per_batch: int,
    tis_per_batch: int,
    out_of_time: Callable[[], bool],
) -> bool:
    """The runs, batch by batch in id order. Returns False if the time ran out first."""
    with sessions() as session:
        bound = _id_bound(session, report.cutoff, dag_id)
    if bound is None:
        return True
    after = 0
    while True:
        with sessions() as session:
            where = [
                DagRun.state.in_(RUN_FINISHED),
                _run_age() < report.cutoff,
                DagRun.id > after,
                DagRun.id <= bound,
            ]
            if dag_id is not None:
                where.append(DagRun.dag_id == dag_id)
            ids = list(
                session.scalars(select(DagRun.id).where(*where).order_by(DagRun.id).limit(runs_per_batch))
            )
        if not ids:
            return True
        last = _in_transaction(
            sessions, report, archive, lambda s, ids=ids: _run_batch(s, report, archive, ids, tis_per_batch)
        )
        after = last
        if out_of_time():
            return False


def _id_bound(session: Session, cutoff: datetime, dag_id: str | None) -> int | None:
    """The highest id of a finished run older than ``cutoff`` (None: there is none), read through
    ``ix_dag_run_state_end_date``: the batches then scan the primary key up to it only, which at
    steady state holds little more than the old runs kept, however many newer runs follow."""
    by_dag = [DagRun.dag_id == dag_id] if dag_id is not None else []
    # ``id + 0``: PostgreSQL would read max(id) backwards along the primary key, through every
    # newer run, hoping to meet an old one early; the sum makes it use the index instead.
    highest = func.max(DagRun.id + 0)
    ended = session.scalar(
        select(highest).where(DagRun.state.in_(RUN_FINISHED), DagRun.end_date < cutoff, *by_dag)
    )
    unended = session.scalar(
        select(highest).where(
            DagRun.state.in_(RUN_FINISHED),
            DagRun.end_date.is_(None),
            func.coalesce(DagRun.logical_date, DagRun.queued_at) < cutoff,
            *by_dag,
        )
    )
    found = [i for i in (ended, unended) if i is not None]
    return max(found) if found else None


def _run_batch(
    session: Session, report: CleanReport, archive: Archive | None, ids: list[int], tis_per_batch: int
) -> int:
    """Lock the candidate runs still finished and old, keep the protected ones, delete the rest
    (as many whole runs as ``tis_per_batch`` allows, at least one); return the last run id handled."""
    query = (
        select(DagRun.id, DagRun.dag_id, DagRun.interval_key, DagRun.backfill_id)
        .where(DagRun.id.in_(ids), DagRun.state.in_(RUN_FINISHED), _run_age() < report.cutoff)
        .order_by(DagRun.id)
    )
    if not report.dry_run and session.get_bind().dialect.name != "sqlite":
        # SQLite's BEGIN IMMEDIATE already holds the one write lock.
        query = query.with_for_update(skip_locked=True)
    runs = session.execute(query).all()
    counts = dict(
        session.execute(
            select(TaskInstance.run_pk, func.count())
            .where(TaskInstance.run_pk.in_([r.id for r in runs]))
            .group_by(TaskInstance.run_pk)
        ).all()
    )
    taken, total = [], 0
    for run in runs:
        n = counts.get(run.id, 0)
        if taken and total + n > tis_per_batch:
            break
        taken.append(run)
        total += n
    # Candidates past the cut are looked at again by the next batch; those locked by someone else
    # (or no longer finished) are passed over.
    last = taken[-1].id if len(taken) < len(runs) else ids[-1]
    keep = _protected(session, taken)
    report.kept_runs += len(keep)
    doomed = [r.id for r in taken if r.id not in keep]
    if not doomed:
        return last
    tis = list(session.scalars(select(TaskInstance.id).where(TaskInstance.run_pk.in_(doomed))))
    # Parents first in the archive (a reader rebuilds in that order), children first in the deletes.
    plan: list[tuple[Table, ColumnElement[Any], list[Any]]] = [
        (DagRun.__table__, DagRun.id, doomed),  # type: ignore[list-item]
        (TaskInstance.__table__, TaskInstance.id, tis),  # type: ignore[list-item]
        *((m.__table__, m.ti_id, tis) for m in TI_CHILDREN),  # type: ignore[misc]
        (DagRunAssetEvent.__table__, DagRunAssetEvent.run_pk, doomed),  # type: ignore[list-item]
    ]
    if archive is not None and not report.dry_run:
        for table, column, keys in plan:
            for chunk in _chunks(keys):
                rows = session.execute(select(table).where(column.in_(chunk))).mappings()
                archive.write(table.name, [dict(r) for r in rows])
    for table, column, keys in reversed(plan):
        for chunk in _chunks(keys):
            report.counts[table.name] += _delete_or_count(session, table, column.in_(chunk), report.dry_run)
    return last


def _protected(session: Session, runs: Sequence[Any]) -> set[int]:
    """The ids among ``runs`` (finished, old) that the scheduler still reads (module docstring)."""
    if not runs:
        return set()
    dag_ids = sorted({r.dag_id for r in runs})
    watermark = dict(
        session.execute(
            select(DagRun.dag_id, func.max(DagRun.interval_key))
            .where(DagRun.dag_id.in_(dag_ids), DagRun.run_type.in_(("scheduled", "backfill")))
            .group_by(DagRun.dag_id)
        ).all()
    )
    newest = set(
        session.scalars(select(func.max(DagRun.id)).where(DagRun.dag_id.in_(dag_ids)).group_by(DagRun.dag_id))
    )
    newest_ti_run = session.scalar(select(TaskInstance.run_pk).order_by(TaskInstance.id.desc()).limit(1))
    newest.add(newest_ti_run or 0)
    # The run just before each active run, by logical date (depends_on_past).
    previous: set[int] = set()
    active = session.execute(
        select(DagRun.dag_id, DagRun.logical_date).where(
            DagRun.dag_id.in_(dag_ids), DagRun.state.in_(RUN_ACTIVE), DagRun.logical_date.is_not(None)
        )
    ).all()
    for a_dag, a_date in active:
        before = session.scalar(
            select(DagRun.id)
            .where(DagRun.dag_id == a_dag, DagRun.logical_date < a_date)
            .order_by(DagRun.logical_date.desc(), DagRun.id.desc())
            .limit(1)
        )
        if before is not None:
            previous.add(before)
    backfills = {r.backfill_id for r in runs if r.backfill_id is not None}
    running_backfills = set(
        session.scalars(select(Backfill.id).where(Backfill.id.in_(backfills), Backfill.state == "running"))
        if backfills
        else []
    )
    # A DAG on a time schedule with no scheduled run yet starts from its start_date: every logical
    # date its runs hold is an interval the schedule passes over.
    unscheduled = [d for d in dag_ids if watermark.get(d) is None]
    timed = {
        dag.dag_id
        for dag in session.scalars(select(Dag).where(Dag.dag_id.in_(unscheduled)))
        if unscheduled and schedule_args(dag)["schedule"] is not None
    }
    keep: set[int] = set()
    for r in runs:
        mark = watermark.get(r.dag_id)
        if (
            r.id in newest
            or r.id in previous
            or r.backfill_id in running_backfills
            or (mark is not None and r.interval_key is not None and r.interval_key >= mark)
            or (mark is None and r.dag_id in timed and r.interval_key is not None)
        ):
            keep.add(r.id)
    return keep


# -- the other tables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RowSpec:
    table: Table
    key: ColumnElement[Any]
    where: tuple[ColumnElement[Any], ...]
    #: A condition ``where`` implies that an index serves: the highest key meeting it bounds the
    #: scan (as ``_id_bound`` does for runs). None: a small table, scanned whole.
    bound: ColumnElement[Any] | None = None


def _row_specs(cutoff: datetime, dag_id: str | None) -> list[_RowSpec]:
    specs: list[_RowSpec] = []
    by_dag = (lambda column: (column == dag_id,)) if dag_id is not None else (lambda column: ())
    specs.append(
        _RowSpec(
            Backfill.__table__,  # type: ignore[arg-type]
            Backfill.id,
            (
                Backfill.state != "running",
                func.coalesce(Backfill.completed_at, Backfill.created_at) < cutoff,
                ~exists().where(DagRun.backfill_id == Backfill.id),
                *by_dag(Backfill.dag_id),
            ),
        )
    )
    if dag_id is None:
        later = aliased(AssetEvent)
        specs.append(
            _RowSpec(
                AssetEvent.__table__,  # type: ignore[arg-type]
                AssetEvent.id,
                (
                    AssetEvent.timestamp < cutoff,
                    ~exists().where(DagRunAssetEvent.event_id == AssetEvent.id),
                    ~exists().where(
                        AssetDagRunQueue.asset_id == AssetEvent.asset_id,
                        AssetDagRunQueue.first_event_id <= AssetEvent.id,
                    ),
                    exists().where(later.asset_id == AssetEvent.asset_id, later.id > AssetEvent.id),
                ),
                AssetEvent.timestamp < cutoff,  # ix_asset_event_timestamp (migration 0015)
            )
        )
    specs.append(
        _RowSpec(
            AuditLog.__table__,  # type: ignore[arg-type]
            AuditLog.id,
            (AuditLog.at < cutoff, *by_dag(AuditLog.dag_id)),
            AuditLog.at < cutoff,
        )
    )
    specs.append(
        _RowSpec(
            DeadLetter.__table__,  # type: ignore[arg-type]
            DeadLetter.id,
            (
                DeadLetter.state.in_(SETTLED_DEAD_LETTERS),
                func.coalesce(DeadLetter.state_at, DeadLetter.received_at) < cutoff,
                *by_dag(DeadLetter.dag_id),
            ),
            DeadLetter.received_at < cutoff,  # settled after it was received
        )
    )
    if dag_id is None:
        specs.append(
            _RowSpec(
                SchedulerHeartbeat.__table__,  # type: ignore[arg-type]
                SchedulerHeartbeat.id,
                (SchedulerHeartbeat.last_heartbeat < cutoff,),
            )
        )
    return specs


def _clean_rows(
    sessions: sessionmaker[Session],
    report: CleanReport,
    spec: _RowSpec,
    archive: Archive | None,
    rows_per_batch: int,
    out_of_time: Callable[[], bool],
) -> bool:
    after: Any = None
    upper: Any = None
    if spec.bound is not None:
        with sessions() as session:
            upper = session.scalar(select(func.max(spec.key + 0)).where(spec.bound))
        if upper is None:
            return True
    while True:
        with sessions() as session:
            query = select(spec.key).where(*spec.where).order_by(spec.key).limit(rows_per_batch)
            if after is not None:
                query = query.where(spec.key > after)
            if upper is not None:
                query = query.where(spec.key <= upper)
            keys = list(session.scalars(query))
        if not keys:
            return True

        def batch(session: Session, keys: list[Any] = keys) -> None:
            # The conditions again, inside the transaction: a row changed since it was read is
            # left alone. Then by key alone: MySQL refuses a DELETE whose subquery reads its table.
            still = list(session.scalars(select(spec.key).where(spec.key.in_(keys), *spec.where)))
            if not still:
                return
            if archive is not None and not report.dry_run:
                rows = session.execute(select(spec.table).where(spec.key.in_(still))).mappings()
                archive.write(spec.table.name, [dict(r) for r in rows])
            report.counts[spec.table.name] += _delete_or_count(
                session, spec.table, spec.key.in_(still), report.dry_run
            )

        _in_transaction(sessions, report, archive, batch)
        after = keys[-1]
        if out_of_time():
            return False


# -- transactions ---------------------------------------------------------------------------------------


def _in_transaction(
    sessions: sessionmaker[Session],
    report: CleanReport,
    archive: Archive | None,
    work: Callable[[Session], Any],
) -> Any:
    """Run ``work`` in one transaction (timed for the report), again after a deadlock or a lock
    timeout (another writer held a row this batch needed), at most ``ATTEMPTS`` times."""
    for attempt in range(1, ATTEMPTS + 1):
        started = time.monotonic()
        saved = dict(report.counts), report.kept_runs
        try:
            if report.dry_run:
                with sessions() as session:
                    result = work(session)
                    session.rollback()
            else:
                with sessions() as session, session.begin():
                    result = work(session)
                    if archive is not None:
                        archive.flush()  # durable before the rows are gone
                if archive is not None:
                    archive.committed()
            report.transactions += 1
            report.longest_transaction = max(report.longest_transaction, time.monotonic() - started)
            return result
        except OperationalError:
            report.counts, report.kept_runs = saved
            if archive is not None:
                archive.rollback()
            if attempt == ATTEMPTS:
                raise
            log.info("history clean-up batch met a concurrent writer; trying again", exc_info=True)
            time.sleep(0.1 * attempt)
        except BaseException:
            if archive is not None:
                archive.rollback()
            raise
    raise AssertionError("unreachable")


def _delete_or_count(session: Session, table: Table, where: ColumnElement[Any], dry_run: bool) -> int:
    if dry_run:
        return int(session.scalar(select(func.count()).select_from(table).where(where)) or 0)
    return int(session.execute(delete(table).where(where)).rowcount or 0)


def _chunks(keys: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(keys), CHUNK):
        yield keys[i : i + CHUNK]


# -- the archive file -----------------------------------------------------------------------------------


def _json_value(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


class ArchiveFile:
    """Deleted rows as JSON lines, ``{"table": ..., "row": {...}}`` (bytes in base64, times in ISO
    8601), readable by the owner only (mode 0600). Rows go to ``<path>.partial``, flushed to disk
    before each batch commits; :meth:`close` renames it to ``path``, so ``path`` only ever
    appears whole. An existing ``path`` (an earlier archive) is never overwritten."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        if path.exists():
            raise CleanError(
                f"{path} exists: choose another archive file (an earlier one is never overwritten)"
            )
        try:
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CleanError(
                f"{self.partial} exists: an interrupted clean-up left it (its rows were deleted); "
                "move it away first"
            ) from None
        except OSError as exc:
            raise CleanError(f"cannot write the archive {path}: {exc.strerror}") from None
        self._file: IO[str] = os.fdopen(fd, "w", encoding="utf-8")
        self._synced = 0
        self.rows = 0
        self._rows_synced = 0

    def write(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self._file.write(json.dumps({"table": table, "row": row}, default=_json_value) + "\n")
        self.rows += len(rows)

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def committed(self) -> None:
        self._synced = self._file.tell()
        self._rows_synced = self.rows

    def rollback(self) -> None:
        self._file.flush()
        self._file.seek(self._synced)
        self._file.truncate()
        self.rows = self._rows_synced

    def close(self) -> None:
        """Make the archive appear under its name (with everything flushed so far)."""
        self.rollback()
        self._file.close()
        os.replace(self.partial, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
