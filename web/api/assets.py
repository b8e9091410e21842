"""API: assets, their events and lineage (any role reads), and events posted from outside (op
and admin; audited). Assets are addressed by id in paths, so a URI never has to be URL-encoded
into one; ``GET /assets?uri=...`` finds an asset by its URI."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify, request
from hareflow.web import assets
from hareflow.web.api import bp, int_arg, json_body
from hareflow.web.runtime import open_session
from hareflow.web.security import require_role


@bp.get("/assets")
@require_role("viewer")
def asset_list() -> Any:
    uri = request.args.get("uri") or None
    with open_session() as s:
        return jsonify({"assets": assets.list_assets(s, uri=uri, latest=int_arg("latest", 5, hi=100))})


@bp.get("/assets/lineage")
@require_role("viewer")
def asset_lineage() -> Any:
    with open_session() as s:
        return jsonify(assets.lineage(s))


@bp.get("/assets/<int:asset_id>/events")
@require_role("viewer")
def asset_events(asset_id: int) -> Any:
    with open_session() as s:
        return jsonify(
            assets.asset_events(
                s, asset_id, limit=int_arg("limit", 50, lo=1), offset=int_arg("offset", 0, hi=10**9)
            )
        )


@bp.post("/assets/events")
@require_role("op")
def post_asset_event() -> Any:
    return jsonify(assets.post_event(json_body(), username=g.user.username)), 201
