"""The metastore schema (SQLAlchemy 2.0 typed models).

Indexes follow the real queries: the scheduler reads *active* runs and the task instances that are
scheduled, queued or running; workers are looked up by heartbeat age. Nothing the scheduler does on
each loop scans finished history.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from hareflow.common.db.types import LongBinary, LongText, SafeString, SafeText, UtcDateTime
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

ID_LEN = 250

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Dag(Base):
    """One DAG as last parsed from its file; ``serialized`` is what the scheduler and web read."""

    __tablename__ = "dag"

    dag_id: Mapped[str] = mapped_column(SafeString(ID_LEN), primary_key=True)
    fileloc: Mapped[str] = mapped_column(SafeString(1000))
    is_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    schedule: Mapped[str | None] = mapped_column(SafeString(100))
    timezone: Mapped[str] = mapped_column(SafeString(64), default="UTC")
    owner: Mapped[str] = mapped_column(SafeString(100), default="hareflow")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(SafeText)
    max_active_runs: Mapped[int] = mapped_column(Integer, default=16)
    max_active_tasks: Mapped[int] = mapped_column(Integer, default=16)
    serialized: Mapped[dict[str, Any]] = mapped_column(JSON)
    dag_hash: Mapped[str] = mapped_column(SafeString(64))
    #: The DAG's current version (``dag_version``): what a run created now records.
    dag_version_id: Mapped[int | None] = mapped_column(Integer)
    # The next scheduled interval: created once next_run_after has passed.
    next_logical_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_run_after: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_parsed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_dag_due", "is_active", "is_paused", "next_run_after"),)


class DagVersion(Base):
    """One version of a DAG: its serialized form and its file's source as they were when the DAG
    processor first stored them. A new row only when the hash of both changes (a DAG that goes
    back to an earlier form is that earlier version again); numbered 1, 2, 3... per DAG."""

    __tablename__ = "dag_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(SafeString(ID_LEN))
    version_number: Mapped[int] = mapped_column(Integer)
    #: sha256 of the serialized form's hash and the source's (``common.dag_versions.version_hash``)
    version_hash: Mapped[str] = mapped_column(SafeString(64))
    dag_hash: Mapped[str] = mapped_column(SafeString(64))  # the serialized form's alone
    fileloc: Mapped[str] = mapped_column(SafeString(1000))
    serialized: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("dag_id", "version_hash"),
        UniqueConstraint("dag_id", "version_number"),
    )


class Backfill(Base):
    __tablename__ = "backfill"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(SafeString(ID_LEN), index=True)
    from_date: Mapped[datetime] = mapped_column(UtcDateTime)
    to_date: Mapped[datetime] = mapped_column(UtcDateTime)
    max_active_runs: Mapped[int] = mapped_column(Integer, default=1)
    rerun_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(SafeString(20), default="running")  # running|success|failed|cancelled
    created_by: Mapped[str | None] = mapped_column(SafeString(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DagRun(Base):
    __tablename__ = "dag_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(SafeString(ID_LEN))
    run_id: Mapped[str] = mapped_column(SafeString(ID_LEN))
    run_type: Mapped[str] = mapped_column(SafeString(20))  # scheduled | manual | backfill | asset_triggered
    state: Mapped[str] = mapped_column(SafeString(20))
    logical_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The run's logical date, unique per DAG (as in Airflow), so one interval is never run twice and
    # two triggers at the same logical date cannot both succeed. NULL (allowed many times by every
    # supported database) only for manual runs created before migration 0007 that shared a date.
    interval_key: Mapped[datetime | None] = mapped_column(UtcDateTime)
    data_interval_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    conf: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    backfill_id: Mapped[int | None] = mapped_column(ForeignKey("backfill.id"))
    triggered_by: Mapped[str | None] = mapped_column(SafeString(100))
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Snapshot of the DAG's hash at creation: the run keeps the shape it was created with.
    dag_hash: Mapped[str | None] = mapped_column(SafeString(64))
    # The DAG version current when the run was created (``common.dag_versions``); NULL for a run
    # created before migration 0013 whose DAG had changed since (shown as "unknown"). No foreign
    # key: versions are never deleted (and SQLite then adds the column in place).
    dag_version_id: Mapped[int | None] = mapped_column(Integer)
    #: That version's number, read only when asked for (the run's JSON form): the scheduler's
    #: reads of runs never pay for it.
    dag_version_number: Mapped[int | None] = column_property(
        select(DagVersion.version_number).where(DagVersion.id == dag_version_id).scalar_subquery(),
        deferred=True,
    )

    task_instances: Mapped[list[TaskInstance]] = relationship(back_populates="dag_run")

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id"),
        UniqueConstraint("dag_id", "interval_key"),
        Index("ix_dag_run_state_dag", "state", "dag_id"),
        Index("ix_dag_run_dag_logical", "dag_id", "logical_date"),
        Index("ix_dag_run_backfill", "backfill_id", "state"),
        Index("ix_dag_run_dag_version_id", "dag_version_id"),
        # The history clean-up (``common.retention``): the newest finished run ended before a cutoff.
        Index("ix_dag_run_state_end_date", "state", "end_date", "id"),
    )


class TaskInstance(Base):
    __tablename__ = "task_instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("dag_run.id", ondelete="CASCADE"))
    dag_id: Mapped[str] = mapped_column(SafeString(ID_LEN))
    run_id: Mapped[str] = mapped_column(SafeString(ID_LEN))
    task_id: Mapped[str] = mapped_column(SafeString(ID_LEN))
    map_index: Mapped[int] = mapped_column(Integer, default=-1)
    state: Mapped[str] = mapped_column(SafeString(20))
    try_number: Mapped[int] = mapped_column(Integer, default=0)
    max_tries: Mapped[int] = mapped_column(Integer, default=1)
    queue: Mapped[str] = mapped_column(SafeString(100), default="default")
    priority: Mapped[int] = mapped_column(Integer, default=1)
    pool: Mapped[str | None] = mapped_column(SafeString(100))
    pool_slots: Mapped[int] = mapped_column(Integer, default=1)
    worker: Mapped[str | None] = mapped_column(SafeString(200))
    hostname: Mapped[str | None] = mapped_column(SafeString(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When the broker confirmed this try's task message (None: not yet, or it was queued again).
    # A queued task instance with a confirmed message is never re-published, however long it waits.
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    # up_for_retry: when the next try may start; up_for_reschedule: when the sensor pokes again.
    next_retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str | None] = mapped_column(LongText)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # A sensor in reschedule mode: how many times this try has been rescheduled (each re-dispatch
    # is a new delivery of the same try, told apart by this number), and when its first poke ran
    # (its timeout counts from there, across reschedules). Reset with every new try.
    reschedules: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    first_poke_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    dag_run: Mapped[DagRun] = relationship(back_populates="task_instances")

    __table_args__ = (
        UniqueConstraint("run_pk", "task_id", "map_index"),
        Index("ix_task_instance_state_queue", "state", "queue"),
        Index("ix_task_instance_dag_state", "dag_id", "state"),
        Index("ix_task_instance_worker_state", "worker", "state"),
        Index("ix_task_instance_run_state", "run_pk", "state"),
    )

    def label(self) -> str:
        return f"{self.dag_id}/{self.run_id}/{self.task_id}"


class TaskTry(Base):
    """An earlier try of a task instance, as it ended: the task instance row holds only its latest
    try, so before a retry or a clear starts the next one, the finished try is copied here (the
    task-instance page shows a chosen try's times, host and error from it)."""

    __tablename__ = "task_try"

    ti_id: Mapped[int] = mapped_column(ForeignKey("task_instance.id", ondelete="CASCADE"), primary_key=True)
    try_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(SafeString(20))
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(SafeString(200))
    hostname: Mapped[str | None] = mapped_column(SafeString(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(LongText)


class TaskResult(Base):
    """The JSON value a task returned, one row per try."""

    __tablename__ = "task_result"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ti_id: Mapped[int] = mapped_column(ForeignKey("task_instance.id", ondelete="CASCADE"))
    try_number: Mapped[int] = mapped_column(Integer)
    value_json: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("ti_id", "try_number"),)


class TaskRendered(Base):
    """The template fields of a try as rendered on the worker (a JSON object), one row per try."""

    __tablename__ = "task_rendered"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ti_id: Mapped[int] = mapped_column(ForeignKey("task_instance.id", ondelete="CASCADE"))
    try_number: Mapped[int] = mapped_column(Integer)
    fields_json: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("ti_id", "try_number"),)


class TaskLog(Base):
    """One chunk of a try's captured output. ``seq`` makes a redelivered chunk land once; each
    delivery of a try numbers its chunks from its own base (``worker.runtime.first_log_seq``), so
    the chunks of a delivery that died and of the one that finished the try are both kept."""

    __tablename__ = "task_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ti_id: Mapped[int] = mapped_column(ForeignKey("task_instance.id", ondelete="CASCADE"))
    try_number: Mapped[int] = mapped_column(Integer)
    # 64-bit (SQLite's INTEGER is already): deliveries start 2**32 apart.
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    text: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("ti_id", "try_number", "seq"),)


class Worker(Base):
    __tablename__ = "worker"

    name: Mapped[str] = mapped_column(SafeString(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(SafeString(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON, default=list)
    concurrency: Mapped[int] = mapped_column(Integer)
    running: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(SafeString(20), default="active")  # active|stopping|stopped|lost
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    last_heartbeat: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_worker_state_heartbeat", "state", "last_heartbeat"),)


class DagCode(Base):
    """The source of one DAG file, stored when the DAG processor parses it: the web shows a DAG's
    source from here and never opens a path (a DAG can say anything about its own ``fileloc``, and a
    web server on another host has no DAG files at all)."""

    __tablename__ = "dag_code"

    fileloc_hash: Mapped[str] = mapped_column(SafeString(64), primary_key=True)  # sha256 of fileloc
    fileloc: Mapped[str] = mapped_column(SafeString(1000))
    source: Mapped[str] = mapped_column(LongText)
    source_hash: Mapped[str] = mapped_column(SafeString(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: The last parse without errors: ``{"dags": [dag ids], "imports": {path: digest}}`` (modules
    #: from the DAG folder it imported); None when it had errors. A restart skips the file while
    #: all of it still holds.
    parse_record: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)

    @staticmethod
    def key(fileloc: str) -> str:
        """The primary key of a file's row (a path may be longer than an index allows)."""
        return hashlib.sha256(fileloc.encode()).hexdigest()


class ImportError_(Base):
    """A DAG file that failed to load: file, line and message, replaced on every parse."""

    __tablename__ = "import_error"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    filename: Mapped[str] = mapped_column(SafeString(1000))
    line: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(LongText)
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_import_error_filename", "filename", mysql_length=255),)


class Pool(Base):
    __tablename__ = "pool"

    name: Mapped[str] = mapped_column(SafeString(100), primary_key=True)
    slots: Mapped[int] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(SafeText)


class User(Base):
    __tablename__ = "user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(SafeString(100), unique=True)
    password_hash: Mapped[str] = mapped_column(SafeString(300))
    role: Mapped[str] = mapped_column(SafeString(20))  # admin | op | viewer
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiToken(Base):
    """A bearer token for scripts calling the web API. Only its SHA-256 is stored: the token itself
    is shown once, when it is issued."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(SafeString(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # None: never


class WebSession(Base):
    """A logged-in browser. The session cookie carries a random id whose SHA-256 is this row's key:
    logging out deletes the row, so a copy of the cookie stops working at once; a password change
    deletes every row of the user."""

    __tablename__ = "web_session"

    id_hash: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    username: Mapped[str | None] = mapped_column(SafeString(100))
    action: Mapped[str] = mapped_column(SafeString(50))
    dag_id: Mapped[str | None] = mapped_column(SafeString(ID_LEN), index=True)
    run_id: Mapped[str | None] = mapped_column(SafeString(ID_LEN))
    task_id: Mapped[str | None] = mapped_column(SafeString(ID_LEN))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SchedulerHeartbeat(Base):
    """One row per running scheduler process, for health checks."""

    __tablename__ = "scheduler_heartbeat"

    id: Mapped[str] = mapped_column(SafeString(200), primary_key=True)  # hostname:pid
    hostname: Mapped[str] = mapped_column(SafeString(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_heartbeat: Mapped[datetime] = mapped_column(UtcDateTime)


class ConnectionRow(Base):
    """A Connection (``hareflow.common.secrets``). ``password`` and ``extra`` hold Fernet tokens,
    never plaintext; the rest is not secret and is shown in lists as it is."""

    __tablename__ = "connection"

    conn_id: Mapped[str] = mapped_column(SafeString(ID_LEN), primary_key=True)
    conn_type: Mapped[str] = mapped_column(SafeString(100))
    description: Mapped[str | None] = mapped_column(SafeText)
    host: Mapped[str | None] = mapped_column(SafeString(1000))
    port: Mapped[int | None] = mapped_column(Integer)
    login: Mapped[str | None] = mapped_column(SafeText)
    password: Mapped[str | None] = mapped_column(SafeText)  # Fernet token
    schema: Mapped[str | None] = mapped_column(SafeString(1000))
    extra: Mapped[str | None] = mapped_column(SafeText)  # Fernet token of a JSON object
    # DAG ids allowed to read it from a task; None: every DAG.
    allowed_dag_ids: Mapped[list[str] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class VariableRow(Base):
    """A Variable: ``val`` is the Fernet token of its text (JSON text for structured values)."""

    __tablename__ = "variable"

    key: Mapped[str] = mapped_column(SafeString(ID_LEN), primary_key=True)
    val: Mapped[str] = mapped_column(SafeText)  # Fernet token
    description: Mapped[str | None] = mapped_column(SafeText)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AssetRow(Base):
    """An asset (``hareflow.common.dag.assets``), stored when a DAG naming it is parsed or its
    first event is recorded. Assets are never deleted: their events are history."""

    __tablename__ = "asset"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uri: Mapped[str] = mapped_column(SafeString(500), unique=True)
    name: Mapped[str | None] = mapped_column(SafeString(500))
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AssetEvent(Base):
    """One update of an asset: a producing task's successful try (``source_*``), or an event
    posted from outside (``source_*`` empty, ``created_by`` the user). One row per asset and
    successful try, whatever the number of copies of the result delivered."""

    __tablename__ = "asset_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"))
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_ti_id: Mapped[int | None] = mapped_column(Integer)
    source_dag_id: Mapped[str | None] = mapped_column(SafeString(ID_LEN))
    source_run_id: Mapped[str | None] = mapped_column(SafeString(ID_LEN))
    source_task_id: Mapped[str | None] = mapped_column(SafeString(ID_LEN))
    source_map_index: Mapped[int] = mapped_column(Integer, default=-1)
    source_try_number: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(SafeString(100))
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # NULLs (external events) are distinct on every supported database.
        UniqueConstraint("source_ti_id", "source_try_number", "asset_id"),
        # An asset's latest events, and the pending range of a consumer (id BETWEEN first AND last).
        Index("ix_asset_event_asset_id", "asset_id", "id"),
        # The history clean-up (``common.retention``): the newest event before a cutoff.
        Index("ix_asset_event_timestamp", "timestamp", "id"),
    )


class DagScheduleAsset(Base):
    """DAG ``dag_id``'s schedule names asset ``asset_id`` (from its serialized DAG)."""

    __tablename__ = "dag_schedule_asset"

    dag_id: Mapped[str] = mapped_column(SafeString(ID_LEN), primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True)

    __table_args__ = (Index("ix_dag_schedule_asset_asset_id", "asset_id"),)


class TaskOutletAsset(Base):
    """Task ``dag_id.task_id`` has asset ``asset_id`` among its outlets (from its serialized DAG)."""

    __tablename__ = "task_outlet_asset"

    dag_id: Mapped[str] = mapped_column(SafeString(ID_LEN), primary_key=True)
    task_id: Mapped[str] = mapped_column(SafeString(ID_LEN), primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True)

    __table_args__ = (Index("ix_task_outlet_asset_asset_id", "asset_id"),)


class AssetDagRunQueue(Base):
    """Asset ``asset_id`` has events DAG ``target_dag_id`` has not yet consumed: those with ids
    from ``first_event_id`` to ``last_event_id``. Written with each event, deleted by the run
    that consumes them, so it holds one row per waiting (consumer, asset) pair, never history."""

    __tablename__ = "asset_dag_run_queue"

    target_dag_id: Mapped[str] = mapped_column(SafeString(ID_LEN), primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True)
    first_event_id: Mapped[int] = mapped_column(Integer)
    last_event_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DagRunAssetEvent(Base):
    """Asset event ``event_id`` is one of those that started run ``run_pk``."""

    __tablename__ = "dag_run_asset_event"

    run_pk: Mapped[int] = mapped_column(ForeignKey("dag_run.id", ondelete="CASCADE"), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("asset_event.id", ondelete="CASCADE"), primary_key=True)

    __table_args__ = (Index("ix_dag_run_asset_event_event_id", "event_id"),)


class DeadLetter(Base):
    """A message moved to the dead-letter queue, as the dead-letter consumer recorded it: where it
    came from, why, and its whole body and headers (so a requeue publishes it exactly as it was).
    ``fingerprint`` identifies one dead-lettering (``hareflow.common.dead_letters``), so a copy
    delivered twice is stored once. Rows are kept after a requeue or discard, for the audit trail;
    ``state`` says which (``dead``, ``requeued``, ``discarded``), ``state_by``/``state_at`` who and
    when."""

    __tablename__ = "dead_letter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(SafeString(64), unique=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    queue: Mapped[str] = mapped_column(SafeString(255))
    reason: Mapped[str] = mapped_column(SafeText)
    deliveries: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(SafeString(255))
    content_type: Mapped[str | None] = mapped_column(SafeString(255))
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    body: Mapped[bytes] = mapped_column(LongBinary)
    #: The body's size as received; more than ``len(body)`` when only its first bytes were kept.
    body_size: Mapped[int] = mapped_column(Integer)
    #: The hareflow message type the body decodes to (task, result, log, heartbeat), or None.
    message_type: Mapped[str | None] = mapped_column(SafeString(50))
    ti_id: Mapped[int | None] = mapped_column(Integer)
    dag_id: Mapped[str | None] = mapped_column(SafeString(ID_LEN))
    run_id: Mapped[str | None] = mapped_column(SafeString(ID_LEN))
    task_id: Mapped[str | None] = mapped_column(SafeString(ID_LEN))
    map_index: Mapped[int | None] = mapped_column(Integer)
    try_number: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(SafeString(20), default="dead")
    state_by: Mapped[str | None] = mapped_column(SafeString(100))
    state_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        # The page and the depth per queue: rows of a state, by queue, newest first.
        Index("ix_dead_letter_state_queue", "state", "queue"),
        Index("ix_dead_letter_received_at", "received_at"),
    )
