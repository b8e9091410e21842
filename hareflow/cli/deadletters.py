"""``hareflow deadletters``: the messages moved to the dead-letter queue, as the results consumers
recorded them; requeue them to their queue or discard them (both audited)."""

from __future__ import annotations

from collections.abc import Sequence
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

STATE_CHOICES = ["dead", "requeued", "discarded", "all"]


@click.group(context_settings=CONTEXT_SETTINGS)
def deadletters() -> None:
    """List, show, requeue and discard dead-lettered messages.

    \b
    Example:
      hareflow deadletters list
      hareflow deadletters show 12
      hareflow deadletters requeue 12 13
      hareflow deadletters discard 14
    """


@deadletters.command("list")
@click.option("--queue", default=None, help="Only those dead-lettered from this queue (as listed).")
@click.option(
    "--state",
    type=click.Choice(STATE_CHOICES),
    default="dead",
    show_default=True,
    help="dead: neither requeued nor discarded; all: every state.",
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000), help="Newest shown.")
@output_option
def deadletters_list(queue: str | None, state: str, limit: int, output: str) -> None:
    """Dead letters, newest first: id, when, queue, reason, deliveries, what they belong to.

    \b
    Example:
      hareflow deadletters list --queue hareflow.q.default
      hareflow deadletters list --state all -o json
    """
    from hareflow.common import dead_letters

    with metastore(get_settings()) as sessions, sessions() as session:
        rows = dead_letters.list_dead_letters(
            session, queue=queue, state=None if state == "all" else state, limit=limit
        )
        items = [dead_letters.dead_letter_dict(r) for r in rows]
    if output == "json":
        print_json(items)
        return
    table = [
        (
            d["id"],
            d["state"],
            (d["received_at"] or "")[:19].replace("T", " "),
            d["queue"] or "?",
            _short(d["reason"], 60),
            d["deliveries"],
            _belongs(d),
        )
        for d in items
    ]
    print_table(
        ["id", "state", "received (UTC)", "queue", "reason", "deliveries", "belongs to"],
        table,
        empty="No dead letters." if state == "dead" else f"No dead letters in state {state}.",
    )


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _belongs(d: dict[str, Any]) -> str:
    if d["task_id"]:
        index = f"[{d['map_index']}]" if d["map_index"] is not None and d["map_index"] >= 0 else ""
        return f"{d['dag_id']}/{d['run_id']}/{d['task_id']}{index}#{d['try_number']}"
    return f"({d['message_type']} message)" if d["message_type"] else "(unparseable)"


@deadletters.command("show")
@click.argument("dead_letter_id", type=int)
@output_option
def deadletters_show(dead_letter_id: int, output: str) -> None:
    """One dead letter: everything listed, plus its headers and whole payload.

    \b
    Example:
      hareflow deadletters show 12 -o json
    """
    import json

    from hareflow.common import dead_letters

    with metastore(get_settings()) as sessions, sessions() as session:
        try:
            d = dead_letters.dead_letter_dict(
                dead_letters.get_dead_letter(session, dead_letter_id), full=True
            )
        except dead_letters.DeadLetterError as exc:
            raise UserError(exc.message) from None
    if output == "json":
        print_json(d)
        return
    facts = [
        ("id", d["id"]),
        ("state", d["state"] + (f" by {d['state_by']} at {d['state_at']}" if d["state_by"] else "")),
        ("received", d["received_at"]),
        ("queue", d["queue"] or "?"),
        ("reason", d["reason"]),
        ("deliveries", d["deliveries"]),
        ("message id", d["message_id"] or "-"),
        ("type", d["message_type"] or "not a hareflow message"),
        ("belongs to", _belongs(d)),
        ("size", f"{d['body_size']} bytes" + (" (only the first 1 MiB kept)" if d["truncated"] else "")),
    ]
    width = max(len(k) for k, _ in facts)
    for key, value in facts:
        click.echo(f"{key:<{width}}  {value}")
    click.echo("\nheaders:")
    click.echo(json.dumps(d["headers"], indent=2))
    click.echo("\npayload:")
    click.echo(d["body"])


@deadletters.command("requeue")
@click.argument("dead_letter_ids", nargs=-1, required=True, type=int)
@output_option
def deadletters_requeue(dead_letter_ids: Sequence[int], output: str) -> None:
    """Publish each dead letter back to the queue it came from (confirmed by the broker), with its
    original headers and a fresh delivery count. Refused, with the reason, for one already requeued
    or discarded, a task message whose try has ended (clear the task instance instead), or a body
    nothing can read. Audited.

    \b
    Example:
      hareflow deadletters requeue 12 13
    """
    settings = get_settings()
    if settings.effective_executor != "rabbitmq":
        raise UserError(
            "the local executor keeps its queues inside the `hareflow standalone` process: requeue from "
            "its web UI (Dead letters page), or set HAREFLOW_BROKER_URL to use RabbitMQ"
        )
    from hareflow.common.broker import BrokerError, make_executor

    executor = make_executor(settings, connection_name="hareflow-cli")
    try:
        executor.start(timeout=5)  # type: ignore[call-arg]
    except BrokerError as exc:
        raise UserError(str(exc)) from None
    try:
        _settle_each(settings, dead_letter_ids, "requeue", output, executor=executor)
    finally:
        executor.close()


@deadletters.command("discard")
@click.argument("dead_letter_ids", nargs=-1, required=True, type=int)
@output_option
def deadletters_discard(dead_letter_ids: Sequence[int], output: str) -> None:
    """Mark each dead letter discarded: hidden from the default list, kept for the audit trail.
    Audited.

    \b
    Example:
      hareflow deadletters discard 14
    """
    _settle_each(get_settings(), dead_letter_ids, "discard", output)


def _settle_each(settings: Any, ids: Sequence[int], what: str, output: str, executor: Any = None) -> None:
    """Requeue or discard each id in its own transaction; report every one, exit 2 if any failed."""
    from hareflow.common import dead_letters
    from hareflow.common.audit import cli_origin, cli_user
    from hareflow.common.broker import BrokerError

    user, origin = cli_user(settings), cli_origin()
    done: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    with metastore(settings) as sessions:
        for dead_letter_id in ids:
            try:
                with sessions() as session, session.begin():
                    if what == "requeue":
                        row = dead_letters.requeue(
                            session,
                            executor,
                            dead_letter_id,
                            username=user,
                            origin=origin,
                            prefix=settings.broker_prefix,
                        )
                    else:
                        row = dead_letters.discard(session, dead_letter_id, username=user, origin=origin)
                    done.append(dead_letters.dead_letter_dict(row))
            except (dead_letters.DeadLetterError, BrokerError) as exc:
                failed.append({"id": dead_letter_id, "error": getattr(exc, "message", str(exc))})
    notify_scheduler(
        settings, [{"kind": "deadletter", "dag_id": d["dag_id"] or "", "state": d["state"]} for d in done]
    )
    verb = "requeued" if what == "requeue" else "discarded"
    if output == "json":
        print_json({verb: done, "errors": failed})
    else:
        for d in done:
            click.echo(f"dead letter {d['id']} {verb}" + (f" to {d['queue']}" if what == "requeue" else ""))
        for f in failed:
            click.echo(f"error: {f['error']}", err=True)
    if failed:
        raise SystemExit(UserError.exit_code)
