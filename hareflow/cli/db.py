"""``hareflow db``: create, upgrade, check and erase the metastore schema, and clean its history."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from hareflow.cli.common import (
    CONTEXT_SETTINGS,
    UserError,
    cli_user,
    complete_dag_id,
    fail_unreachable,
    get_settings,
    metastore,
    output_option,
    print_json,
    print_table,
    when,
)


@click.group(context_settings=CONTEXT_SETTINGS)
def db() -> None:
    """Create, upgrade, check and erase the metastore schema; delete old history.

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


@db.command("clean")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    type=float,
    metavar="DAYS",
    help="Delete finished runs that ended more than DAYS days ago (and the other history that old).",
)
@click.option(
    "--dag",
    "dag_id",
    default=None,
    metavar="DAG_ID",
    shell_complete=complete_dag_id,
    help="Only this DAG's runs, backfills, audit entries and dead letters.",
)
@click.option("--dry-run", is_flag=True, help="Print how many rows each table would lose; delete nothing.")
@click.option(
    "--archive",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write every deleted row to FILE (JSON lines, mode 0600) before it is deleted.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@output_option
def db_clean(
    older_than: float, dag_id: str | None, dry_run: bool, archive: Path | None, yes: bool, output: str
) -> None:
    """Delete history older than DAYS days: finished runs with their task instances, tries,
    results, rendered fields and logs, and old audit entries, settled dead letters, consumed asset
    events and silent schedulers' heartbeats. Queued and running runs are never touched, nor what
    the scheduler still reads (each DAG's latest scheduled run, see docs/cli.md). Safe while the
    scheduler and results consumers run: it works in short transactions.

    \b
    Example:
      hareflow db clean --older-than 90 --dry-run
      hareflow db clean --older-than 90 --archive history-2026-q1.jsonl --yes
    """
    from hareflow.common.retention import ArchiveFile, CleanError, audit_clean, clean_history, cutoff_for

    if dry_run and archive is not None:
        raise UserError("--archive writes the rows deleted, and --dry-run deletes none: use one of them")
    try:
        cutoff = cutoff_for(older_than)
    except CleanError as exc:
        raise UserError(f"--older-than: {exc}") from None
    settings = get_settings()
    with metastore(settings) as sessions:
        if dag_id is not None:
            _require_dag(sessions, dag_id)
        if not dry_run and not yes:
            planned = clean_history(sessions, cutoff=cutoff, dag_id=dag_id, dry_run=True)
            _print_clean(planned, output, None)
            if not planned.total:
                return
            click.confirm(f"Delete these {planned.total} rows?", abort=True)
        writer = None
        if archive is not None:
            try:
                writer = ArchiveFile(archive)
            except CleanError as exc:
                raise UserError(f"--archive: {exc}") from None
        report = None
        try:
            report = clean_history(sessions, cutoff=cutoff, dag_id=dag_id, dry_run=dry_run, archive=writer)
        finally:
            if writer is not None:
                writer.close()  # what was deleted so far is in the archive, even after an error
        if not dry_run:
            audit_clean(
                sessions,
                report.counts,
                cutoff=cutoff,
                username=cli_user(settings),
                dag_id=dag_id,
                archive=str(archive) if archive is not None else None,
            )
    _print_clean(report, output, archive)


def _require_dag(sessions: Any, dag_id: str) -> None:
    from sqlalchemy import select

    from hareflow.common.db import Dag, DagRun

    with sessions() as session:
        known = session.get(Dag, dag_id) is not None or session.scalar(
            select(DagRun.id).where(DagRun.dag_id == dag_id).limit(1)
        )
    if not known:
        raise UserError(
            f"no DAG named {dag_id!r} and no runs of it in the metastore (see `hareflow dags list`)"
        )


def _print_clean(report: Any, output: str, archive: Path | None) -> None:
    if output == "json":
        print_json(
            {
                "cutoff": report.cutoff,
                "dry_run": report.dry_run,
                "tables": report.counts,
                "total": report.total,
                "kept_runs": report.kept_runs,
                "archive": str(archive) if archive is not None else None,
            }
        )
        return
    print_table(["table", "rows"], [(name, count) for name, count in report.counts.items()])
    verb = "would delete" if report.dry_run else "deleted"
    click.echo(f"{verb} {report.total} rows older than {when(report.cutoff)} UTC", err=True)
    if report.kept_runs:
        click.echo(
            f"kept {report.kept_runs} old finished run(s) the scheduler still reads "
            "(each DAG's latest scheduled run and newest run, see docs/cli.md)",
            err=True,
        )
    if archive is not None:
        click.echo(f"archive: {archive}", err=True)
