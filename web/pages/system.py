"""Pages: workers, queues, backfills, the audit log, and users (admin)."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for
from hareflow.common.db import AuditLog
from hareflow.common.users import ROLES, UserAccountError, create_user, delete_user, list_users, set_role
from hareflow.common.workers import list_workers
from hareflow.web import actions, queries
from hareflow.web.api.system import queue_report
from hareflow.web.pages import arg_int, back, bp, flash_error
from hareflow.web.runtime import open_session, runtime
from hareflow.web.security import forget_tokens, issue_token, list_tokens, require_role, revoke_token
from sqlalchemy import select


@bp.get("/workers")
@require_role("viewer")
def workers() -> Any:
    show_all = request.args.get("all", "").lower() in ("1", "true", "yes")
    with open_session() as s:
        listed = list_workers(s, include_gone=show_all)
    return render_template(
        "workers.html",
        workers=listed.workers,
        hidden=listed.hidden,
        show_all=show_all,
        active_nav="pages.workers",
    )


@bp.get("/queues")
@require_role("viewer")
def queues() -> Any:
    return render_template("queues.html", report=queue_report(), active_nav="pages.queues")


@bp.get("/backfills")
@require_role("viewer")
def backfills() -> Any:
    dag_id = request.args.get("dag_id") or None
    with open_session() as s:
        items = queries.list_backfills(s, dag_id=dag_id, limit=100)
    return render_template(
        "backfills.html", backfills=items, dag_id=dag_id or "", active_nav="pages.backfills"
    )


@bp.post("/backfills/<int:backfill_id>/cancel")
@require_role("op")
def cancel_backfill(backfill_id: int) -> Any:
    try:
        result = actions.cancel(backfill_id, username=g.user.username)
    except actions.ActionError as exc:
        flash_error(exc.message)
    else:
        flash(f"backfill {backfill_id} cancelled: {result['runs_dropped']} run(s) not started were dropped")
    return back(url_for("pages.backfills"))


@bp.get("/audit")
@require_role("viewer")
def audit() -> Any:
    dag_id = request.args.get("dag_id") or None
    offset = arg_int("offset", 0)
    query = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc()).limit(101).offset(offset)
    if dag_id:
        query = query.where(AuditLog.dag_id == dag_id)
    with open_session() as s:
        rows = list(s.scalars(query))
    return render_template(
        "audit.html",
        rows=rows[:100],
        more=len(rows) > 100,
        offset=offset,
        dag_id=dag_id or "",
        active_nav="pages.audit",
    )


# -- dead letters ---------------------------------------------------------------------------------


@bp.get("/deadletters")
@require_role("viewer")
def dead_letters() -> Any:
    from hareflow.common import dead_letters as dl

    queue = request.args.get("queue") or ""
    state = request.args.get("state") or dl.DEFAULT_STATE
    if state not in (*dl.STATES, "all"):
        state = dl.DEFAULT_STATE
    offset = arg_int("offset", 0)
    with open_session() as s:
        rows = dl.list_dead_letters(
            s, queue=queue or None, state=None if state == "all" else state, limit=101, offset=offset
        )
        items = [dl.dead_letter_dict(r) for r in rows[:100]]
        queues = dl.source_queues(s)
    return render_template(
        "deadletters.html",
        items=items,
        more=len(rows) > 100,
        offset=offset,
        queue=queue,
        queues=queues,
        state=state,
        states=(*dl.STATES, "all"),
        active_nav="pages.dead_letters",
    )


@bp.get("/deadletters/<int:dead_letter_id>")
@require_role("viewer")
def dead_letter(dead_letter_id: int) -> Any:
    from hareflow.common import dead_letters as dl

    with open_session() as s:
        try:
            item = dl.dead_letter_dict(dl.get_dead_letter(s, dead_letter_id), full=True)
        except dl.DeadLetterError as exc:
            abort(exc.status, exc.message)
    return render_template("deadletter.html", d=item, active_nav="pages.dead_letters")


def _dead_letter_form(dead_letter_id: int, what: str, done: str) -> Any:
    try:
        actions.dead_letter_action(dead_letter_id, what, username=g.user.username)
    except actions.ActionError as exc:
        flash_error(exc.message)
    else:
        flash(done)
    return back(url_for("pages.dead_letters"))


@bp.post("/deadletters/<int:dead_letter_id>/requeue")
@require_role("op")
def requeue_dead_letter(dead_letter_id: int) -> Any:
    return _dead_letter_form(dead_letter_id, "requeue", f"dead letter {dead_letter_id} requeued")


@bp.post("/deadletters/<int:dead_letter_id>/discard")
@require_role("op")
def discard_dead_letter(dead_letter_id: int) -> Any:
    return _dead_letter_form(dead_letter_id, "discard", f"dead letter {dead_letter_id} discarded")


# -- users (admin) ----------------------------------------------------------------------------------


@bp.get("/users")
@require_role("admin")
def users() -> Any:
    return _users_page(token=None)


def _users_page(token: dict[str, str] | None) -> Any:
    with open_session() as s:
        items = [{"username": u.username, "role": u.role, "created_at": u.created_at} for u in list_users(s)]
        tokens = list_tokens(s)
    return render_template(
        "users.html",
        users=items,
        roles=ROLES,
        token=token,
        tokens=tokens,
        token_days=runtime().settings.api_token_expiry_days,
        active_nav="pages.users",
    )


def _user_action(action: Any, done: str) -> Any:
    try:
        with open_session() as s, s.begin():
            action(s)
        forget_tokens()  # a role changed or a user deleted: their tokens' cached lookups are stale
    except UserAccountError as exc:
        flash_error(str(exc))
    else:
        flash(done)
    return redirect(url_for("pages.users"))


@bp.post("/users")
@require_role("admin")
def create_user_page() -> Any:
    name, role, password = (request.form.get(k, "") for k in ("username", "role", "password"))
    return _user_action(
        lambda s: create_user(s, name.strip(), password, role, created_by=g.user.username),
        f"user {name} created",
    )


@bp.post("/users/<username>/role")
@require_role("admin")
def set_user_role(username: str) -> Any:
    role = request.form.get("role", "")
    if username == g.user.username and role != "admin":
        flash_error("you cannot take the admin role from yourself (ask another admin)")
        return redirect(url_for("pages.users"))
    return _user_action(
        lambda s: set_role(s, username, role, changed_by=g.user.username), f"{username} is now {role}"
    )


@bp.post("/users/<username>/delete")
@require_role("admin")
def delete_user_page(username: str) -> Any:
    if username == g.user.username:
        flash_error("you cannot delete yourself")
        return redirect(url_for("pages.users"))
    return _user_action(
        lambda s: delete_user(s, username, deleted_by=g.user.username), f"user {username} deleted"
    )


@bp.post("/users/<username>/token")
@require_role("admin")
def issue_user_token(username: str) -> Any:
    days = runtime().settings.api_token_expiry_days
    try:
        with open_session() as s, s.begin():
            token = issue_token(s, username, days=days, issued_by=g.user.username)
    except UserAccountError as exc:
        flash_error(str(exc))
        return redirect(url_for("pages.users"))
    return _users_page(token={"username": username, "value": token})


@bp.post("/users/tokens/<int:token_id>/revoke")
@require_role("admin")
def revoke_user_token(token_id: int) -> Any:
    with open_session() as s, s.begin():
        revoked = revoke_token(s, token_id, revoked_by=g.user.username)
    forget_tokens()
    if revoked is None:
        flash_error(f"no API token with id {token_id}")
    else:
        flash(f"API token {token_id} of {revoked['user']} revoked")
    return redirect(url_for("pages.users"))
