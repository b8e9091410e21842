"""Asset operations on the metastore, shared by the DAG processor, the results consumer, the
scheduler, the CLI and the web. Each takes the caller's session; the caller owns the transaction.

Recording an event (:func:`record_events`) writes the ``asset_event`` row and, for every DAG whose
schedule names the asset, widens that DAG's ``asset_dag_run_queue`` row for the asset (the ids of
the events it has not consumed yet). The results consumer calls it in the transaction that records
the producing try's success, and only for successes whose compare-and-set took effect, so one
successful try records one event per outlet however many copies of its result arrive; the unique
key on (source try, asset) holds it even so. Event ids are given at insert and committed in any
order, so a range may also span an event an earlier run consumed (one committed late): reading a
range skips the events already linked to a run of the consumer.

Creating a consumer run (:func:`consume_if_ready`) happens with the consumer's ``dag`` row locked
(``FOR UPDATE SKIP LOCKED``: another scheduler skips the DAG) and its queue rows locked: the run,
its links to the triggering events and the deletion of the queue rows commit together, so one set
of events starts one run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hareflow.common.dag.assets import condition_met, uris_of
from hareflow.common.dag_versions import run_version
from hareflow.common.db import (
    AssetDagRunQueue,
    AssetEvent,
    AssetRow,
    Dag,
    DagRun,
    DagRunAssetEvent,
    DagScheduleAsset,
    TaskOutletAsset,
)
from hareflow.common.db.upsert import insert_if_absent
from hareflow.common.messages import StateEvent
from hareflow.common.states import RunState
from sqlalchemy import delete, exists, func, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session

#: The most events per asset a consumer run's context lists (the newest); all are linked to the run.
MAX_CONTEXT_EVENTS = 100
RUN_TYPE = "asset_triggered"


class UnknownAssetError(LookupError):
    """No asset has this URI: no DAG names it and it never had an event."""


@dataclass(frozen=True)
class NewEvent:
    """An asset event to record: a producing try's (``source_*``) or one from outside."""

    uri: str
    extra: dict[str, Any] = field(default_factory=dict)
    source_ti_id: int | None = None
    source_dag_id: str | None = None
    source_run_id: str | None = None
    source_task_id: str | None = None
    source_map_index: int = -1
    source_try_number: int | None = None
    created_by: str | None = None


def ensure_assets(session: Session, assets: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, int]:
    """Store the assets (``{"uri", "name"?, "extra"?}``) that are not stored yet; return URI -> id.
    Several writers may store the same asset at once: each insert waits for the other and does
    nothing."""
    wanted = {a["uri"]: a for a in assets}
    if not wanted:
        return {}
    table = AssetRow.__table__
    known = dict(
        session.execute(select(AssetRow.uri, AssetRow.id).where(AssetRow.uri.in_(sorted(wanted))))
        .tuples()
        .all()
    )
    for uri in sorted(set(wanted) - set(known)):  # sorted: concurrent writers lock in one order
        a = wanted[uri]
        values = {"uri": uri, "name": a.get("name") or uri, "extra": a.get("extra") or {}}
        insert_if_absent(session, table, {**values, "created_at": now, "updated_at": now})  # type: ignore[arg-type]
    missing = set(wanted) - set(known)
    if missing:
        known.update(
            session.execute(select(AssetRow.uri, AssetRow.id).where(AssetRow.uri.in_(sorted(missing))))
            .tuples()
            .all()
        )
    return known


def sync_dag_assets(session: Session, dag_id: str, serialized: Mapping[str, Any], now: datetime) -> None:
    """Bring what ``dag_id`` consumes and produces up to date with its serialized DAG (called with
    its ``dag`` row locked). Queue rows of assets it no longer consumes are dropped."""
    declared = {a["uri"]: a for a in serialized.get("assets") or ()}
    schedule = serialized.get("asset_schedule")
    consumed = set(uris_of(schedule)) if schedule else set()
    outlets = {(t["task_id"], uri) for t in serialized.get("tasks") or () for uri in t.get("outlets") or ()}
    needed = consumed | {uri for _, uri in outlets}
    ids = ensure_assets(session, [declared.get(u) or {"uri": u} for u in sorted(needed)], now)
    # A DAG's own description of its assets wins (the last parsed, if two differ); rows are
    # written only when it changed, so re-parsing a DAG does not rewrite the assets it names.
    stored = {r.uri: r for r in session.scalars(select(AssetRow).where(AssetRow.uri.in_(sorted(declared))))}
    for uri, a in declared.items():
        row = stored.get(uri)
        name, extra = a.get("name") or uri, a.get("extra") or {}
        described = name != uri or bool(extra)  # a bare Asset(uri) does not undo another DAG's name
        if row is not None and described and (row.name != name or (row.extra or {}) != extra):
            row.name, row.extra, row.updated_at = name, extra, now
    have = set(session.scalars(select(DagScheduleAsset.asset_id).where(DagScheduleAsset.dag_id == dag_id)))
    want = {ids[u] for u in consumed}
    if have - want:
        gone = sorted(have - want)
        session.execute(
            delete(DagScheduleAsset).where(
                DagScheduleAsset.dag_id == dag_id, DagScheduleAsset.asset_id.in_(gone)
            )
        )
        session.execute(
            delete(AssetDagRunQueue).where(
                AssetDagRunQueue.target_dag_id == dag_id, AssetDagRunQueue.asset_id.in_(gone)
            )
        )
    for asset_id in sorted(want - have):
        session.add(DagScheduleAsset(dag_id=dag_id, asset_id=asset_id))
    have_out = set(
        session.execute(
            select(TaskOutletAsset.task_id, TaskOutletAsset.asset_id).where(TaskOutletAsset.dag_id == dag_id)
        ).tuples()
    )
    want_out = {(task_id, ids[uri]) for task_id, uri in outlets}
    for task_id, asset_id in sorted(have_out - want_out):
        session.execute(
            delete(TaskOutletAsset).where(
                TaskOutletAsset.dag_id == dag_id,
                TaskOutletAsset.task_id == task_id,
                TaskOutletAsset.asset_id == asset_id,
            )
        )
    for task_id, asset_id in sorted(want_out - have_out):
        session.add(TaskOutletAsset(dag_id=dag_id, task_id=task_id, asset_id=asset_id))
    session.flush()


def asset_event_notice(event: AssetEvent) -> StateEvent:
    """The state event that announces a new asset event (kind ``asset``; pages refetch)."""
    return StateEvent(
        kind="asset",
        dag_id=event.source_dag_id or "",
        run_id=event.source_run_id,
        task_id=event.source_task_id,
        map_index=event.source_map_index,
        state="updated",
        at=event.timestamp.timestamp(),
    )


def record_events(session: Session, events: Sequence[NewEvent], now: datetime) -> list[AssetEvent]:
    """Record ``events`` (storing assets seen for the first time) and queue them for every DAG
    scheduled on their assets; return the rows written."""
    if not events:
        return []
    ids = ensure_assets(session, [{"uri": e.uri} for e in events], now)
    rows = []
    for e in events:
        row = AssetEvent(
            asset_id=ids[e.uri],
            extra=dict(e.extra or {}),
            source_ti_id=e.source_ti_id,
            source_dag_id=e.source_dag_id,
            source_run_id=e.source_run_id,
            source_task_id=e.source_task_id,
            source_map_index=e.source_map_index,
            source_try_number=e.source_try_number,
            created_by=e.created_by,
            timestamp=now,
        )
        session.add(row)
        rows.append(row)
    session.flush()
    _enqueue(session, rows, now)
    return rows


def _enqueue(session: Session, rows: Sequence[AssetEvent], now: datetime) -> None:
    """Widen each consumer's queue row of each asset to take in the new events: one upsert per
    (consumer, asset), in one lock order for every writer. An upsert, not "insert if absent, then
    update": a row the scheduler is consuming (locked, about to be deleted) makes this wait and then
    insert a fresh row, where an update would find nothing and lose the event."""
    by_asset: dict[int, tuple[int, int]] = {}
    for r in rows:
        low, high = by_asset.get(r.asset_id, (r.id, r.id))
        by_asset[r.asset_id] = (min(low, r.id), max(high, r.id))
    consumers = session.execute(
        select(DagScheduleAsset.dag_id, DagScheduleAsset.asset_id).where(
            DagScheduleAsset.asset_id.in_(sorted(by_asset))
        )
    ).tuples()
    for dag_id, asset_id in sorted(consumers):
        low, high = by_asset[asset_id]
        session.execute(
            _widen_queue_row(
                session.get_bind().dialect.name,
                {
                    "target_dag_id": dag_id,
                    "asset_id": asset_id,
                    "first_event_id": low,
                    "last_event_id": high,
                    "created_at": now,
                },
            )
        )


def _widen_queue_row(dialect: str, values: dict[str, Any]) -> Any:
    table = AssetDagRunQueue.__table__
    first, last = table.c.first_event_id, table.c.last_event_id  # type: ignore[attr-defined]
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(table).values(**values)
        return stmt.on_duplicate_key_update(
            first_event_id=func.least(first, stmt.inserted.first_event_id),
            last_event_id=func.greatest(last, stmt.inserted.last_event_id),
        )
    module = postgresql if dialect == "postgresql" else sqlite
    least, greatest = (func.least, func.greatest) if dialect == "postgresql" else (func.min, func.max)
    stmt = module.insert(table).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=["target_dag_id", "asset_id"],
        set_={
            "first_event_id": least(first, stmt.excluded.first_event_id),
            "last_event_id": greatest(last, stmt.excluded.last_event_id),
        },
    )


def record_external_event(
    session: Session, uri: str, extra: Mapping[str, Any] | None, created_by: str | None, now: datetime
) -> AssetEvent:
    """Record an event posted from outside (API, CLI) for a known asset; UnknownAssetError if no
    asset has ``uri`` (a typo would otherwise create an asset nothing consumes)."""
    if session.scalar(select(AssetRow.id).where(AssetRow.uri == uri)) is None:
        raise UnknownAssetError(f"no asset {uri!r}: no DAG names it (see `hareflow assets list`)")
    return record_events(session, [NewEvent(uri=uri, extra=dict(extra or {}), created_by=created_by)], now)[0]


# -- consumer runs ---------------------------------------------------------------------------------


def waiting_dag_ids(session: Session) -> list[str]:
    """Active, unpaused DAGs that have unconsumed asset events (the queue is small: one row per
    waiting consumer and asset, whatever the length of the event history)."""
    return list(
        session.scalars(
            select(AssetDagRunQueue.target_dag_id)
            .join(Dag, Dag.dag_id == AssetDagRunQueue.target_dag_id)
            .where(Dag.is_active.is_(True), Dag.is_paused.is_(False))
            .distinct()
        )
    )


def event_dict(event: AssetEvent, uri: str) -> dict[str, Any]:
    """An event as the context, the API and the CLI show it."""
    return {
        "id": event.id,
        "uri": uri,
        "extra": event.extra or {},
        "source_dag_id": event.source_dag_id,
        "source_run_id": event.source_run_id,
        "source_task_id": event.source_task_id,
        "source_map_index": event.source_map_index,
        "source_try_number": event.source_try_number,
        "created_by": event.created_by,
        "timestamp": event.timestamp.isoformat(),
    }


def consume_if_ready(
    session: Session, dag: Dag, schedule: Mapping[str, Any] | None, now: datetime
) -> DagRun | None:
    """Create the asset-triggered run of ``dag`` (locked by the caller) if its unconsumed events
    meet ``schedule`` (its asset expression); consume them. None when it is not ready."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    query = (
        select(AssetDagRunQueue)
        .where(AssetDagRunQueue.target_dag_id == dag.dag_id)
        .order_by(AssetDagRunQueue.asset_id)
    )
    if not sqlite:  # SQLite: BEGIN IMMEDIATE already holds the database's write lock
        query = query.with_for_update()
    queued = session.scalars(query).all()
    uris = dict(
        session.execute(
            select(AssetRow.id, AssetRow.uri).where(AssetRow.id.in_([q.asset_id for q in queued]))
        )
        .tuples()
        .all()
    )
    pending = [(q, uris[q.asset_id]) for q in queued]
    if schedule is None:  # no longer asset-scheduled: what was queued is dropped
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag.dag_id))
        return None
    if not pending or not condition_met(schedule, [uri for _, uri in pending]):
        return None
    events: list[tuple[AssetEvent, str]] = []
    for q, uri in pending:
        rows = session.scalars(
            select(AssetEvent)
            .where(
                AssetEvent.asset_id == q.asset_id,
                AssetEvent.id >= q.first_event_id,
                AssetEvent.id <= q.last_event_id,
                ~exists(
                    select(DagRunAssetEvent.event_id)
                    .join(DagRun, DagRun.id == DagRunAssetEvent.run_pk)
                    .where(DagRunAssetEvent.event_id == AssetEvent.id, DagRun.dag_id == dag.dag_id)
                ),
            )
            .order_by(AssetEvent.id)
        ).all()
        events.extend((r, uri) for r in rows)
    stamps = [e.timestamp for e, _ in events] or [now]
    run = DagRun(
        dag_id=dag.dag_id,
        run_id=f"{RUN_TYPE}__{now.isoformat()}",
        run_type=RUN_TYPE,
        state=RunState.QUEUED,
        logical_date=now,
        interval_key=now,
        data_interval_start=min(stamps),
        data_interval_end=max(stamps),
        conf={},
        triggered_by="assets",
        queued_at=now,
        **run_version(dag),
    )
    session.add(run)
    session.flush()
    for e, _ in events:
        session.add(DagRunAssetEvent(run_pk=run.id, event_id=e.id))
    for q, _ in pending:
        session.execute(
            delete(AssetDagRunQueue).where(
                AssetDagRunQueue.target_dag_id == q.target_dag_id,
                AssetDagRunQueue.asset_id == q.asset_id,
                AssetDagRunQueue.last_event_id == q.last_event_id,
            )
        )
    session.flush()
    return run


def triggering_events(session: Session, run_pks: Iterable[int]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Run pk -> asset URI -> the (newest :data:`MAX_CONTEXT_EVENTS`) events that started it."""
    pks = sorted(set(run_pks))
    if not pks:
        return {}
    rows = session.execute(
        select(DagRunAssetEvent.run_pk, AssetEvent, AssetRow.uri)
        .join(AssetEvent, AssetEvent.id == DagRunAssetEvent.event_id)
        .join(AssetRow, AssetRow.id == AssetEvent.asset_id)
        .where(DagRunAssetEvent.run_pk.in_(pks))
        .order_by(AssetEvent.id)
    ).tuples()
    out: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run_pk, event, uri in rows:
        out[run_pk][uri].append(event_dict(event, uri))
    return {
        pk: {uri: items[-MAX_CONTEXT_EVENTS:] for uri, items in by_uri.items()} for pk, by_uri in out.items()
    }


# -- reading: the web and the CLI ------------------------------------------------------------------


def asset_links(session: Session) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Asset id -> producers ("dag.task") and -> consumer DAG ids, of active DAGs only."""
    producers: dict[int, list[str]] = defaultdict(list)
    consumers: dict[int, list[str]] = defaultdict(list)
    rows = session.execute(
        select(TaskOutletAsset.asset_id, TaskOutletAsset.dag_id, TaskOutletAsset.task_id)
        .join(Dag, Dag.dag_id == TaskOutletAsset.dag_id)
        .where(Dag.is_active.is_(True))
        .order_by(TaskOutletAsset.dag_id, TaskOutletAsset.task_id)
    ).tuples()
    for asset_id, dag_id, task_id in rows:
        producers[asset_id].append(f"{dag_id}.{task_id}")
    rows2 = session.execute(
        select(DagScheduleAsset.asset_id, DagScheduleAsset.dag_id)
        .join(Dag, Dag.dag_id == DagScheduleAsset.dag_id)
        .where(Dag.is_active.is_(True))
        .order_by(DagScheduleAsset.dag_id)
    ).tuples()
    for asset_id, dag_id in rows2:
        consumers[asset_id].append(dag_id)
    return producers, consumers


def asset_dict(row: AssetRow, producers: list[str], consumers: list[str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "uri": row.uri,
        "name": row.name or row.uri,
        "extra": row.extra or {},
        "producers": producers,
        "consumers": consumers,
        "created_at": row.created_at.isoformat(),
    }


def _latest(session: Session, row: AssetRow, limit: int) -> list[dict[str, Any]]:
    # One short index read per asset ((asset_id, id) descending): never a scan of the history.
    events = session.scalars(
        select(AssetEvent).where(AssetEvent.asset_id == row.id).order_by(AssetEvent.id.desc()).limit(limit)
    )
    return [event_dict(e, row.uri) for e in events]


def list_assets(session: Session, *, uri: str | None = None, latest: int = 5) -> list[dict[str, Any]]:
    """Every asset (or the one with ``uri``), by URI, with producers, consumers and latest events."""
    query = select(AssetRow).order_by(AssetRow.uri)
    if uri is not None:
        query = query.where(AssetRow.uri == uri)
    producers, consumers = asset_links(session)
    out = []
    for row in session.scalars(query):
        item = asset_dict(row, producers.get(row.id, []), consumers.get(row.id, []))
        item["latest_events"] = _latest(session, row, latest)
        out.append(item)
    return out


def lineage(session: Session) -> dict[str, Any]:
    """The graph producer DAG -> asset -> consumer DAG: nodes ``{"id", "kind", "label"}`` (kind
    ``dag`` or ``asset``) and edges ``[from, to]``."""
    producers, consumers = asset_links(session)
    nodes: dict[str, dict[str, Any]] = {}
    edges: set[tuple[str, str]] = set()
    for row in session.scalars(select(AssetRow).order_by(AssetRow.uri)):
        if not producers.get(row.id) and not consumers.get(row.id):
            continue
        asset_node = f"asset:{row.id}"
        nodes[asset_node] = {"id": asset_node, "kind": "asset", "label": row.name or row.uri, "uri": row.uri}
        for producer in producers.get(row.id, []):
            dag_id, task_id = producer.split(".", 1)
            nodes.setdefault(f"dag:{dag_id}", {"id": f"dag:{dag_id}", "kind": "dag", "label": dag_id})
            edges.add((f"dag:{dag_id}", asset_node))
        for dag_id in consumers.get(row.id, []):
            nodes.setdefault(f"dag:{dag_id}", {"id": f"dag:{dag_id}", "kind": "dag", "label": dag_id})
            edges.add((asset_node, f"dag:{dag_id}"))
    return {"nodes": list(nodes.values()), "edges": sorted(edges)}
