"""Pages: the Assets list (producers, consumers, latest events, live) and the lineage graph."""

from __future__ import annotations

from typing import Any

from flask import render_template
from hareflow.web import assets
from hareflow.web.pages import bp
from hareflow.web.runtime import open_session
from hareflow.web.security import require_role


@bp.get("/assets")
@require_role("viewer")
def assets_page() -> Any:
    with open_session() as s:
        items = assets.list_assets(s)
    return render_template("assets.html", assets=items, active_nav="pages.assets_page")


@bp.get("/assets/lineage")
@require_role("viewer")
def asset_lineage() -> Any:
    with open_session() as s:
        graph = assets.lineage(s)
    return render_template("asset_lineage.html", graph=graph, active_nav="pages.assets_page")
