"""Pages: Connections and Variables (op and admin). The forms post here; the list's *Test* button
calls the API (with a plain form post as the fallback)."""

from __future__ import annotations

import json
from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from hareflow.common.secrets.masking import is_sensitive, redact_mapping
from hareflow.web import integrations
from hareflow.web.actions import ActionError
from hareflow.web.pages import bp, flash_error, form_bool
from hareflow.web.security import require_role

FORM_FIELDS = ("conn_type", "description", "host", "port", "login", "schema", "extra", "allowed_dag_ids")


# -- connections ------------------------------------------------------------------------------------


@bp.get("/connections")
@require_role("op")
def connections() -> Any:
    types = {t["conn_type"]: t for t in integrations.type_list()}
    return render_template(
        "connections.html",
        connections=integrations.list_connections(),
        types=types,
        active_nav="pages.connections",
    )


def _form_values(conn: dict[str, Any] | None) -> dict[str, Any]:
    """What the form's inputs show: the stored connection (browser-safe) or empty fields."""
    if conn is None:
        return {name: "" for name in ("conn_id", *FORM_FIELDS)} | {"conn_type": "postgresql"}
    values = {name: "" if conn.get(name) is None else conn[name] for name in ("conn_id", *FORM_FIELDS)}
    values["extra"] = json.dumps(conn["extra"], indent=2) if conn.get("extra") else ""
    values["allowed_dag_ids"] = ", ".join(conn["allowed_dag_ids"] or [])
    return values


def _submitted() -> dict[str, Any]:
    """The form's fields, to show again after a mistake: never the password, and the extra's
    sensitive values masked when it parses."""
    values = {name: request.form.get(name, "") for name in ("conn_id", *FORM_FIELDS)}
    try:
        extra = json.loads(values["extra"])
    except ValueError:
        return values
    if isinstance(extra, dict):
        values["extra"] = json.dumps(redact_mapping(extra), indent=2)
    return values


def _connection_form(
    values: dict[str, Any], *, editing: bool, password_set: bool = False, error: ActionError | None = None
) -> Any:
    page = render_template(
        "connection_form.html",
        form=values,
        editing=editing,
        password_set=password_set,
        types=integrations.type_list(),
        error=error,
        active_nav="pages.connections",
    )
    return (page, error.status) if error is not None else page


def _body_from_form(*, editing: bool) -> dict[str, Any]:
    body: dict[str, Any] = {name: request.form.get(name, "") for name in FORM_FIELDS}
    password = request.form.get("password", "")
    if not editing:
        body["conn_id"] = request.form.get("conn_id", "").strip()
        body["password"] = password or None
    elif form_bool("clear_password"):
        body["password"] = None
    elif password:
        body["password"] = password
    # editing with an empty password field: the key is left out, so the stored password stays
    return body


@bp.get("/connections/new")
@require_role("op")
def new_connection() -> Any:
    return _connection_form(_form_values(None), editing=False)


@bp.post("/connections")
@require_role("op")
def create_connection_page() -> Any:
    try:
        conn = integrations.create_connection(_body_from_form(editing=False), username=g.user.username)
    except ActionError as exc:
        return _connection_form(_submitted(), editing=False, error=exc)
    flash(f"connection {conn['conn_id']} created")
    return redirect(url_for("pages.connections"))


@bp.get("/connections/<conn_id>/edit")
@require_role("op")
def edit_connection(conn_id: str) -> Any:
    conn = integrations.get_connection(conn_id)
    return _connection_form(_form_values(conn), editing=True, password_set=conn["password_set"])


@bp.post("/connections/<conn_id>/edit")
@require_role("op")
def update_connection_page(conn_id: str) -> Any:
    try:
        integrations.update_connection(conn_id, _body_from_form(editing=True), username=g.user.username)
    except ActionError as exc:
        if exc.status == 404:
            raise
        values = _submitted() | {"conn_id": conn_id}
        try:
            password_set = integrations.get_connection(conn_id)["password_set"]
        except ActionError:
            password_set = False
        return _connection_form(values, editing=True, password_set=password_set, error=exc)
    flash(f"connection {conn_id} saved")
    return redirect(url_for("pages.connections"))


@bp.post("/connections/<conn_id>/delete")
@require_role("op")
def delete_connection_page(conn_id: str) -> Any:
    try:
        integrations.delete_connection(conn_id, username=g.user.username)
    except ActionError as exc:
        flash_error(exc.message)
    else:
        flash(f"connection {conn_id} deleted")
    return redirect(url_for("pages.connections"))


@bp.post("/connections/<conn_id>/test")
@require_role("op")
def test_connection_page(conn_id: str) -> Any:
    """Without JavaScript the *Test* button posts here and the result comes back as a message."""
    try:
        result = integrations.probe_connection(conn_id)
    except ActionError as exc:
        flash_error(exc.message)
    else:
        if result["ok"]:
            flash(f"{conn_id}: ok, {result['message']} ({result['seconds']:.2f} s)")
        else:
            flash_error(f"{conn_id}: failed, {result['message']}")
    return redirect(url_for("pages.connections"))


# -- variables --------------------------------------------------------------------------------------


@bp.get("/variables")
@require_role("op")
def variables() -> Any:
    try:
        items = integrations.list_variables()
    except ActionError as exc:
        return render_template("error.html", status=exc.status, message=exc.message), exc.status
    return render_template("variables.html", variables=items, active_nav="pages.variables")


def _variable_form(
    values: dict[str, Any], *, editing: bool, sensitive: bool = False, error: ActionError | None = None
) -> Any:
    page = render_template(
        "variable_form.html",
        form=values,
        editing=editing,
        sensitive=sensitive,
        error=error,
        active_nav="pages.variables",
    )
    return (page, error.status) if error is not None else page


@bp.get("/variables/new")
@require_role("op")
def new_variable() -> Any:
    return _variable_form({"key": "", "value": "", "description": ""}, editing=False)


@bp.post("/variables")
@require_role("op")
def create_variable_page() -> Any:
    body = {name: request.form.get(name, "") for name in ("key", "value", "description")}
    body["key"] = body["key"].strip()
    try:
        integrations.create_variable(body, username=g.user.username)
    except ActionError as exc:
        values = body | {"value": "" if is_sensitive(body["key"]) else body["value"]}
        return _variable_form(values, editing=False, error=exc)
    flash(f"variable {body['key']} created")
    return redirect(url_for("pages.variables"))


@bp.get("/variables/<key>/edit")
@require_role("op")
def edit_variable(key: str) -> Any:
    var = integrations.get_variable(key)
    values = {
        "key": key,
        "value": "" if var["sensitive"] else var["value"],
        "description": var["description"] or "",
    }
    return _variable_form(values, editing=True, sensitive=var["sensitive"])


@bp.post("/variables/<key>/edit")
@require_role("op")
def update_variable_page(key: str) -> Any:
    var = integrations.get_variable(key)
    body: dict[str, Any] = {"description": request.form.get("description", "")}
    value = request.form.get("value", "")
    if value or not var["sensitive"]:  # a sensitive value left empty is kept
        body["value"] = value
    try:
        integrations.update_variable(key, body, username=g.user.username)
    except ActionError as exc:
        values = {"key": key, "value": "" if var["sensitive"] else value, "description": body["description"]}
        return _variable_form(values, editing=True, sensitive=var["sensitive"], error=exc)
    flash(f"variable {key} saved")
    return redirect(url_for("pages.variables"))


@bp.post("/variables/<key>/delete")
@require_role("op")
def delete_variable_page(key: str) -> Any:
    try:
        integrations.delete_variable(key, username=g.user.username)
    except ActionError as exc:
        flash_error(exc.message)
    else:
        flash(f"variable {key} deleted")
    return redirect(url_for("pages.variables"))
