"""``hareflow db``: create, upgrade, check and erase the metastore schema."""

from __future__ import annotations

import sys
from typing import Any

import click

from hareflow.cli.common import CONTEXT_SETTINGS, UserError, fail_unreachable, get_settings


@click.group(context_settings=CONTEXT_SETTINGS)
def db() -> None:
    """Create, upgrade, check and erase the metastore schema.

    \b
    Example:
      HAREFLOW_DATABASE_URL=postgresql+psycopg2://hareflow@db/hareflow hareflow db migrate
    """


@db.command("migrate")
def db_migrate() -> None:
    """Bring the metastore schema to the newest version (safe to run again).

    \b
    Example:
      hareflow db migrate
    """
    _migrate(get_settings())


def _migrate(settings: Any, wait: float = 0.0) -> Any:
    """Migrate to head and say the revision; while the database is unreachable, keep trying for
    ``wait`` seconds. Returns the engine."""
    import time

    from sqlalchemy.exc import OperationalError

    from hareflow.common.db import create_engine_for
    from hareflow.common.db.migrate import migrate, status

    deadline = time.monotonic() + wait
    while True:
        try:
            engine = create_engine_for(settings.effective_database_url)
            migrate(engine)
            click.echo(f"metastore at revision {status(engine).current}")
            return engine
        except Exception as exc:
            if time.monotonic() >= deadline or not isinstance(exc, OperationalError):
                fail_unreachable(settings, exc)
            time.sleep(1.0)


@db.command("init")
@click.option(
    "--wait",
    default=0.0,
    type=float,
    metavar="SECONDS",
    help="Keep trying this long while the database is not reachable yet (it may still be starting).",
)
def db_init(wait: float) -> None:
    """Migrate the metastore and create the first admin user from the configuration (safe to run
    again: an existing user is left alone). The one-shot step before a deployment starts.

    The user is HAREFLOW_ADMIN_USERNAME (default admin) with the password HAREFLOW_ADMIN_PASSWORD;
    with no password set, no user is created.

    \b
    Example:
      HAREFLOW_ADMIN_PASSWORD=change-me hareflow db init --wait 60
    """
    settings = get_settings()
    engine = _migrate(settings, wait)
    username, password = settings.admin_username, settings.admin_password
    if not password:
        click.echo("no admin user created (set HAREFLOW_ADMIN_PASSWORD to create one)")
        return
    from sqlalchemy import select

    from hareflow.common.db import User, make_session_factory
    from hareflow.common.users import UserAccountError, create_user

    sessions = make_session_factory(engine)
    try:
        with sessions() as session, session.begin():
            if session.scalar(select(User).where(User.username == username)) is not None:
                click.echo(f"user {username} exists; left alone")
                return
            create_user(session, username, password, "admin", created_by="db init")
    except UserAccountError as exc:
        raise UserError(f"HAREFLOW_ADMIN_USERNAME / HAREFLOW_ADMIN_PASSWORD: {exc}") from None
    click.echo(f"admin user {username} created")


@db.command("check")
def db_check() -> None:
    """Exit 0 if the schema is current, 1 if it needs `hareflow db migrate`, 2 if unreachable.

    \b
    Example:
      hareflow db check || hareflow db migrate
    """
    settings = get_settings()
    from hareflow.common.db import create_engine_for
    from hareflow.common.db.migrate import status

    try:
        st = status(create_engine_for(settings.effective_database_url))
    except Exception as exc:
        fail_unreachable(settings, exc)
    if st.is_current:
        click.echo(f"metastore is current (revision {st.head})")
        return
    click.echo(
        f"metastore is at {st.current or 'no revision'}, newest is {st.head}: run `hareflow db migrate`"
    )
    sys.exit(1)


@db.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def db_reset(yes: bool) -> None:
    """Drop every hareflow table and migrate again: ALL history is lost.

    \b
    Example:
      hareflow db reset --yes
    """
    settings = get_settings()
    from hareflow.common.config import mask_url

    if not yes:
        click.confirm(f"Erase everything in {mask_url(settings.effective_database_url)}?", abort=True)
    from hareflow.common.db import create_engine_for
    from hareflow.common.db.migrate import downgrade, migrate

    try:
        engine = create_engine_for(settings.effective_database_url)
        downgrade(engine, "base")
        migrate(engine)
    except Exception as exc:
        fail_unreachable(settings, exc)
    click.echo("metastore reset")
