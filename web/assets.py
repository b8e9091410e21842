"""Assets as the web shows them: the list (producers, consumers, latest events), one asset's
events, the lineage graph, and posting an event from outside.

An event posted for a URI no asset has is refused (404) rather than creating the asset: a typo
would otherwise record events nothing consumes, silently. Assets come into being when a DAG that
names them is parsed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from hareflow.common.assets import UnknownAssetError, asset_event_notice, event_dict, record_external_event
from hareflow.common.dag.assets import AssetError, check_extra, check_uri
from hareflow.common.db import AssetEvent, AssetRow, Dag, DagScheduleAsset, TaskOutletAsset
from hareflow.common.operations import audit
from hareflow.web.actions import ActionError
from hareflow.web.runtime import open_session, runtime
from sqlalchemy import func, select
from sqlalchemy.orm import Session

#: Latest events shown per asset on the list.
LATEST = 5


def _links(session: Session) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
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


def _asset_dict(row: AssetRow, producers: list[str], consumers: list[str]) -> dict[str, Any]:
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


def list_assets(session: Session, *, uri: str | None = None, latest: int = LATEST) -> list[dict[str, Any]]:
    """Every asset (or the one with ``uri``), by URI, with producers, consumers and latest events."""
    query = select(AssetRow).order_by(AssetRow.uri)
    if uri is not None:
        query = query.where(AssetRow.uri == uri)
    producers, consumers = _links(session)
    out = []
    for row in session.scalars(query):
        item = _asset_dict(row, producers.get(row.id, []), consumers.get(row.id, []))
        item["latest_events"] = _latest(session, row, latest)
        out.append(item)
    return out


def asset_events(session: Session, asset_id: int, *, limit: int, offset: int) -> dict[str, Any]:
    """One asset and a page of its events, newest first; 404 for an unknown id."""
    row = session.get(AssetRow, asset_id)
    if row is None:
        raise ActionError(404, f"no asset with id {asset_id}")
    total = session.scalar(
        select(func.count()).select_from(AssetEvent).where(AssetEvent.asset_id == asset_id)
    )
    events = session.scalars(
        select(AssetEvent)
        .where(AssetEvent.asset_id == asset_id)
        .order_by(AssetEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    producers, consumers = _links(session)
    return {
        "asset": _asset_dict(row, producers.get(row.id, []), consumers.get(row.id, [])),
        "events": [event_dict(e, row.uri) for e in events],
        "total": int(total or 0),
    }


def lineage(session: Session) -> dict[str, Any]:
    """The graph producer DAG -> asset -> consumer DAG: nodes ``{"id", "kind", "label"}`` (kind
    ``dag`` or ``asset``) and edges ``[from, to]``."""
    producers, consumers = _links(session)
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


def post_event(body: dict[str, Any], *, username: str) -> dict[str, Any]:
    """Record an event from outside for a known asset (audited) and tell the schedulers."""
    uri = body.get("uri")
    try:
        check_uri(uri)
    except AssetError as exc:
        raise ActionError(400, exc.message, "uri") from None
    try:
        extra = check_extra(body.get("extra"))
    except AssetError as exc:
        raise ActionError(400, exc.message, "extra") from None
    now = datetime.now(UTC)
    with open_session() as s, s.begin():
        try:
            event = record_external_event(s, str(uri), extra, username, now)
        except UnknownAssetError as exc:
            raise ActionError(404, str(exc), "uri") from None
        audit(s, "asset_event", username=username, details={"uri": uri, "event_id": event.id}, now=now)
        result = event_dict(event, str(uri))
        notice = asset_event_notice(event)
    runtime().notify([notice])
    return result
