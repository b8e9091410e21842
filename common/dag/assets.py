"""Assets: named pieces of data that tasks produce and DAGs are scheduled on.

A task declares what it writes with ``outlets=[Asset("warehouse://sales/orders")]``; each time the
task succeeds, one asset event per outlet is recorded, in the transaction that records the success.
A DAG with ``schedule=`` an asset expression runs when its assets have new events:

- ``[a, b]`` or ``a & b``: every asset has a new event since the DAG's last asset-triggered run;
- ``a | b``: any of them has;
- nested: ``(a & b) | c``;
- ``AssetOrTimeSchedule(timetable="0 2 * * *", assets=a | b)``: on the timetable, and also
  whenever the asset condition holds.

Airflow's spellings ``Dataset``, ``DatasetAll``, ``DatasetAny`` and ``DatasetOrTimeSchedule`` are
accepted as aliases. Expressions are checked when the DAG is parsed and stored in the serialized
DAG as JSON (``{"asset": uri}``, ``{"all": [...]}``, ``{"any": [...]}``); whether a consumer DAG
is ready is the pure function :func:`condition_met`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hareflow.common.dag.errors import DagDefinitionError

#: Longest URI stored (the metastore keeps it in a unique index).
MAX_URI_LENGTH = 500
#: Largest ``extra`` an event may carry, in bytes of JSON.
MAX_EXTRA_BYTES = 64 * 1024
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
_RESERVED_SCHEMES = frozenset({"hareflow", "airflow"})


class AssetError(DagDefinitionError, ValueError):
    """An asset or asset expression that is not valid: ``message`` says why (and, in a DAG file,
    ``file`` and ``line`` say where)."""


def _err(message: str) -> AssetError:
    return AssetError.here(message)  # type: ignore[return-value]


def check_uri(uri: object) -> str:
    """``uri`` if it is a valid asset URI, else AssetError saying what is wrong."""
    if not isinstance(uri, str):
        raise _err(f"an asset URI must be a string, not {type(uri).__name__}")
    if not uri or uri != uri.strip():
        raise _err(f"invalid asset URI {uri!r}: it must be non-empty, without surrounding spaces")
    if len(uri) > MAX_URI_LENGTH:
        raise _err(f"asset URI is {len(uri)} characters long; at most {MAX_URI_LENGTH} are allowed")
    if any(ch.isspace() or ord(ch) < 32 for ch in uri):
        raise _err(f"invalid asset URI {uri!r}: it must not contain spaces or control characters")
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        if not _SCHEME.match(scheme):
            raise _err(f"invalid asset URI {uri!r}: bad scheme {scheme!r}")
        if scheme.lower() in _RESERVED_SCHEMES:
            raise _err(f"invalid asset URI {uri!r}: the scheme {scheme!r} is reserved")
        if not uri.split("://", 1)[1]:
            raise _err(f"invalid asset URI {uri!r}: nothing after the scheme")
    return uri


def check_extra(extra: object, what: str = "extra") -> dict[str, Any]:
    """``extra`` as a JSON object within :data:`MAX_EXTRA_BYTES`, else AssetError."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise _err(f"{what} must be a JSON object (a dict), not {type(extra).__name__}")
    try:
        text = json.dumps(dict(extra), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise _err(f"{what} must be JSON-serialisable: {exc}") from None
    if len(text.encode()) > MAX_EXTRA_BYTES:
        raise _err(f"{what} is {len(text.encode())} bytes of JSON; at most {MAX_EXTRA_BYTES} are allowed")
    result: dict[str, Any] = json.loads(text)
    return result


class AssetExpression:
    """A condition on assets: an asset, or all/any of sub-expressions (combine with ``&`` and ``|``)."""

    _hareflow_authoring_object = True

    def __and__(self, other: object) -> AssetAll:
        return AssetAll(self, _operand(other, "&"))

    def __or__(self, other: object) -> AssetAny:
        return AssetAny(self, _operand(other, "|"))

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def iter_assets(self) -> Iterator[Asset]:
        raise NotImplementedError

    def describe(self) -> str:
        return describe(self.to_dict())


def _operand(other: object, op: str) -> AssetExpression:
    if not isinstance(other, AssetExpression):
        raise _err(
            f"cannot combine an asset with {type(other).__name__} using {op!r}: both sides must be "
            "Assets or asset expressions"
        )
    return other


class Asset(AssetExpression):
    """A piece of data, named by a URI (``"warehouse://sales/orders"``, ``"s3://bucket/key"``).

    ``name`` is a display name (the URI by default); ``extra`` is a JSON object describing the asset
    itself (each event has its own ``extra`` too).
    """

    def __init__(
        self,
        uri: str,
        name: str | None = None,
        extra: Mapping[str, Any] | None = None,
        *,
        watchers: Any = None,
        group: Any = None,
    ) -> None:
        if watchers is not None:
            raise _err(
                f"asset {uri!r}: watchers (Airflow's triggerer watching a message queue) are not "
                "supported; start the DAG from messages with DAG(trigger=BrokerTrigger(exchange=..., "
                "routing_key=...)) instead"
            )
        if group is not None:
            raise _err(f"asset {uri!r}: asset groups are not supported; give the asset a name= instead")
        self.uri = check_uri(uri)
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 500):
            raise _err(f"asset name {name!r} must be a non-empty string of at most 500 characters")
        self.name = name or uri
        self.extra = check_extra(extra, f"extra of asset {uri!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Asset) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(("asset", self.uri))

    def __repr__(self) -> str:
        return f"Asset({self.uri!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"asset": self.uri}

    def iter_assets(self) -> Iterator[Asset]:
        yield self

    def describe_self(self) -> dict[str, Any]:
        """The asset's own fields as the serialized DAG stores them."""
        return {"uri": self.uri, "name": self.name, "extra": self.extra}


class _Group(AssetExpression):
    key = ""

    def __init__(self, *objects: object) -> None:
        if not objects:
            raise _err(f"{type(self).__name__}() needs at least one asset")
        self.objects = tuple(_operand(o, "&" if self.key == "all" else "|") for o in objects)

    def to_dict(self) -> dict[str, Any]:
        return {self.key: [o.to_dict() for o in self.objects]}

    def iter_assets(self) -> Iterator[Asset]:
        for o in self.objects:
            yield from o.iter_assets()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.objects))})"


class AssetAll(_Group):
    """True when every sub-expression is (``a & b``, and ``schedule=[a, b]``)."""

    key = "all"


class AssetAny(_Group):
    """True when any sub-expression is (``a | b``)."""

    key = "any"


class AssetOrTimeSchedule:
    """Run on ``timetable`` (a cron string or preset, a timedelta or a Timetable) and also whenever
    the asset condition ``assets`` holds (Airflow 3's name; ``DatasetOrTimeSchedule`` too)."""

    _hareflow_authoring_object = True

    def __init__(self, *, timetable: Any, assets: AssetExpression | Iterable[Asset]) -> None:
        if timetable is None:
            raise _err("AssetOrTimeSchedule needs a timetable (use schedule=<assets> for assets alone)")
        self.timetable = timetable
        self.assets = as_expression(assets)


def as_expression(schedule: object) -> AssetExpression:
    """An asset schedule (an expression, or a list of assets meaning all of them) as an expression."""
    if isinstance(schedule, AssetExpression):
        return schedule
    if isinstance(schedule, (list, tuple, set, frozenset)):
        items = list(schedule)
        if not items:
            raise _err("an asset schedule list must hold at least one Asset")
        bad = [o for o in items if not isinstance(o, AssetExpression)]
        if bad:
            raise _err(
                f"an asset schedule list must hold only Assets, not {type(bad[0]).__name__} ({bad[0]!r})"
            )
        return AssetAll(*items)
    raise _err(f"not an asset schedule: {schedule!r}")


def is_asset_schedule(schedule: object) -> bool:
    """True for the schedule forms this module handles (expressions, lists, AssetOrTimeSchedule)."""
    return isinstance(schedule, (AssetExpression, AssetOrTimeSchedule, list, tuple, set, frozenset))


def check_outlets(value: object, where: str) -> tuple[Asset, ...]:
    """A task's ``outlets``: an Asset or a list of them, without repeats."""
    if value is None:
        return ()
    items = [value] if isinstance(value, Asset) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise _err(f"outlets of {where} must be a list of Assets, not {type(value).__name__}")
    out: list[Asset] = []
    for item in items:
        if not isinstance(item, Asset):
            raise _err(f"outlets of {where} must hold only Assets, not {type(item).__name__} ({item!r})")
        if item not in out:
            out.append(item)
    return tuple(out)


# -- the serialized form, read by the scheduler and the web server -----------------------------------


def uris_of(expr: Mapping[str, Any]) -> list[str]:
    """Every URI an expression names, in order of first appearance."""
    seen: dict[str, None] = {}
    stack = [expr]
    while stack:
        node = stack.pop()
        if "asset" in node:
            seen.setdefault(node["asset"], None)
        else:
            stack.extend(reversed(list(node.get("all") or node.get("any") or [])))
    return list(seen)


def condition_met(expr: Mapping[str, Any], updated: Iterable[str]) -> bool:
    """Whether a consumer DAG whose schedule is ``expr`` is ready, given the URIs that have new
    events since its last asset-triggered run."""
    fresh = set(updated)

    def met(node: Mapping[str, Any]) -> bool:
        if "asset" in node:
            return node["asset"] in fresh
        if "all" in node:
            return all(met(child) for child in node["all"])
        if "any" in node:
            return any(met(child) for child in node["any"])
        raise _err(f"unknown asset expression node {dict(node)!r}")

    return met(expr)


def describe(expr: Mapping[str, Any], top: bool = True) -> str:
    """A one-line text of an expression: ``a & (b | c)``."""
    if "asset" in expr:
        return str(expr["asset"])
    key, op = ("all", " & ") if "all" in expr else ("any", " | ")
    parts = [describe(child, top=False) for child in expr[key]]
    text = op.join(parts)
    return text if top or len(parts) == 1 else f"({text})"


# Airflow 2 spellings.
Dataset = Asset
DatasetAll = AssetAll
DatasetAny = AssetAny
DatasetOrTimeSchedule = AssetOrTimeSchedule


# -- at run time: what a try may add to its events, and the events that started its run -------------


class OutletEventAccessor:
    """What a running try adds to the event its success records for one outlet: ``extra``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.extra: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"OutletEventAccessor({self.uri!r}, extra={self.extra!r})"


class OutletEventAccessors:
    """``outlet_events[asset].extra = {...}`` in a task: the extra of the event its success records
    for that outlet (an Asset or its URI)."""

    def __init__(self) -> None:
        self._by_uri: dict[str, OutletEventAccessor] = {}

    def __getitem__(self, key: Asset | str) -> OutletEventAccessor:
        uri = key.uri if isinstance(key, Asset) else check_uri(key)
        if uri not in self._by_uri:
            self._by_uri[uri] = OutletEventAccessor(uri)
        return self._by_uri[uri]

    def extra_of(self, uri: str) -> dict[str, Any]:
        accessor = self._by_uri.get(uri)
        return {} if accessor is None else accessor.extra


def outlet_payload(outlets: Iterable[Asset], accessors: OutletEventAccessors) -> list[dict[str, Any]]:
    """The ``outlet_events`` of a success: one ``{"uri", "extra"}`` per outlet (AssetError when an
    extra the task set is not a JSON object within the size limit)."""
    return [
        {
            "uri": a.uri,
            "extra": check_extra(accessors.extra_of(a.uri), f"the extra of the event of {a.uri!r}"),
        }
        for a in outlets
    ]


@dataclass(frozen=True, kw_only=True)
class TriggeringAssetEvent:
    """One of the asset events that started an asset-triggered run, as its tasks see it."""

    uri: str
    extra: dict[str, Any]
    source_dag_id: str | None
    source_run_id: str | None
    source_task_id: str | None
    source_map_index: int
    timestamp: datetime | None
    created_by: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TriggeringAssetEvent:
        stamp = data.get("timestamp")
        return cls(
            uri=str(data.get("uri")),
            extra=dict(data.get("extra") or {}),
            source_dag_id=data.get("source_dag_id"),
            source_run_id=data.get("source_run_id"),
            source_task_id=data.get("source_task_id"),
            source_map_index=int(data.get("source_map_index", -1)),
            timestamp=datetime.fromisoformat(stamp) if isinstance(stamp, str) else None,
            created_by=data.get("created_by"),
        )


def triggering_from_message(raw: Mapping[str, Any] | None) -> dict[str, list[TriggeringAssetEvent]]:
    """The ``triggering_asset_events`` of a task message as the context shows them."""
    return {uri: [TriggeringAssetEvent.from_dict(e) for e in events] for uri, events in (raw or {}).items()}
