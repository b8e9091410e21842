"""Server-rendered pages. Forms post to the routes here (CSRF-checked); the pages' JavaScript
reads the API and listens to Socket.IO for live updates."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, request, url_for
from hareflow.web.security import safe_next

bp = Blueprint("pages", __name__)


@bp.app_context_processor
def scheduler_alert() -> dict[str, Any]:
    """Every page a user sees says so when no scheduler is running: runs would sit queued with no
    other sign of why. One small query per page; the page's script keeps it current after that."""
    if g.get("user") is None:
        return {"scheduler_alert": None}
    from hareflow.web import queries
    from hareflow.web.runtime import request_session

    try:
        status = queries.scheduler_status(request_session())
    except Exception:  # noqa: BLE001 - the page reports database trouble itself
        return {"scheduler_alert": None}
    return {"scheduler_alert": queries.scheduler_alert(status)}


def form_bool(name: str) -> bool:
    return request.form.get(name, "").lower() in ("1", "true", "on", "yes")


def back(default: str | None = None) -> Any:
    """Redirect to the form's ``next`` field when it is a local path, else to ``default``."""
    return redirect(safe_next(request.form.get("next"), default or url_for("pages.dag_list")))


def flash_error(message: str) -> None:
    flash(message, "error")


def arg_int(name: str, default: int, lo: int = 0, hi: int = 10**9) -> int:
    try:
        return max(lo, min(hi, int(request.args.get(name, default))))
    except ValueError:
        return default


from hareflow.web.pages import assets, dags, integrations, runs, system  # noqa: E402,F401 - the routes register themselves on bp
