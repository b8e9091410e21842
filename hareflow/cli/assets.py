"""``hareflow assets``: the assets DAGs produce and are scheduled on, their events, and events
recorded from outside (``emit``), which start the DAGs scheduled on them as a producer's would."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from hareflow.cli.common import (
    CONTEXT_SETTINGS,
    UserError,
    get_settings,
    metastore,
    notify_scheduler,
    output_option,
    print_json,
    print_table,
)


@click.group(context_settings=CONTEXT_SETTINGS)
def assets() -> None:
    """List assets, show their events, record an event from outside.

    \b
    Example:
      hareflow assets list
      hareflow assets events warehouse://sales/orders
      hareflow assets emit warehouse://sales/orders --extra '{"rows": 1200}'
    """


@assets.command("list")
@output_option
def assets_list(output: str) -> None:
    """Every asset: who produces it (dag.task), which DAGs are scheduled on it, its last event.

    \b
    Example:
      hareflow assets list
      hareflow assets list -o json
    """
    from hareflow.common.assets import list_assets

    with metastore(get_settings()) as sessions, sessions() as session:
        items = list_assets(session, latest=1)
    if output == "json":
        print_json(items)
        return
    rows = [
        (
            a["uri"],
            ", ".join(a["producers"]) or "-",
            ", ".join(a["consumers"]) or "-",
            a["latest_events"][0]["timestamp"][:19].replace("T", " ") if a["latest_events"] else "-",
        )
        for a in items
    ]
    print_table(["uri", "producers", "consumers", "last event"], rows, empty="No assets yet.")


@assets.command("events")
@click.argument("uri")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Newest events shown."
)
@output_option
def assets_events(uri: str, limit: int, output: str) -> None:
    """The latest events of the asset URI, newest first.

    \b
    Example:
      hareflow assets events warehouse://sales/orders --limit 5
    """
    from hareflow.common.assets import list_assets

    with metastore(get_settings()) as sessions, sessions() as session:
        found = list_assets(session, uri=uri, latest=limit)
    if not found:
        raise UserError(f"no asset {uri!r} (see `hareflow assets list`)")
    events = found[0]["latest_events"]
    if output == "json":
        print_json(events)
        return
    rows = [
        (
            e["id"],
            e["timestamp"][:19].replace("T", " "),
            f"{e['source_dag_id']}.{e['source_task_id']}"
            if e["source_dag_id"]
            else f"(posted by {e['created_by']})",
            e["source_run_id"] or "-",
            _extra(e["extra"]),
        )
        for e in events
    ]
    print_table(["id", "time", "source", "run", "extra"], rows, empty=f"No events of {uri} yet.")


def _extra(extra: dict[str, Any]) -> str:
    import json

    text = json.dumps(extra) if extra else "-"
    return text if len(text) <= 60 else text[:57] + "..."


@assets.command("emit")
@click.argument("uri")
@click.option(
    "--extra", default=None, help="A JSON object stored with the event (the consumers' tasks see it)."
)
@output_option
def assets_emit(uri: str, extra: str | None, output: str) -> None:
    """Record an event of the asset URI from outside: DAGs scheduled on it react as to a
    producer's event. The asset must exist (a DAG names it); the event is audited.

    \b
    Example:
      hareflow assets emit warehouse://sales/orders --extra '{"rows": 1200}'
    """
    import json

    from hareflow.cli.common import cli_user
    from hareflow.common.assets import (
        UnknownAssetError,
        asset_event_notice,
        event_dict,
        record_external_event,
    )
    from hareflow.common.dag.assets import AssetError, check_extra, check_uri
    from hareflow.common.operations import audit

    try:
        check_uri(uri)
        payload = check_extra(json.loads(extra) if extra is not None else None, "--extra")
    except AssetError as exc:
        raise UserError(exc.message) from None
    except ValueError as exc:
        raise UserError(f"--extra is not valid JSON: {exc}") from None
    settings = get_settings()
    now = datetime.now(UTC)
    user = cli_user(settings)
    with metastore(settings) as sessions, sessions() as session, session.begin():
        try:
            event = record_external_event(session, uri, payload, user, now)
        except UnknownAssetError as exc:
            raise UserError(str(exc)) from None
        audit(session, "asset_event", username=user, details={"uri": uri, "event_id": event.id}, now=now)
        result = event_dict(event, uri)
        notice = asset_event_notice(event)
    notify_scheduler(settings, [{"kind": notice.kind, "dag_id": notice.dag_id, "state": notice.state}])
    if output == "json":
        print_json(result)
    else:
        click.echo(f"recorded event {result['id']} of {uri}")
