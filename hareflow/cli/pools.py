"""``hareflow pools``: named slot limits that tasks share (``@task(pool="db", pool_slots=1)``)."""

from __future__ import annotations

import click

from hareflow.cli.common import (
    CONTEXT_SETTINGS,
    cli_user,
    get_settings,
    metastore,
    output_option,
    print_json,
    print_table,
    user_mistakes,
)


@click.group(context_settings=CONTEXT_SETTINGS)
def pools() -> None:
    """List, create, resize and delete pools. A task naming a pool that does not exist fails.

    \b
    Example:
      hareflow pools set warehouse 4 --description "connections to the warehouse"
    """


@pools.command("list")
@output_option
def pools_list(output: str) -> None:
    """List the pools with their slots and the slots queued and running tasks hold now.

    \b
    Example:
      hareflow pools list
    """
    settings = get_settings()
    from hareflow.common.operations import list_pools

    with metastore(settings) as sessions, sessions() as session:
        rows = list_pools(session)
    if output == "json":
        print_json([p.to_dict() for p in rows])
        return
    print_table(
        ["pool", "slots", "used", "description"],
        [[p.name, p.slots, p.used, p.description] for p in rows],
        empty="no pools (create one with `hareflow pools set NAME SLOTS`)",
    )


@pools.command("set")
@click.argument("name")
@click.argument("slots", type=click.IntRange(0))
@click.option("--description", default=None, help="What the pool protects.")
def pools_set(name: str, slots: int, description: str | None) -> None:
    """Create pool NAME with SLOTS slots, or change its slots.

    \b
    Example:
      hareflow pools set warehouse 4 --description "connections to the warehouse"
    """
    settings = get_settings()
    from hareflow.common.operations import set_pool

    with metastore(settings) as sessions, user_mistakes(), sessions() as session, session.begin():
        _, created = set_pool(session, name, slots, description=description, username=cli_user(settings))
    click.echo(f"pool {name} {'created' if created else 'updated'} with {slots} slot(s)")


@pools.command("delete")
@click.argument("name")
def pools_delete(name: str) -> None:
    """Delete pool NAME (tasks naming it fail when next scheduled, until it is created again).

    \b
    Example:
      hareflow pools delete warehouse
    """
    settings = get_settings()
    from hareflow.common.operations import delete_pool

    with metastore(settings) as sessions, user_mistakes(), sessions() as session, session.begin():
        delete_pool(session, name, username=cli_user(settings))
    click.echo(f"pool {name} deleted")
