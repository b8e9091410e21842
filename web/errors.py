"""Errors as JSON under ``/api/`` (``{"error": message, "status": code}``) and as a page elsewhere."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, render_template, request
from hareflow.web.actions import ActionError
from hareflow.web.security import CsrfError, is_api_request
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **extra: Any) -> Any:
    if is_api_request():
        body = {"error": message, "status": status}
        body.update({k: v for k, v in extra.items() if v is not None})
        response = jsonify(body)
        response.status_code = status
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="hareflow"'
        return response
    return render_template("error.html", status=status, message=message), status


def _http_error(exc: HTTPException) -> Any:
    status = exc.code or 500
    message = exc.description if exc.description and not _is_default(exc) else exc.name
    return error_response(status, message)


def _is_default(exc: HTTPException) -> bool:
    return exc.description == type(exc).description


def _csrf_error(exc: CsrfError) -> Any:
    return error_response(400, str(exc))


def _action_error(exc: ActionError) -> Any:
    return error_response(exc.status, exc.message, field=exc.field)


def _unexpected(exc: Exception) -> Any:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, InternalServerError.description)


def refuse_nul_characters() -> Any:
    """A NUL in the path or a query parameter is a client's mistake (or probe): 400 before any route
    runs, so no handler has to think about it."""
    if "\x00" in request.path:
        return error_response(400, "the request path contains a NUL character")
    for key, value in request.args.items(multi=True):
        if "\x00" in key or "\x00" in value:
            name = key.replace("\x00", "␀")
            return error_response(400, f"query parameter {name!r} contains a NUL character")
    return None


def init_app(app: Flask) -> None:
    app.before_request(refuse_nul_characters)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CsrfError, _csrf_error)
    app.register_error_handler(ActionError, _action_error)
    app.register_error_handler(Exception, _unexpected)
