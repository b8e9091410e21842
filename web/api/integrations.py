"""API: Connections, Variables and the installed connection types (op and admin only).

No answer ever holds a connection's password (``password_set`` says whether one is stored);
sensitive ``extra`` values and the values of variables with sensitive keys read ``***``.
"""

from __future__ import annotations

from typing import Any

from flask import g, jsonify
from hareflow.web import integrations
from hareflow.web.api import bp, json_body
from hareflow.web.security import require_role


@bp.get("/connection-types")
@require_role("op")
def connection_types() -> Any:
    return jsonify({"connection_types": integrations.type_list()})


@bp.get("/connections")
@require_role("op")
def connections() -> Any:
    return jsonify({"connections": integrations.list_connections()})


@bp.post("/connections")
@require_role("op")
def create_connection() -> Any:
    return jsonify(integrations.create_connection(json_body(), username=g.user.username)), 201


@bp.get("/connections/<conn_id>")
@require_role("op")
def connection(conn_id: str) -> Any:
    return jsonify(integrations.get_connection(conn_id))


@bp.patch("/connections/<conn_id>")
@require_role("op")
def update_connection(conn_id: str) -> Any:
    return jsonify(integrations.update_connection(conn_id, json_body(), username=g.user.username))


@bp.delete("/connections/<conn_id>")
@require_role("op")
def delete_connection(conn_id: str) -> Any:
    integrations.delete_connection(conn_id, username=g.user.username)
    return jsonify({"deleted": conn_id})


@bp.post("/connections/<conn_id>/test")
@require_role("op")
def test_connection(conn_id: str) -> Any:
    return jsonify(integrations.probe_connection(conn_id))


@bp.get("/variables")
@require_role("op")
def variables() -> Any:
    return jsonify({"variables": integrations.list_variables()})


@bp.post("/variables")
@require_role("op")
def create_variable() -> Any:
    return jsonify(integrations.create_variable(json_body(), username=g.user.username)), 201


@bp.get("/variables/<key>")
@require_role("op")
def variable(key: str) -> Any:
    return jsonify(integrations.get_variable(key))


@bp.patch("/variables/<key>")
@require_role("op")
def update_variable(key: str) -> Any:
    return jsonify(integrations.update_variable(key, json_body(), username=g.user.username))


@bp.delete("/variables/<key>")
@require_role("op")
def delete_variable(key: str) -> Any:
    integrations.delete_variable(key, username=g.user.username)
    return jsonify({"deleted": key})
