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


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CsrfError, _csrf_error)
    app.register_error_handler(ActionError, _action_error)
    app.register_error_handler(Exception, _unexpected)
