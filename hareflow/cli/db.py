"""``hareflow db``: create, upgrade, check and erase the metastore schema."""

from __future__ import annotations

import sys

import click

from hareflow.cli.common import CONTEXT_SETTINGS, fail_unreachable, get_settings


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
    settings = get_settings()
    from common.db import create_engine_for
    from common.db.migrate import migrate, status

    try:
        engine = create_engine_for(settings.effective_database_url)
        migrate(engine)
        click.echo(f"metastore at revision {status(engine).current}")
    except Exception as exc:
        fail_unreachable(settings, exc)


@db.command("check")
def db_check() -> None:
    """Exit 0 if the schema is current, 1 if it needs `hareflow db migrate`, 2 if unreachable.

    \b
    Example:
      hareflow db check || hareflow db migrate
    """
    settings = get_settings()
    from common.db import create_engine_for
    from common.db.migrate import status

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
    from common.config import mask_url

    if not yes:
        click.confirm(f"Erase everything in {mask_url(settings.effective_database_url)}?", abort=True)
    from common.db import create_engine_for
    from common.db.migrate import downgrade, migrate

    try:
        engine = create_engine_for(settings.effective_database_url)
        downgrade(engine, "base")
        migrate(engine)
    except Exception as exc:
        fail_unreachable(settings, exc)
    click.echo("metastore reset")
