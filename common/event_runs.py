"""Runs started by events (broker messages, webhook calls): exactly one run per deduplication key.

An event's key becomes its run id (``event__<key>``), and ``(dag_id, run_id)`` is unique in
``dag_run``: the database, not the caller, makes a second delivery of the same event a no-op. Runs
are inserted in batches with the dialect's conflict-tolerant insert (``ON CONFLICT DO NOTHING`` on
PostgreSQL and SQLite, ``ON DUPLICATE KEY UPDATE run_id = run_id`` on MariaDB/MySQL), so a batch
holding keys that are already stored (a redelivery, a retried webhook, another scheduler's
concurrent insert) stores the others and skips those, in one transaction.

An event run's logical date is when the event was received; its ``interval_key`` is NULL (the
per-logical-date uniqueness is for scheduled, backfill and manual runs: two events in the same
microsecond must not collide), and it does not move the DAG's schedule.

An event's key (:func:`event_key`): the body field the trigger's ``dedupe_key`` names, else the
transport's id (AMQP ``message_id``, webhook ``Idempotency-Key`` header), else a hash of the body.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hareflow.common.dag_versions import run_version
from hareflow.common.db import Dag, DagRun
from hareflow.common.runs import RunError, check_conf
from hareflow.common.states import RunState
from sqlalchemy import select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session

RUN_TYPE = "event"
#: A key used in the run id as it is: the run id pattern minus ``~``, which marks hashed keys.
READABLE_KEY = re.compile(r"^[A-Za-z0-9_.:+-]{1,200}$")
MAX_KEY_LENGTH = 1000
#: Rows per executemany (SQLAlchemy splits it further into statements within each driver's limits).
INSERT_CHUNK = 500


class EventError(RunError):
    """An event that cannot start a run (bad body, missing key field); ``field`` names what is wrong."""

    def __init__(self, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Event:
    """One decoded event: the run's conf and its deduplication key."""

    conf: dict[str, Any]
    key: str

    @property
    def run_id(self) -> str:
        return event_run_id(self.key)


def decode_body(body: bytes) -> dict[str, Any]:
    """An event body as a JSON object, or an EventError."""
    try:
        value = json.loads(body.decode("utf-8")) if body.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventError(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise EventError("the body nests too deeply") from None
    if not isinstance(value, dict):
        raise EventError(f"the body must be a JSON object, not {type(value).__name__}")
    return value


def body_field(body: dict[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``body``; an EventError naming the field if it is missing."""
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise EventError(f"the body has no field {path!r} (the DAG's dedupe_key)", path)
        value = value[part]
    return value


def event_key(body: dict[str, Any], dedupe_key: str | None, transport_id: str | None) -> str:
    """An event's deduplication key: the body field ``dedupe_key`` names if the trigger names one,
    else the transport's id (AMQP ``message_id``, webhook ``Idempotency-Key``), else the SHA-256
    of the body's canonical JSON: a redelivered message always carries the same body, so even an
    event without any id is one run however often it is delivered (identical bodies are one event)."""
    if dedupe_key is not None:
        value = body_field(body, dedupe_key)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise EventError(
                f"field {dedupe_key!r} (the DAG's dedupe_key) must be a non-empty string or an integer",
                dedupe_key,
            )
        key = str(value)
    elif transport_id:
        key = transport_id
    else:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "sha256-" + hashlib.sha256(canonical.encode()).hexdigest()
    if len(key) > MAX_KEY_LENGTH:
        raise EventError(f"the event's key is over {MAX_KEY_LENGTH} characters", dedupe_key or "key")
    return key


def event_run_id(key: str) -> str:
    """The run id of the event with ``key``: readable when the key fits a run id, else a hash."""
    if READABLE_KEY.match(key):
        return f"event__{key}"
    return "event__~" + hashlib.sha256(key.encode()).hexdigest()[:48]


def make_event(
    params: dict[str, Any], body: dict[str, Any], dedupe_key: str | None, transport_id: str | None
) -> Event:
    """Validate ``body`` as a run's conf (the same check as a manual trigger) and key it."""
    conf = check_conf(params, body)
    return Event(conf=conf, key=event_key(conf, dedupe_key, transport_id))


def insert_event_runs(
    session: Session, dag: Dag, events: Sequence[Event], now: datetime, *, triggered_by: str
) -> int:
    """Insert a queued run per event whose key the DAG has no run for; return how many were new.

    One statement, tolerant of keys that exist or are being inserted by another transaction (it
    waits for that one and skips the row). The caller owns the transaction and commits it.
    """
    unique: dict[str, Event] = {}
    for ev in events:
        unique.setdefault(ev.run_id, ev)
    if not unique:
        return 0
    rows = [
        {
            "dag_id": dag.dag_id,
            "run_id": run_id,
            "run_type": RUN_TYPE,
            "state": RunState.QUEUED.value,
            "logical_date": now,
            "interval_key": None,
            "data_interval_start": now,
            "data_interval_end": now,
            "conf": ev.conf,
            "triggered_by": triggered_by,
            "queued_at": now,
            **run_version(dag),
        }
        # In key order: two schedulers inserting overlapping batches then wait for each other's
        # rows in the same order instead of deadlocking.
        for run_id, ev in sorted(unique.items())
    ]
    created = 0
    dialect = session.get_bind().dialect.name
    statement = _insert_ignoring_duplicates(dialect)
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        if dialect in ("mysql", "mariadb"):
            # No RETURNING here, and the driver counts a duplicate as a matched row
            # (CLIENT_FOUND_ROWS): count the new keys first. Only a writer racing on the same keys
            # can make this count too high; the unique key still stores one run.
            known = set(
                session.scalars(
                    select(DagRun.run_id).where(
                        DagRun.dag_id == dag.dag_id, DagRun.run_id.in_([r["run_id"] for r in chunk])
                    )
                )
            )
            session.execute(statement, chunk)
            created += len(chunk) - len(known)
            continue
        # One statement compiled once (cached) and sent as batched multi-row VALUES by SQLAlchemy's
        # "insertmanyvalues"; RETURNING names exactly the rows inserted (a skipped duplicate
        # returns nothing), which an executemany's row count would not.
        created += len(session.execute(statement, chunk).all())
    return created


def _insert_ignoring_duplicates(dialect: str) -> Any:
    table = DagRun.__table__
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing().returning(table.c.id)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing().returning(table.c.id)
    if dialect in ("mysql", "mariadb"):
        # Not INSERT IGNORE: that would also swallow every other error (a too-long value...).
        statement = mysql.insert(table)
        return statement.on_duplicate_key_update({"run_id": statement.inserted.run_id})
    raise NotImplementedError(f"event runs do not support {dialect!r}")  # pragma: no cover
