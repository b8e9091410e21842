"""Log in and out. Sessions are signed cookies (``secret_key``); the user is looked up on every
request, so a deleted user or a changed role or password takes effect at once."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from common.users import verify_password
from web.runtime import open_session
from web.security import log_in, safe_next

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    target = safe_next(request.values.get("next"), url_for("pages.dag_list"))
    if request.method == "GET":
        if g.get("user") is not None:
            return redirect(target)
        return render_template("login.html", next=target, username="")
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    with open_session() as s:
        user = verify_password(s, username, password) if username and password else None
    if user is None:
        return render_template(
            "login.html", next=target, username=username, error="wrong user name or password"
        ), 401
    log_in(user)
    return redirect(target)


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    session.clear()
    flash("logged out")
    return redirect(url_for("auth.login"))
