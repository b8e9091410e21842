"""The wire protocol: typed, immutable, versioned JSON messages.

Every message is one JSON object with ``"type"`` (the discriminator) and ``"v"`` (the protocol
version). Bodies are UTF-8 JSON; there is no pickle anywhere on the wire. A message is stamped with
the lowest version that can express it, and every version listed here is decoded:

- ``1``: the messages below.
- ``2``: a ``task`` message may carry ``expand_args``, a mapped task instance's own keyword
  arguments (its element of the expansion). Only such messages are stamped 2, so a worker that
  reads version 1 only still runs every task that is not mapped.
- ``3``: a ``task`` message may carry ``reschedules`` (how many times this try of a sensor in
  reschedule mode has been rescheduled: each re-dispatch is a new delivery of the same try, and
  the number tells them apart) and ``first_poke_at`` (epoch seconds of the try's first poke, which
  its timeout counts from). Only such messages are stamped 3.
- ``4``: a ``task`` message may carry ``triggering_asset_events`` (a run an asset event started:
  asset URI -> the events, see ``hareflow.common.assets``). Only such messages are stamped 4.

``task``      scheduler -> worker, on ``<prefix>.tasks`` routed by queue name. Everything a worker
              needs to run one try: the DAG file, the try, the run's conf and params, and the return
              values of the upstream tasks it consumes. Workers need no database access.
``result``    worker -> results consumer: ``running``, then ``success`` (with the JSON return value),
              ``failed`` (with the error) or ``skipped`` (the task raised SkipTask; the reason is
              in ``error``). Identified by task-instance id and try number. Optional fields, absent
              when unset (so a result without them is encoded exactly as before they existed):
              ``no_retry`` (true: the task raised FailTask, fail it whatever tries are left),
              ``skip_task_ids`` with ``skip_reason`` (a branch or short-circuit success: the
              downstream task ids of the same run to skip, and why), ``rendered_json`` (final
              reports of a task with template fields: them rendered, a JSON object),
              ``reschedules`` (copied from the task message: which delivery of the try reports)
              and, with outcome ``up_for_reschedule`` (a sensor's poke found nothing and returns
              its slot), ``reschedule_at`` and ``first_poke_at`` (epoch seconds),
              and, with outcome ``success``, ``outlet_events`` (a task with outlets: one
              ``{"uri", "extra"}`` per outlet, recorded as asset events with the success).
``log``       worker -> results consumer: one chunk of a try's captured output, numbered by ``seq``
              so a redelivered chunk is stored once.
``heartbeat`` worker -> results consumer: who it is, what it consumes, what it is running.
``lookup``    worker -> control plane, on ``<prefix>.lookups`` (transient, with an expiry): a task
              asks for one connection (``kind`` ``connection``) or variable (``variable``) by
              ``name``, or for another DAG's run or task state (``task_state``, ``name`` a JSON
              object ``{"dag_id", "logical_date", "task_id"}``, task_id null for the run: the
              ``ExternalTaskSensor``); ``key`` is the asking try, filled in by the worker from the
              task message (never by the task), so the control plane can check who asks.
``lookup_reply`` control plane -> the asking worker, over RabbitMQ's direct reply-to (never queued,
              never on the broker's disk): ``ok`` with ``value`` (the connection's JSON form or the
              variable's text, null when not defined) or ``error`` with ``code`` (``denied``,
              ``not_found``, ``error``).
``state``     a state changed (one run, task instance, log or DAG). Kind ``stop`` is a request,
              not a change already shown: the try it names (``ti_id``, ``try_number``) must stop
              where it runs, its task instance having been given ``state`` (the scheduler sends
              one per running try of a run past its ``dagrun_timeout``). A worker running that
              try kills it; every other subscriber ignores it.
``events``    results consumer / scheduler -> everyone (fanout, transient): a batch of ``state``
              events, one broker message for all the changes of one transaction.

Decoding happens at the edge with :func:`decode`; anything malformed raises one error,
:class:`MessageError`, and the consumer dead-letters the message instead of crashing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

PROTOCOL_VERSION = 4
#: The versions :func:`decode` accepts.
SUPPORTED_VERSIONS = frozenset({1, 2, 3, 4})


class MessageError(ValueError):
    """A message body that is not a valid hareflow message."""


@dataclass(frozen=True)
class TaskKey:
    """Identifies one try of one task instance."""

    ti_id: int
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int

    def label(self) -> str:
        return f"{self.dag_id}/{self.run_id}/{self.task_id}#{self.try_number}"


@dataclass(frozen=True)
class _Message:
    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: the payloads (conf, params, results) are already JSON-shaped, and
        # dataclasses.asdict's deep copy of them showed up in profiles of the hot path.
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        if "key" in body:
            body["key"] = body["key"].__dict__.copy()
        body["type"] = self.type
        body["v"] = self.version()
        return body

    def version(self) -> int:
        """The lowest protocol version that can express this message."""
        return 1

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str).encode()


@dataclass(frozen=True)
class TaskMessage(_Message):
    type: ClassVar[str] = "task"
    key: TaskKey
    max_tries: int
    dag_file: str
    queue: str
    execution_timeout: float | None
    logical_date: str | None
    data_interval_start: str | None
    data_interval_end: str | None
    conf: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    upstream_results: dict[str, Any] = field(default_factory=dict)
    published_at: float = 0.0
    expand_args: dict[str, Any] | None = None  # v2: a mapped instance's own keyword arguments
    reschedules: int = 0  # v3: which delivery of a rescheduled sensor's try this is
    first_poke_at: float | None = None  # v3: when the try's first poke ran (epoch seconds)
    #: v4: the asset events that started an asset-triggered run (URI -> events), else None
    triggering_asset_events: dict[str, list[dict[str, Any]]] | None = None

    def version(self) -> int:
        if self.triggering_asset_events is not None:
            return 4
        if self.reschedules or self.first_poke_at is not None:
            return 3
        return 1 if self.expand_args is None else 2

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.expand_args is None:
            del body["expand_args"]  # the version 1 form, readable by every worker
        if not self.reschedules:
            del body["reschedules"]
        if self.first_poke_at is None:
            del body["first_poke_at"]
        if self.triggering_asset_events is None:
            del body["triggering_asset_events"]
        return body


@dataclass(frozen=True)
class ResultMessage(_Message):
    type: ClassVar[str] = "result"
    key: TaskKey
    outcome: str  # running | success | failed
    worker: str
    hostname: str
    pid: int
    at: float
    result_json: str | None = None  # the return value, already JSON-encoded and size-checked
    error: str | None = None
    started_at: float | None = None  # when the try started (a short try sends no running report)
    no_retry: bool = False
    skip_task_ids: list[str] | None = None
    skip_reason: str | None = None
    rendered_json: str | None = None  # final reports: the try's rendered template fields (JSON object)
    reschedules: int = 0  # the task message's: which delivery of a rescheduled try reports
    reschedule_at: float | None = None  # up_for_reschedule: when to poke again (epoch seconds)
    first_poke_at: float | None = None  # up_for_reschedule: when the try's first poke ran
    outlet_events: list[dict[str, Any]] | None = None  # a success's asset events: {"uri", "extra"}

    _OPTIONAL: ClassVar[dict[str, Any]] = {
        "no_retry": False,
        "skip_task_ids": None,
        "skip_reason": None,
        "rendered_json": None,
        "reschedules": 0,
        "reschedule_at": None,
        "first_poke_at": None,
        "outlet_events": None,
    }

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        for name, default in self._OPTIONAL.items():
            if body[name] == default:
                del body[name]
        return body


@dataclass(frozen=True)
class LogMessage(_Message):
    type: ClassVar[str] = "log"
    key: TaskKey
    seq: int
    text: str
    at: float


@dataclass(frozen=True)
class HeartbeatMessage(_Message):
    type: ClassVar[str] = "heartbeat"
    worker: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    running: list[int]  # task-instance ids held right now
    at: float
    state: str = "active"  # active | stopping | stopped


#: The ``kind`` of a state event asking the worker running a try to stop it.
STOP_EVENT = "stop"


@dataclass(frozen=True)
class StateEvent(_Message):
    type: ClassVar[str] = "state"
    kind: str  # "task" | "run" | "dag" | "asset" | "deadletter" | "stop"
    dag_id: str
    run_id: str | None
    state: str
    at: float
    task_id: str | None = None
    map_index: int = -1
    try_number: int = 0
    ti_id: int | None = None


@dataclass(frozen=True)
class EventBatch(_Message):
    type: ClassVar[str] = "events"
    events: list[StateEvent]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "v": self.version(), "events": [e.to_dict() for e in self.events]}


@dataclass(frozen=True)
class LookupRequest(_Message):
    type: ClassVar[str] = "lookup"
    kind: str  # connection | variable | task_state
    name: str
    key: TaskKey


@dataclass(frozen=True)
class LookupReply(_Message):
    type: ClassVar[str] = "lookup_reply"
    ok: bool
    value: Any = None
    error: str | None = None
    code: str | None = None  # denied | not_found | error


Message = (
    TaskMessage
    | ResultMessage
    | LogMessage
    | HeartbeatMessage
    | StateEvent
    | EventBatch
    | LookupRequest
    | LookupReply
)

_TYPES: dict[str, type[_Message]] = {
    cls.type: cls
    for cls in (
        TaskMessage,
        ResultMessage,
        LogMessage,
        HeartbeatMessage,
        StateEvent,
        EventBatch,
        LookupRequest,
        LookupReply,
    )
}


def _build_key(raw: object) -> TaskKey:
    if not isinstance(raw, Mapping):
        raise MessageError("'key' must be an object")
    try:
        return TaskKey(
            ti_id=int(raw["ti_id"]),
            dag_id=str(raw["dag_id"]),
            run_id=str(raw["run_id"]),
            task_id=str(raw["task_id"]),
            map_index=int(raw["map_index"]),
            try_number=int(raw["try_number"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"bad task key: {exc!r}") from None


def decode(body: bytes | str) -> Message:
    """Parse and validate one message body; raise :class:`MessageError` if it is not one of ours."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MessageError("not a JSON object")
    kind = raw.pop("type", None)
    version = raw.pop("v", None)
    cls = _TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise MessageError(f"unknown message type {kind!r}")
    if version not in SUPPORTED_VERSIONS:
        raise MessageError(f"unsupported protocol version {version!r} for {kind!r}")
    if "key" in raw:
        raw["key"] = _build_key(raw["key"])
    if cls is EventBatch:
        items = raw.get("events")
        if not isinstance(items, list):
            raise MessageError("'events' must be a list")
        decoded = []
        for item in items:
            if not isinstance(item, dict) or item.get("type") != StateEvent.type:
                raise MessageError("an event batch holds only state events")
            fields_ = {k: v for k, v in item.items() if k not in ("type", "v")}
            try:
                decoded.append(StateEvent(**fields_))
            except TypeError as exc:
                raise MessageError(f"bad event in batch: {exc}") from None
        raw["events"] = decoded
    try:
        message = cls(**raw)
    except TypeError as exc:
        raise MessageError(f"bad {kind!r} message: {exc}") from None
    _check_types(message)
    return message  # type: ignore[return-value]


def _check_types(message: _Message) -> None:
    if isinstance(message, ResultMessage):
        if message.outcome not in ("running", "success", "failed", "skipped", "up_for_reschedule"):
            raise MessageError(f"bad outcome {message.outcome!r}")
        if message.outcome == "up_for_reschedule" and not _is_number(message.reschedule_at):
            raise MessageError("an up_for_reschedule result needs reschedule_at (epoch seconds)")
        if isinstance(message.reschedules, bool) or not isinstance(message.reschedules, int):
            raise MessageError("reschedules must be an integer")
        skips = message.skip_task_ids
        if skips is not None and not (isinstance(skips, list) and all(isinstance(t, str) for t in skips)):
            raise MessageError("skip_task_ids must be a list of task ids")
        if not isinstance(message.no_retry, bool):
            raise MessageError("no_retry must be a boolean")
        events = message.outlet_events
        if events is not None and not (
            isinstance(events, list)
            and all(
                isinstance(e, dict) and isinstance(e.get("uri"), str) and isinstance(e.get("extra", {}), dict)
                for e in events
            )
        ):
            raise MessageError("outlet_events must be a list of {uri, extra} objects")
    if isinstance(message, TaskMessage):
        if not isinstance(message.dag_file, str) or not isinstance(message.upstream_results, dict):
            raise MessageError("bad task message fields")
        if not isinstance(message.max_tries, int):
            raise MessageError("max_tries must be an integer")
        if message.expand_args is not None and not isinstance(message.expand_args, dict):
            raise MessageError("expand_args must be an object")
        if isinstance(message.reschedules, bool) or not isinstance(message.reschedules, int):
            raise MessageError("reschedules must be an integer")
        if message.first_poke_at is not None and not _is_number(message.first_poke_at):
            raise MessageError("first_poke_at must be a number of epoch seconds")
        triggering = message.triggering_asset_events
        if triggering is not None and not (
            isinstance(triggering, dict) and all(isinstance(v, list) for v in triggering.values())
        ):
            raise MessageError("triggering_asset_events must map asset URIs to lists of events")
    if isinstance(message, LookupRequest):
        if message.kind not in ("connection", "variable", "task_state") or not isinstance(message.name, str):
            raise MessageError("a lookup names a connection, a variable or a task state")
    if isinstance(message, LogMessage) and not isinstance(message.text, str):
        raise MessageError("log text must be a string")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
