"""``hareflow users``: web UI accounts (roles admin, op, viewer)."""

from __future__ import annotations

import sys
from typing import Any

import click

from hareflow.cli.common import (
    CONTEXT_SETTINGS,
    UserError,
    cli_user,
    get_settings,
    iso,
    metastore,
    output_option,
    print_json,
    print_table,
    user_mistakes,
    when,
)

ROLES = ["admin", "op", "viewer"]  # hareflow.common.users.ROLES, repeated so --help needs no database import


@click.group(context_settings=CONTEXT_SETTINGS)
def users() -> None:
    """Manage web UI accounts: admin (everything), op (trigger, clear, pause), viewer (read only).

    \b
    Example:
      hareflow users create alice --role op
    """


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UserError("--password-stdin: no password on standard input")
        return password
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))


@users.command("create")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What the user may do.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input, not a prompt.")
def users_create(username: str, role: str, password_stdin: bool) -> None:
    """Create a user; the password is asked for (or read from stdin) and stored hashed.

    \b
    Example:
      hareflow users create alice --role admin
      printf '%s\\n' "$PASSWORD" | hareflow users create ci-bot --role op --password-stdin
    """
    settings = get_settings()
    from hareflow.common.users import create_user

    with metastore(settings) as sessions:
        password = _read_password(password_stdin)
        with user_mistakes(), sessions() as session, session.begin():
            create_user(session, username, password, role, created_by=cli_user(settings))
    click.echo(f"user {username} created with role {role}")


@users.command("list")
@output_option
def users_list(output: str) -> None:
    """List the users and their roles.

    \b
    Example:
      hareflow users list -o json
    """
    settings = get_settings()
    from hareflow.common.users import list_users

    with metastore(settings) as sessions, sessions() as session:
        rows = [(u.username, u.role, u.created_at) for u in list_users(session)]
    if output == "json":
        print_json([{"username": n, "role": r, "created_at": iso(c)} for n, r, c in rows])
        return
    print_table(["username", "role", "created"], [[n, r, when(c)] for n, r, c in rows], empty="no users")


@users.command("delete")
@click.argument("username")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def users_delete(username: str, yes: bool) -> None:
    """Delete a user.

    \b
    Example:
      hareflow users delete alice --yes
    """
    settings = get_settings()
    from hareflow.common.users import delete_user, get_user

    with metastore(settings) as sessions:
        with user_mistakes(), sessions() as session:
            get_user(session, username)
        if not yes:
            click.confirm(f"Delete user {username}?", abort=True, err=True)
        with user_mistakes(), sessions() as session, session.begin():
            delete_user(session, username, deleted_by=cli_user(settings))
    click.echo(f"user {username} deleted")


@users.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
def users_set_role(username: str, role: str) -> None:
    """Change a user's role.

    \b
    Example:
      hareflow users set-role alice viewer
    """
    settings = get_settings()
    from hareflow.common.users import set_role

    with metastore(settings) as sessions, user_mistakes(), sessions() as session, session.begin():
        set_role(session, username, role, changed_by=cli_user(settings))
    click.echo(f"user {username} now has role {role}")


@users.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input, not a prompt.")
def users_set_password(username: str, password_stdin: bool) -> None:
    """Give USERNAME a new password (asked twice, or read from stdin), with the same rules as
    `users create`. Their API tokens stay valid; the change is audit-logged.

    \b
    Example:
      hareflow users set-password admin
      printf '%s\\n' "$PASSWORD" | hareflow users set-password ci-bot --password-stdin
    """
    settings = get_settings()
    from hareflow.common.users import get_user, set_password

    with metastore(settings) as sessions:
        with user_mistakes(), sessions() as session:
            get_user(session, username)  # an unknown user is an error before any prompt
        password = _read_password(password_stdin)
        with user_mistakes(), sessions() as session, session.begin():
            set_password(session, username, password, changed_by=cli_user(settings))
    click.echo(f"password of user {username} changed")


@users.command("token")
@click.argument("username")
@click.option(
    "--days",
    default=None,
    type=click.IntRange(0),
    help="Days until the token expires (default api_token_expiry_days, 90; 0: never).",
)
def users_token(username: str, days: int | None) -> None:
    """Issue an API token for USERNAME (same role as the user); it is printed once, stored hashed.

    \b
    Example:
      TOKEN=$(hareflow users token alice --days 30)
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/api/v1/dags
    """
    settings = get_settings()
    from hareflow.web.security import issue_token

    lifetime = settings.api_token_expiry_days if days is None else days
    with metastore(settings) as sessions, user_mistakes(), sessions() as session, session.begin():
        token = issue_token(session, username, days=lifetime, issued_by=cli_user(settings))
    click.echo(token)


@users.group("tokens", context_settings=CONTEXT_SETTINGS)
def users_tokens() -> None:
    """List and revoke API tokens (issue one with `hareflow users token NAME`).

    \b
    Example:
      hareflow users tokens list alice && hareflow users tokens revoke 7
    """


@users_tokens.command("list")
@click.argument("username", required=False)
@output_option
def users_tokens_list(username: str | None, output: str) -> None:
    """List API tokens (of USERNAME, or everyone's): id, user, created, last used, expiry.

    \b
    Example:
      hareflow users tokens list alice
    """
    settings = get_settings()
    from hareflow.web.security import list_tokens

    with metastore(settings) as sessions, sessions() as session:
        rows = list_tokens(session, username)
    if output == "json":
        dates = ("created_at", "last_used_at", "expires_at")
        print_json([{**r, **{k: iso(r[k]) for k in dates}} for r in rows])
        return
    if not rows:
        click.echo("no API tokens", err=True)
        return
    print_table(
        ["id", "user", "created", "last used", "expires"],
        [
            [
                r["id"],
                r["user"],
                when(r["created_at"]),
                when(r["last_used_at"]) if r["last_used_at"] else "never",
                _expiry(r),
            ]
            for r in rows
        ],
    )


def _expiry(row: dict[str, Any]) -> str:
    text = when(row["expires_at"]) if row["expires_at"] else "never"
    return f"expired {text}" if row["expired"] else text


@users_tokens.command("revoke")
@click.argument("token_id", type=int)
def users_tokens_revoke(token_id: int) -> None:
    """Revoke (delete) the API token TOKEN_ID at once; scripts using it get 401 from then on.

    \b
    Example:
      hareflow users tokens revoke 7
    """
    settings = get_settings()
    from hareflow.web.security import revoke_token

    with metastore(settings) as sessions, sessions() as session, session.begin():
        revoked = revoke_token(session, token_id, revoked_by=cli_user(settings))
    if revoked is None:
        raise UserError(f"no API token with id {token_id} (see `hareflow users tokens list`)")
    click.echo(f"revoked API token {token_id} of {revoked['user']}")
