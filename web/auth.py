"""Log in and out, and change one's own password. Sessions are signed cookies (``secret_key``);
the user is looked up on every request, so a deleted user or a changed role or password takes
effect at once."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from hareflow.common.users import UserAccountError, set_password, verify_password
from hareflow.web.runtime import open_session, runtime
from hareflow.web.security import forget_tokens, log_in, log_out, require_role, safe_next
from itsdangerous import BadSignature, URLSafeTimedSerializer

bp = Blueprint("auth", __name__)


Key = tuple[str, ...]


class LoginThrottle:
    """Slows password guessing without letting anyone lock a real user out.

    Three budgets of failed logins, each within ``window`` seconds:

    - per user name and client address (``limit``): one client guessing one user's password;
    - per user name across every client that has no device cookie for it (``user_limit``): many
      addresses guessing one user's password;
    - per device cookie (``limit``): a browser that once logged in as that user (it never counts
      towards the two budgets above, so a flood of wrong guesses from elsewhere, even from behind
      the same proxy address, never stops the real user's browser).

    Past a budget the next attempt waits, and each further failure doubles the wait, up to
    ``max_delay`` seconds: a guesser gets about one try per ``max_delay``, a user on a new device at
    worst waits that long; nobody is ever locked out. Kept in memory per web process.
    """

    def __init__(
        self,
        limit: int = 5,
        window: float = 900.0,
        *,
        user_limit: int = 20,
        max_delay: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.user_limit = user_limit
        self.window = window
        self.max_delay = max_delay
        self.clock = clock
        self._failures: dict[Key, deque[float]] = {}
        self._lock = threading.Lock()

    def _budgets(self, username: str, address: str, device: str | None) -> list[tuple[Key, int]]:
        name = username.lower()
        if device is not None:
            return [(("device", device), self.limit)]
        return [(("address", name, address), self.limit), (("user", name), self.user_limit)]

    def retry_after(self, username: str, address: str, device: str | None = None) -> float:
        """Seconds until this client may try this user name again (0: now)."""
        with self._lock:
            return max(self._wait(key, limit) for key, limit in self._budgets(username, address, device))

    def failed(self, username: str, address: str, device: str | None = None) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # bounded: forget keys whose failures have all expired
                for stale in [k for k in self._failures if not self._recent(k)]:
                    del self._failures[stale]
            now = self.clock()
            for key, limit in self._budgets(username, address, device):
                self._failures.setdefault(key, deque(maxlen=limit + 16)).append(now)

    def succeeded(self, username: str, address: str, device: str | None = None) -> None:
        """Clear this client's own budget (the per-user one keeps counting others' failures)."""
        with self._lock:
            key = self._budgets(username, address, device)[0][0]
            self._failures.pop(key, None)

    def _wait(self, key: Key, limit: int) -> float:
        recent = self._recent(key)
        if recent is None or len(recent) < limit:
            return 0.0
        delay = min(self.max_delay, 2.0 ** (len(recent) - limit))
        return max(0.0, recent[-1] + delay - self.clock())

    def _recent(self, key: Key) -> deque[float] | None:
        recent = self._failures.get(key)
        if recent is not None:
            while recent and recent[0] <= self.clock() - self.window:
                recent.popleft()
        return recent


def login_throttle() -> LoginThrottle:
    return current_app.extensions.setdefault("hareflow_login_throttle", LoginThrottle())


DEVICE_COOKIE = "hareflow_device"
DEVICE_MAX_AGE = 90 * 24 * 3600


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt="hareflow-login-device")


def device_of(username: str) -> str | None:
    """The nonce of this browser's device cookie if it was issued for ``username``, else None."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return None
    try:
        data = _device_serializer().loads(raw, max_age=DEVICE_MAX_AGE)
    except BadSignature:
        return None
    if not isinstance(data, dict) or data.get("u") != username.lower() or not isinstance(data.get("n"), str):
        return None
    return str(data["n"])


def _issue_device_cookie(response: Any, username: str, device: str | None) -> None:
    value = _device_serializer().dumps({"u": username.lower(), "n": device or secrets.token_urlsafe(16)})
    response.set_cookie(
        DEVICE_COOKIE,
        value,
        max_age=DEVICE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=current_app.config.get("SESSION_COOKIE_SECURE", False),
        path=url_for("auth.login"),
    )


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    target = safe_next(request.values.get("next"), url_for("pages.dag_list"))
    if request.method == "GET":
        if g.get("user") is not None:
            return redirect(target)
        return render_template("login.html", next=target, username="")
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    throttle, address, device = login_throttle(), request.remote_addr or "", device_of(username)
    wait = throttle.retry_after(username, address, device)
    if wait > 0:
        error = f"too many failed logins for this user name; try again in {int(wait) + 1} s"
        page = render_template("login.html", next=target, username=username, error=error)
        return page, 429, {"Retry-After": str(int(wait) + 1)}
    with open_session() as s:
        user = verify_password(s, username, password) if username and password else None
    if user is None:
        throttle.failed(username, address, device)
        return render_template(
            "login.html", next=target, username=username, error="wrong user name or password"
        ), 401
    throttle.succeeded(username, address, device)
    with open_session() as s, s.begin():
        log_in(s, user, timedelta(hours=runtime().settings.web_session_hours))
    response = redirect(target)
    _issue_device_cookie(response, user.username, device)
    return response


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    with open_session() as s, s.begin():
        log_out(s)
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
    throttle, address, device = login_throttle(), request.remote_addr or "", device_of(username)
    wait = throttle.retry_after(username, address, device)
    if wait > 0:
        error = f"too many wrong passwords; try again in {int(wait) + 1} s"
        return render_template("change_password.html", error=error), 429, {"Retry-After": str(int(wait) + 1)}
    if new != again:
        return render_template("change_password.html", error="the two new passwords differ"), 400
    with open_session() as s, s.begin():
        if verify_password(s, username, current) is None:
            throttle.failed(username, address, device)
            return render_template("change_password.html", error="the current password is wrong"), 400
        try:
            user = set_password(s, username, new, changed_by=username)
        except UserAccountError as exc:
            return render_template("change_password.html", error=str(exc)), 400
        s.flush()
        # set_password ended every session of the user; this browser gets a fresh one.
        log_in(s, user, timedelta(hours=runtime().settings.web_session_hours))
    forget_tokens()  # the cached lookups of this user's tokens hold the old password hash
    throttle.succeeded(username, address, device)
    flash("password changed")
    return redirect(url_for("pages.dag_list"))
