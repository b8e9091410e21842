"""The JSON REST API, ``/api/v1``: what scripts and the pages' own JavaScript call.

Authentication: the session cookie (with the ``X-CSRF-Token`` header on writes) or
``Authorization: Bearer <token>``. Errors are ``{"error": message, "status": code}`` (plus
``"field"`` when one input is wrong). The OpenAPI document is ``/api/v1/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, request

bp = Blueprint("api", __name__)


def json_body() -> dict[str, Any]:
    """The request's JSON object (an empty body counts as ``{}``)."""
    if not request.get_data(cache=True):
        return {}
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        abort(400, "the body nests too deeply")
    if not isinstance(data, dict):
        abort(400, "the body must be a JSON object (Content-Type: application/json)")
    return data


def int_arg(name: str, default: int, *, lo: int = 0, hi: int = 1000) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, f"{name} must be an integer")
    if not lo <= value <= hi:
        abort(400, f"{name} must be between {lo} and {hi}")
    return value


def bool_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    abort(400, f"{name} must be true or false")


def body_bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        abort(400, f"{name} must be true or false")
    return value


from hareflow.web.api import assets, dags, integrations, system  # noqa: E402,F401 - the routes register themselves on bp
