"""Log in and out, and change one's own password. Sessions are signed cookies (``secret_key``);
the user is looked up on every request, so a deleted user or a changed role or password takes
effect at once."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from hareflow.common.users import UserAccountError, set_password, verify_password
from hareflow.web.runtime import open_session
from hareflow.web.security import log_in, require_role, safe_next

bp = Blueprint("auth", __name__)


class LoginThrottle:
    """Refuses a user name from one client address after ``limit`` failed logins within ``window``
    seconds, until the oldest of them leaves the window. Keyed by name and address together, so
    guessing one user's password is slowed without letting anyone lock that user out everywhere.
    Kept in memory per web process."""

    def __init__(
        self, limit: int = 5, window: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: tuple[str, str]) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        with self._lock:
            recent = self._recent(key)
            if recent is None or len(recent) < self.limit:
                return 0.0
            return max(0.0, recent[0] + self.window - self.clock())

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # bounded: forget keys whose failures have all expired
                for stale in [k for k in self._failures if not self._recent(k)]:
                    del self._failures[stale]
            self._failures.setdefault(key, deque(maxlen=self.limit)).append(self.clock())

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _recent(self, key: tuple[str, str]) -> deque[float] | None:
        recent = self._failures.get(key)
        if recent is not None:
            while recent and recent[0] <= self.clock() - self.window:
                recent.popleft()
        return recent


def login_throttle() -> LoginThrottle:
    return current_app.extensions.setdefault("hareflow_login_throttle", LoginThrottle())


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    target = safe_next(request.values.get("next"), url_for("pages.dag_list"))
    if request.method == "GET":
        if g.get("user") is not None:
            return redirect(target)
        return render_template("login.html", next=target, username="")
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    throttle, key = login_throttle(), (username.lower(), request.remote_addr or "")
    wait = throttle.retry_after(key)
    if wait > 0:
        error = f"too many failed logins for this user name; try again in {int(wait) + 1} s"
        page = render_template("login.html", next=target, username=username, error=error)
        return page, 429, {"Retry-After": str(int(wait) + 1)}
    with open_session() as s:
        user = verify_password(s, username, password) if username and password else None
    if user is None:
        throttle.failed(key)
        return render_template(
            "login.html", next=target, username=username, error="wrong user name or password"
        ), 401
    throttle.succeeded(key)
    log_in(user)
    return redirect(target)


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    session.clear()
    flash("logged out")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@require_role("viewer")  # every role: it changes only the caller's own account
def change_password() -> Any:
    """The logged-in user changes their own password (every role may): the current one, then the
    new one twice. The session goes on with the new password; the user's other sessions end."""
    if g.get("auth") != "session":
        abort(403, "change your password from a browser session (log in first)")
    username = g.user.username
    if request.method == "GET":
        return render_template("change_password.html")
    current = request.form.get("current_password", "")
    new, again = request.form.get("new_password", ""), request.form.get("new_password_again", "")
    throttle, key = login_throttle(), (username.lower(), request.remote_addr or "")
    wait = throttle.retry_after(key)
    if wait > 0:
        error = f"too many wrong passwords; try again in {int(wait) + 1} s"
        return render_template("change_password.html", error=error), 429, {"Retry-After": str(int(wait) + 1)}
    if new != again:
        return render_template("change_password.html", error="the two new passwords differ"), 400
    with open_session() as s, s.begin():
        if verify_password(s, username, current) is None:
            throttle.failed(key)
            return render_template("change_password.html", error="the current password is wrong"), 400
        try:
            user = set_password(s, username, new, changed_by=username)
        except UserAccountError as exc:
            return render_template("change_password.html", error=str(exc)), 400
        s.flush()
        log_in(user)  # a fresh session bound to the new password; sessions elsewhere end
    throttle.succeeded(key)
    flash("password changed")
    return redirect(url_for("pages.dag_list"))
