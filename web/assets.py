"""Assets as the web shows them: the list (producers, consumers, latest events), one asset's
events, the lineage graph, and posting an event from outside.

An event posted for a URI no asset has is refused (404) rather than creating the asset: a typo
would otherwise record events nothing consumes, silently. Assets come into being when a DAG that
names them is parsed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hareflow.common.assets import (
    UnknownAssetError,
    asset_dict,
    asset_event_notice,
    asset_links,
    event_dict,
    lineage,
    list_assets,
    record_external_event,
)
from hareflow.common.dag.assets import AssetError, check_extra, check_uri
from hareflow.common.db import AssetEvent, AssetRow
from hareflow.common.operations import audit
from hareflow.web.actions import ActionError
from hareflow.web.runtime import open_session, runtime
from sqlalchemy import func, select
from sqlalchemy.orm import Session


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
    producers, consumers = asset_links(session)
    return {
        "asset": asset_dict(row, producers.get(row.id, []), consumers.get(row.id, [])),
        "events": [event_dict(e, row.uri) for e in events],
        "total": int(total or 0),
    }


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


__all__ = ["asset_events", "lineage", "list_assets", "post_event"]
