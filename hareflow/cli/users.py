"""``hareflow users``: web UI accounts (roles admin, op, viewer)."""

from __future__ import annotations

import sys

import click

from hareflow.cli.common import (
    CONTEXT_SETTINGS,
    UserError,
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
            create_user(session, username, password, role, created_by="cli")
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
            delete_user(session, username, deleted_by="cli")
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
        set_role(session, username, role, changed_by="cli")
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
            set_password(session, username, password, changed_by="cli")
    click.echo(f"password of user {username} changed")


@users.command("token")
@click.argument("username")
def users_token(username: str) -> None:
    """Issue an API token for USERNAME (same role as the user); it is printed once, stored hashed.

    \b
    Example:
      TOKEN=$(hareflow users token alice)
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/api/v1/dags
    """
    settings = get_settings()
    from hareflow.web.security import issue_token

    with metastore(settings) as sessions, user_mistakes(), sessions() as session, session.begin():
        token = issue_token(session, username)
    click.echo(token)
