"""Web UI accounts: create, list, delete, change role, check a password.

Passwords are stored only as salted hashes (werkzeug.security, which Flask installs). Roles:
``admin`` (everything, including users), ``op`` (trigger, clear, pause, mark) and ``viewer``
(read only). Functions take the caller's session; the caller owns the transaction. Each change
writes an ``audit_log`` row.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hareflow.common.db import User, WebSession
from hareflow.common.operations import OperationError, audit
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

ROLES = ("admin", "op", "viewer")
MIN_PASSWORD_LENGTH = 8
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")


class UserAccountError(OperationError):
    """A user-management mistake: unknown user, duplicate name, bad role or password."""


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserAccountError(f"role {role!r} does not exist; use one of {', '.join(ROLES)}")


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserAccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserAccountError(f"no user named {username!r} (see `hareflow users list`)")
    return user


def create_user(
    session: Session,
    username: str,
    password: str,
    role: str,
    *,
    created_by: str | None = None,
    now: datetime | None = None,
) -> User:
    """Create an account; raise UserAccountError for a taken name, a bad role or a short password."""
    if not _USERNAME.match(username):
        raise UserAccountError(f"user name {username!r}: use 1-100 letters, digits, '_', '.', '@' or '-'")
    _check_role(role)
    check_password_rules(password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserAccountError(f"user {username!r} already exists")
    now = now or datetime.now(UTC)
    user = User(username=username, password_hash=generate_password_hash(password), role=role, created_at=now)
    session.add(user)
    audit(session, "user_create", username=created_by, details={"user": username, "role": role}, now=now)
    session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def delete_user(session: Session, username: str, *, deleted_by: str | None = None) -> None:
    session.delete(get_user(session, username))
    audit(session, "user_delete", username=deleted_by, details={"user": username})


def set_role(session: Session, username: str, role: str, *, changed_by: str | None = None) -> User:
    _check_role(role)
    user = get_user(session, username)
    previous, user.role = user.role, role
    audit(
        session,
        "user_set_role",
        username=changed_by,
        details={"user": username, "from": previous, "to": role},
    )
    return user


def set_password(session: Session, username: str, password: str, *, changed_by: str | None = None) -> User:
    check_password_rules(password)
    user = get_user(session, username)
    user.password_hash = generate_password_hash(password)
    # Every browser logged in as this user is logged out (the web logs the changer's own one in again).
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    audit(session, "user_set_password", username=changed_by, details={"user": username})
    return user


def verify_password(session: Session, username: str, password: str) -> User | None:
    """The user if ``password`` is theirs, else None (unknown users and wrong passwords look alike)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not check_password_hash(user.password_hash, password):
        return None
    return user
