"""Who is asking and what they may do: sessions, API tokens, roles, CSRF and response headers.

Every request except the login page, static files, ``/health`` and ``/metrics`` needs a user: a
signed session cookie (set by the login form) or an ``Authorization: Bearer <token>`` header
(scripts). Roles are ranked: ``viewer`` reads, ``op`` also triggers, clears, pauses and marks,
``admin`` also manages users. Each view states the role it needs with :func:`require_role`;
nothing relies on hiding buttons.

CSRF: a random token per session, sent back in a form field (``csrf_token``) or the
``X-CSRF-Token`` header, is required on every POST/PUT/PATCH/DELETE authenticated by the cookie.
Token-authenticated API calls are exempt: a browser never adds that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

from flask import Flask, Response, abort, current_app, g, redirect, request, session, url_for
from hareflow.common.config import Settings
from hareflow.common.db import ApiToken, User, WebSession
from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

ROLE_RANK = {"viewer": 0, "op": 1, "admin": 2}
TOKEN_PREFIX = "hft_"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Endpoints reachable without a user.
PUBLIC_ENDPOINTS = frozenset({"static", "auth.login", "health", "metrics"})
#: A token's ``last_used_at`` is written at most this often (a script polling the API would
#: otherwise turn every read into a write).
TOKEN_TOUCH_EVERY = timedelta(minutes=1)
#: Seconds a web process reuses a token's lookup (see :class:`TokenCache`): how long a token
#: revoked by another process, the CLI's ``hareflow users tokens revoke`` for one, may still work.
TOKEN_CACHE_SECONDS = 5.0

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class CsrfError(Exception):
    """A state-changing request without the session's CSRF token."""


# -- secret key and tokens --------------------------------------------------------------------------


def ensure_secret_key(settings: Settings) -> str:
    """The key that signs session cookies: ``settings.secret_key``, or else the one kept in
    ``$HAREFLOW_HOME/secret_key`` (created with mode 0600 on first use, so restarts keep sessions)."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.home) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if key:
            return key
        raise RuntimeError(
            f"{path} is empty: delete it (a new key is made) or set HAREFLOW_SECRET_KEY"
        ) from None
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    log.info("created a session signing key in %s", path)
    return key


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough (no salt or stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, username: str, *, days: int = 90, issued_by: str | None = None) -> str:
    """Create an API token for ``username`` valid for ``days`` (0: no expiry) and return it; only its
    hash is stored, so this is the one time it can be seen. Raises
    ``hareflow.common.users.UserAccountError`` for an unknown user."""
    from hareflow.common.operations import audit
    from hareflow.common.users import get_user

    user = get_user(session, username)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    expires = now + timedelta(days=days) if days > 0 else None
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), created_at=now, expires_at=expires)
    session.add(row)
    session.flush()
    audit(
        session,
        "token_issue",
        username=issued_by or username,
        details={
            "user": username,
            "token_id": row.id,
            "expires_at": expires.isoformat() if expires else None,
        },
    )
    return token


def list_tokens(session: Session, username: str | None = None) -> list[dict[str, Any]]:
    """Every API token (of ``username``, if given): id, user, when created, last used, expires."""
    query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
    if username is not None:
        query = query.where(User.username == username)
    now = datetime.now(UTC)
    return [
        {
            "id": token.id,
            "user": name,
            "created_at": token.created_at,
            "last_used_at": token.last_used_at,
            "expires_at": token.expires_at,
            "expired": token.expires_at is not None and token.expires_at <= now,
        }
        for token, name in session.execute(query)
    ]


def revoke_token(session: Session, token_id: int, *, revoked_by: str | None = None) -> dict[str, Any] | None:
    """Delete one API token by id; return what it was (None if there is no such token)."""
    from hareflow.common.operations import audit

    found = [t for t in list_tokens(session) if t["id"] == token_id]
    if not found:
        return None
    row = session.get(ApiToken, token_id)
    session.delete(row)
    audit(
        session, "token_revoke", username=revoked_by, details={"user": found[0]["user"], "token_id": token_id}
    )
    return found[0]


def revoke_tokens(session: Session, username: str) -> int:
    """Delete every API token of ``username``; return how many there were."""
    from hareflow.common.operations import audit
    from hareflow.common.users import get_user

    user = get_user(session, username)
    tokens = list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)))
    for token in tokens:
        session.delete(token)
    audit(session, "token_revoke", username=username, details={"user": username, "count": len(tokens)})
    return len(tokens)


_user = User.__table__.c
_token = ApiToken.__table__.c
#: The token lookup every API request makes, in plain Core (a third of the ORM's cost for the same
#: join): the user's columns and the token's id, expiry and last use.
_TOKEN_LOOKUP = (
    select(
        _user.id,
        _user.username,
        _user.password_hash,
        _user.role,
        _user.created_at,
        _token.id.label("token_id"),
        _token.expires_at,
        _token.last_used_at,
    )
    .join_from(ApiToken.__table__, User.__table__, _user.id == _token.user_id)
    .where(_token.token_hash == bindparam("token_hash"))
)


@dataclass
class _TokenEntry:
    """What a token's lookup found: its user's columns, the token's id, expiry and last use."""

    user: dict[str, Any]
    token_id: int
    expires_at: datetime | None
    last_used_at: datetime | None
    fetched_at: float


class TokenCache:
    """Token lookups this process made in the last ``ttl`` seconds, by token hash.

    An API script polling the run list asks for the same token many times a second: within ``ttl``
    its request reuses the lookup instead of sending one more statement. ``ttl`` bounds how long a
    token revoked, or its user changed or deleted, by another process (the CLI, another web server)
    still works here; this process's own changes (the users page, a password change) call
    :meth:`clear`, so they take effect at once. Expiry is checked on every request. Only tokens
    that exist are kept (an unknown token is looked up each time, so a new one works at once), at
    most ``max_size`` of them."""

    def __init__(
        self,
        ttl: float = TOKEN_CACHE_SECONDS,
        *,
        max_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.clock = clock
        self._entries: dict[str, _TokenEntry] = {}

    def get(self, token_hash: str) -> _TokenEntry | None:
        entry = self._entries.get(token_hash)
        if entry is None or self.clock() - entry.fetched_at >= self.ttl:
            return None
        return entry

    def put(self, token_hash: str, entry: _TokenEntry) -> None:
        if len(self._entries) >= self.max_size:
            self._entries = {}
        self._entries[token_hash] = entry

    def discard(self, token_hash: str) -> None:
        self._entries.pop(token_hash, None)

    def clear(self) -> None:
        self._entries = {}


def user_for_token(
    session: Session, token: str, now: datetime | None = None, *, cache: TokenCache | None = None
) -> User | None:
    """The user of an API token still valid at ``now``, as a ``User`` that belongs to no session
    (the views read its columns only). The token's ``last_used_at`` is updated in ``session`` when
    due (at most once per ``TOKEN_TOUCH_EVERY``): the caller commits. With ``cache``, a lookup made
    within its ``ttl`` is reused (no statement, unless the last use is due)."""
    token_hash = hash_token(token)
    entry = cache.get(token_hash) if cache is not None else None
    if entry is None:
        row = session.connection().execute(_TOKEN_LOOKUP, {"token_hash": token_hash}).one_or_none()
        if row is None:
            return None
        entry = _TokenEntry(
            user={
                "id": row.id,
                "username": row.username,
                "password_hash": row.password_hash,
                "role": row.role,
                "created_at": row.created_at,
            },
            token_id=row.token_id,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            fetched_at=cache.clock() if cache is not None else 0.0,
        )
        if cache is not None:
            cache.put(token_hash, entry)
    now = now or datetime.now(UTC)
    if entry.expires_at is not None and entry.expires_at <= now:
        return None
    if entry.last_used_at is None or now - entry.last_used_at > TOKEN_TOUCH_EVERY:
        api_token = session.get(ApiToken, entry.token_id)
        if api_token is None:  # revoked since it was cached
            if cache is not None:
                cache.discard(token_hash)
            return None
        api_token.last_used_at = entry.last_used_at = now
    return User(**entry.user)


def token_cache() -> TokenCache:
    """The application's :class:`TokenCache`."""
    cache: TokenCache | None = current_app.extensions.get("hareflow_token_cache")
    if cache is None:
        cache = current_app.extensions["hareflow_token_cache"] = TokenCache(TOKEN_CACHE_SECONDS)
    return cache


def forget_tokens() -> None:
    """Users or tokens changed in this process: the next request of every token looks it up again."""
    token_cache().clear()


# -- sessions ---------------------------------------------------------------------------------------


def password_fingerprint(user: User) -> str:
    """Changes when the password does: a session made before a password change stops working."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def log_in(db: Session, user: User, lifetime: timedelta, now: datetime | None = None) -> None:
    """Start a browser session for ``user``: a row in ``web_session`` and its random id in the
    signed cookie. Expired rows are swept here, so the table holds only live sessions."""
    now = now or datetime.now(UTC)
    sid = secrets.token_urlsafe(32)
    db.execute(delete(WebSession).where(WebSession.expires_at <= now))
    db.add(
        WebSession(
            id_hash=hash_token(sid),
            user_id=user.id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
        )
    )
    session.clear()  # no session fixation: a fresh session (and CSRF token) per login
    session["sid"] = sid
    session["fp"] = password_fingerprint(user)
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = True


def log_out(db: Session) -> None:
    """End this browser's session on the server too: a copy of its cookie no longer works."""
    sid = session.get("sid")
    if isinstance(sid, str):
        db.execute(delete(WebSession).where(WebSession.id_hash == hash_token(sid)))
    session.clear()


def user_from_session(db: Session, *, touch: bool = False, now: datetime | None = None) -> User | None:
    """The user of this browser's session, if the session is still live on the server."""
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None
    row = db.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.id_hash == hash_token(sid))
    ).one_or_none()
    if row is None:
        return None
    web_session, user = row
    now = now or datetime.now(UTC)
    if web_session.expires_at <= now or session.get("fp") != password_fingerprint(user):
        return None
    if touch and now - web_session.last_seen_at > TOKEN_TOUCH_EVERY:
        web_session.last_seen_at = now
    return cast(User, user)


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf() -> None:
    expected = session.get("csrf")
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
        raise CsrfError("the form's security token is missing or out of date: reload the page and retry")


# -- roles ------------------------------------------------------------------------------------------


def has_role(user: User | None, role: str) -> bool:
    return user is not None and ROLE_RANK.get(user.role, -1) >= ROLE_RANK[role]


def can(role: str) -> bool:
    """For templates: whether the current user has at least ``role`` (buttons are shown to those
    who may use them; the view checks again)."""
    return has_role(g.get("user"), role)


def require_role(role: str) -> Callable[[F], F]:
    """The view needs at least ``role``; anyone else gets 403."""
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not has_role(g.get("user"), role):
                abort(403, f"this needs the {role} role")
            return view(*args, **kwargs)

        wrapper.required_role = role  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def safe_next(target: str | None, default: str) -> str:
    """A redirect target from the request, only if it stays on this site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


# -- request hooks ----------------------------------------------------------------------------------


def _authenticate() -> Response | None:
    g.user = None
    g.auth = None
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            abort(401, "use 'Authorization: Bearer <token>' (tokens: `hareflow users token NAME`)")
        cache = token_cache()
        user = _look_up(lambda db: user_for_token(db, token.strip(), cache=cache))
        if user is None:
            abort(401, "unknown, revoked or expired API token")
        g.user, g.auth = user, "token"
        return None
    if "sid" in session:
        user = _look_up(lambda db: user_from_session(db, touch=True))
        if user is not None:
            g.user, g.auth = user, "session"
            return None
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return None
    if is_api_request():
        abort(401, "log in first, or send an API token")
    return cast(Response, redirect(url_for("auth.login", next=request.full_path.rstrip("?"))))


def _look_up(find: Callable[[Session], User | None]) -> User | None:
    """Find the request's user in the request's own session, which the view then reads with (one
    transaction per read request). The lookup's only write, the token's or session's "last used"
    time (at most once a minute), is committed here at once, so the view starts from a clean
    session."""
    from hareflow.web.runtime import request_session

    db = request_session()
    user = find(db)
    if db.dirty:
        db.commit()
    return user


def _check_csrf() -> None:
    if request.method in UNSAFE_METHODS and g.get("auth") != "token":
        check_csrf()


def _add_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if g.get("user") is not None and not request.path.startswith("/static/"):
        # Pages show live state and personal data: never from a shared cache or the back button.
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _set_audit_origin() -> None:
    from hareflow.common.audit import set_origin

    set_origin(f"web {request.remote_addr}")


def init_app(app: Flask) -> None:
    app.before_request(_set_audit_origin)
    app.before_request(_authenticate)
    app.before_request(_check_csrf)
    app.after_request(_add_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, can=can, CSRF_FIELD=CSRF_FIELD)
