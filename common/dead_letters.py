"""Dead letters: messages moved to ``<prefix>.dead``, kept in the metastore to be looked at,
requeued or discarded.

A RabbitMQ queue cannot be browsed without changing it (``basic.get`` plus a requeue reorders it
and marks every message redelivered; the management plugin may not be enabled), so the
results-consumer side consumes the dead-letter queue and stores each message as a
:class:`~hareflow.common.db.DeadLetter` row, acked after the commit. The row keeps the whole body
(up to :data:`MAX_BODY`) and headers, so a requeue publishes exactly what was dead-lettered.

A row is keyed by a fingerprint of one dead-lettering: the ``x-hareflow-dead-id`` header our own
dead-lettering sets, else (a message RabbitMQ dead-lettered itself: rejected, expired, over a
length or delivery limit) the first ``x-death`` entry's queue, reason, count and time with the
message id and body. A copy delivered again after a crash between commit and ack, or seen by two
consumers, is stored once; the same message dead-lettered again after a requeue is a new row.

Requeue (:func:`requeue`) publishes the stored body with its original headers straight to the queue
it was dead-lettered from, with publisher confirms, and the dead-lettering headers removed (so its
delivery count starts again). It refuses what would only come back or run a try nobody waits for:
see :func:`requeue_refusal`. Discard marks the row; rows are never deleted by either, so the
audit trail keeps them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hareflow.common.audit import audit
from hareflow.common.broker.base import (
    DEAD_ID_HEADER,
    DELIVERIES_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    REQUEUED_FROM_HEADER,
    Executor,
)
from hareflow.common.db import DeadLetter, TaskInstance
from hareflow.common.db.upsert import insert_if_absent, lock_row
from hareflow.common.messages import (
    HeartbeatMessage,
    LogMessage,
    MessageError,
    ResultMessage,
    StateEvent,
    TaskMessage,
    decode,
)
from hareflow.common.records import iso
from sqlalchemy import func, select
from sqlalchemy.orm import Session

#: Bodies up to this size are kept whole; a larger one keeps its first MAX_BODY bytes (shown, but
#: not requeued: it would not be the same message).
MAX_BODY = 1 << 20
STATES = ("dead", "requeued", "discarded")
#: The states a list shows unless asked for another: what still needs someone's attention.
DEFAULT_STATE = "dead"
PREVIEW_CHARS = 160
#: Headers that describe a dead-lettering, removed on requeue (the requeued message is delivered
#: as new: ``x-hareflow-deliveries`` starts again, RabbitMQ's ``x-death`` history goes).
DEAD_LETTERING_HEADERS = frozenset(
    {
        DEAD_ID_HEADER,
        DELIVERIES_HEADER,
        QUEUE_HEADER,
        REASON_HEADER,
        REQUEUED_FROM_HEADER,
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
#: The task instance states in which a dead-lettered task message is still what the metastore
#: waits for (the try it names was dispatched and has not started).
REQUEUABLE_TI_STATES = frozenset({"queued"})


class DeadLetterError(Exception):
    """A request about dead letters that cannot be done; ``status`` is the HTTP status."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownDeadLetter(DeadLetterError):
    status = 404


class RequeueRefused(DeadLetterError):
    status = 409


# -- recording -------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A header value as JSON: AMQP tables hold bytes, timestamps and decimals too."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def fingerprint(body: bytes, headers: Mapping[str, Any], message_id: str | None) -> str:
    """What identifies one dead-lettering (see the module docstring)."""
    digest = hashlib.sha256()
    dead_id = headers.get(DEAD_ID_HEADER)
    if dead_id:
        digest.update(b"id\0" + str(dead_id).encode())
        return digest.hexdigest()
    death = _first_death(headers)
    ident = [message_id, *(str(death.get(k)) for k in ("queue", "reason", "count", "time"))]
    digest.update(json.dumps(ident).encode() + b"\0" + body)
    return digest.hexdigest()


def describe(
    body: bytes,
    headers: Mapping[str, Any],
    *,
    message_id: str | None,
    content_type: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The row to store for one dead-lettered copy: pure, and tolerant of anything in it."""
    plain = jsonable(dict(headers))
    death = _first_death(plain)
    if REASON_HEADER in plain:
        reason = str(plain[REASON_HEADER])
        queue = str(plain.get(QUEUE_HEADER) or "")
        deliveries = _int(plain.get(DELIVERIES_HEADER), 1)
    elif death:
        reason = f"dead-lettered by RabbitMQ: {death.get('reason', 'unknown reason')}"
        queue = str(death.get("queue") or "")
        deliveries = _int(plain.get("x-delivery-count"), 0) + _int(plain.get(DELIVERIES_HEADER), 1)
    else:
        reason, queue, deliveries = "published to the dead-letter exchange directly", "", 1
    row: dict[str, Any] = {
        "fingerprint": fingerprint(body, headers, message_id),
        "received_at": now,
        "queue": queue[:255],
        "reason": reason,
        "deliveries": deliveries,
        "message_id": (message_id or None) and message_id[:255],
        "content_type": (content_type or None) and content_type[:255],
        "headers": plain,
        "body": body[:MAX_BODY],
        "body_size": len(body),
        "message_type": None,
        "ti_id": None,
        "dag_id": None,
        "run_id": None,
        "task_id": None,
        "map_index": None,
        "try_number": None,
        "state": "dead",
    }
    try:
        message = decode(body)
    except (MessageError, RecursionError):
        return row
    row["message_type"] = message.type
    if isinstance(message, TaskMessage | ResultMessage | LogMessage):
        key = message.key
        row.update(
            ti_id=key.ti_id,
            dag_id=key.dag_id,
            run_id=key.run_id,
            task_id=key.task_id,
            map_index=key.map_index,
            try_number=key.try_number,
        )
    return row


def record(session: Session, rows: Sequence[dict[str, Any]]) -> list[DeadLetter]:
    """Insert each row unless its fingerprint is stored (by an earlier delivery of the same copy,
    or by another consumer right now); return the stored rows, new or not."""
    for values in rows:
        insert_if_absent(session, DeadLetter.__table__, values)  # type: ignore[arg-type]
    prints = [r["fingerprint"] for r in rows]
    if not prints:
        return []
    return list(session.scalars(select(DeadLetter).where(DeadLetter.fingerprint.in_(prints))))


def dead_letter_event(row: DeadLetter) -> StateEvent:
    """What tells the Dead letters pages (room ``deadletters``) that a row changed."""
    return StateEvent(
        kind="deadletter",
        dag_id=row.dag_id or "",
        run_id=row.run_id,
        task_id=row.task_id,
        state=row.state,
        at=time.time(),
    )


# -- reading ---------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """``text`` with control characters (NUL, escape sequences...) shown as ``\\xNN``."""
    return "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text)


def body_text(body: bytes) -> str:
    """The body as text for people: UTF-8 with undecodable bytes and control characters escaped;
    JSON pretty-printed."""
    text = body.decode("utf-8", "backslashreplace")
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return printable(text)


def preview(body: bytes, limit: int = PREVIEW_CHARS) -> str:
    text = printable(body[: limit * 4].decode("utf-8", "backslashreplace")).replace("\n", " ")
    return text if len(text) <= limit and len(body) <= limit * 4 else text[: limit - 1] + "…"


def dead_letter_dict(row: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    """A dead letter's JSON form (the API, ``hareflow deadletters -o json``; documented in
    docs/cli.md). ``full`` adds the headers and the body (as text and, exact, as base64)."""
    out: dict[str, Any] = {
        "id": row.id,
        "state": row.state,
        "received_at": iso(row.received_at),
        "queue": row.queue,
        "reason": row.reason,
        "deliveries": row.deliveries,
        "message_id": row.message_id,
        "message_type": row.message_type,
        "dag_id": row.dag_id,
        "run_id": row.run_id,
        "task_id": row.task_id,
        "map_index": row.map_index,
        "try_number": row.try_number,
        "body_size": row.body_size,
        "preview": preview(row.body),
        "state_by": row.state_by,
        "state_at": iso(row.state_at),
    }
    if full:
        out.update(
            content_type=row.content_type,
            headers=row.headers,
            truncated=row.body_size > len(row.body),
            body=body_text(row.body),
            body_base64=base64.b64encode(row.body).decode(),
        )
    return out


def list_dead_letters(
    session: Session,
    *,
    queue: str | None = None,
    state: str | None = DEFAULT_STATE,
    limit: int = 100,
    offset: int = 0,
) -> list[DeadLetter]:
    """Newest first; ``state`` None: every state."""
    query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit).offset(offset)
    if state is not None:
        query = query.where(DeadLetter.state == check_state(state))
    if queue:
        query = query.where(DeadLetter.queue == queue)
    return list(session.scalars(query))


def check_state(state: str) -> str:
    if state not in STATES:
        raise DeadLetterError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    return state


def get_dead_letter(session: Session, dead_letter_id: int, *, lock: bool = False) -> DeadLetter:
    row = lock_row(session, DeadLetter, dead_letter_id) if lock else session.get(DeadLetter, dead_letter_id)
    if row is None:
        raise UnknownDeadLetter(f"no dead letter {dead_letter_id} (see `hareflow deadletters list`)")
    return row


def depth_by_queue(session: Session) -> dict[str, int]:
    """Dead letters neither requeued nor discarded, by the queue they came from."""
    rows = session.execute(
        select(DeadLetter.queue, func.count()).where(DeadLetter.state == "dead").group_by(DeadLetter.queue)
    )
    return {queue: int(n) for queue, n in rows}


def source_queues(session: Session) -> list[str]:
    """Every queue some dead letter came from (the page's queue filter)."""
    return list(session.scalars(select(DeadLetter.queue).distinct().order_by(DeadLetter.queue)))


# -- requeue and discard ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskState:
    """What the metastore says of the task instance a dead-lettered task message names."""

    state: str
    try_number: int


def _clear_hint(row: DeadLetter) -> str:
    index = f" (map index {row.map_index})" if row.map_index is not None and row.map_index >= 0 else ""
    return (
        f"clear the task instance to run it again (Clear on its page, or `hareflow tasks clear "
        f"{row.dag_id} --run-id {row.run_id} --task '^{row.task_id}$'`{index}), then discard this dead letter"
    )


def queue_kind(name: str, prefix: str | None) -> str:
    """``task``, ``results`` or ``other`` (a BrokerTrigger's queue, say) for a dead letter's queue;
    ``prefix`` is the broker prefix, None for the local executor (whose queues are all task
    queues but ``(results)``)."""
    if prefix is None:
        return "results" if name == "(results)" else "task"
    if name == f"{prefix}.results":
        return "results"
    return "task" if name.startswith(f"{prefix}.q.") else "other"


def requeue_refusal(row: DeadLetter, ti: TaskState | None, *, kind: str) -> str | None:
    """Why this dead letter must not be requeued, or None. Pure: ``ti`` is the task instance a task
    message names (None if there is none), ``kind`` its queue's (:func:`queue_kind`).

    - Only a row still ``dead``, with its whole body and a queue to go back to.
    - A task message only while its task instance still waits for that very try (``queued`` at
      the try number it carries: RabbitMQ rejected the message, say). A try that has ended (failed
      after too many deliveries, or refused by the worker) or moved on would run as a zombie nobody
      records: the task instance must be cleared instead, which dispatches a new try.
    - In a task or results queue, a body that is not a JSON object, or a hareflow message of the
      wrong kind for its queue (a heartbeat in a task queue), cannot be read by any hareflow
      component: it would be dead-lettered again at once. A JSON object hareflow could not decode
      (an unknown type or protocol version: a newer or older component sent it) may be readable
      after an upgrade, and can be requeued.
    - In other queues (a BrokerTrigger's) anything can be requeued: their consumer's rules (a DAG's
      params) may have changed since.
    """
    if row.state != "dead":
        return f"dead letter {row.id} was already {row.state}"
    if row.body_size > len(row.body):
        return (
            f"only the first {len(row.body)} bytes of its {row.body_size}-byte body were kept: "
            "a requeue would not be the same message"
        )
    if not row.queue:
        return "it does not say which queue it came from"
    if row.message_type == TaskMessage.type:
        if ti is None:
            return f"its task instance ({row.dag_id}/{row.run_id}/{row.task_id}) no longer exists: discard it"
        if ti.state not in REQUEUABLE_TI_STATES or ti.try_number != row.try_number:
            return (
                f"its task instance {row.dag_id}/{row.run_id}/{row.task_id} is {ti.state} at try "
                f"{ti.try_number}, and this message is try {row.try_number}, which is no longer "
                f"waited for: it would run as a zombie; {_clear_hint(row)}"
            )
        if kind != "results":
            return None
    if kind == "other":
        return None
    if row.message_type is None:
        try:
            readable = isinstance(json.loads(row.body), dict)
        except (ValueError, RecursionError):
            readable = False
        if readable:
            return None
        return (
            "its body is not a JSON object: no hareflow component can read it, it would only be "
            "dead-lettered again; discard it"
        )
    fits = {
        "task": (TaskMessage.type,),
        "results": (ResultMessage.type, LogMessage.type, HeartbeatMessage.type),
    }
    if row.message_type in fits.get(kind, ()):
        return None
    return (
        f"a {row.message_type!r} message does not belong in {row.queue}: it would only be dead-lettered again"
    )


def requeue_headers(row: DeadLetter) -> dict[str, Any]:
    """The original headers, without those of the dead-lettering, marked with where it came from."""
    headers = {k: v for k, v in (row.headers or {}).items() if k not in DEAD_LETTERING_HEADERS}
    headers[REQUEUED_FROM_HEADER] = row.id
    return headers


def _task_state(session: Session, row: DeadLetter) -> TaskState | None:
    if row.message_type != "task" or row.ti_id is None:
        return None
    ti = session.get(TaskInstance, row.ti_id)
    if ti is None or (ti.dag_id, ti.run_id, ti.task_id) != (row.dag_id, row.run_id, row.task_id):
        return None
    return TaskState(ti.state, ti.try_number)


def requeue(
    session: Session,
    executor: Executor,
    dead_letter_id: int,
    *,
    username: str | None,
    origin: str | None,
    prefix: str | None,
    now: datetime | None = None,
) -> DeadLetter:
    """Publish the dead letter back to its queue (confirmed), then mark it requeued and audit it,
    in the caller's transaction. The row is locked first, so two requeues of one row publish once.
    ``prefix`` is the broker prefix (None: the local executor), for :func:`queue_kind`.

    The publish comes before the commit: if the commit then fails, the message is back in its
    queue while the row still says ``dead`` (a second requeue would publish a second copy); the
    other order could lose the message. Raises RequeueRefused, UnknownDeadLetter, BrokerError."""
    now = now or datetime.now(UTC)
    row = get_dead_letter(session, dead_letter_id, lock=True)
    refusal = requeue_refusal(row, _task_state(session, row), kind=queue_kind(row.queue, prefix))
    if refusal is not None:
        raise RequeueRefused(f"dead letter {row.id} cannot be requeued: {refusal}")
    executor.requeue_dead_letter(
        row.queue,
        row.body,
        headers=requeue_headers(row),
        message_id=row.message_id,
        content_type=row.content_type,
    )
    _settle(session, row, "requeued", "dead_letter_requeue", username, origin, now)
    return row


def discard(
    session: Session,
    dead_letter_id: int,
    *,
    username: str | None,
    origin: str | None,
    now: datetime | None = None,
) -> DeadLetter:
    """Mark the dead letter discarded (the row stays, for the audit trail) and audit it."""
    now = now or datetime.now(UTC)
    row = get_dead_letter(session, dead_letter_id, lock=True)
    if row.state != "dead":
        raise RequeueRefused(f"dead letter {row.id} was already {row.state}")
    _settle(session, row, "discarded", "dead_letter_discard", username, origin, now)
    return row


def _settle(
    session: Session,
    row: DeadLetter,
    state: str,
    action: str,
    username: str | None,
    origin: str | None,
    now: datetime,
) -> None:
    row.state, row.state_by, row.state_at = state, username, now
    details = {
        "dead_letter_id": row.id,
        "queue": row.queue,
        "reason": row.reason,
        "message_id": row.message_id,
    }
    audit(
        session,
        action,
        username=username,
        dag_id=row.dag_id,
        run_id=row.run_id,
        task_id=row.task_id,
        details=details,
        origin=origin,
        now=now,
    )
