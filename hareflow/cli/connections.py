"""``hareflow connections``: how tasks reach other systems, stored in the metastore encrypted
with the Fernet key(s) in ``fernet_key``.

Lists never show a password; ``get`` masks it unless asked. Every change is written to the audit
log with the operating-system user who ran the command (ids and counts, never a value).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from hareflow.cli.common import CONTEXT_SETTINGS, UserError, get_settings, metastore, print_table, when
from hareflow.cli.secretfiles import (
    FORMATS,
    audit,
    cipher,
    dump,
    format_of,
    output_option,
    print_data,
    read_entries,
    report_import,
    secrets_mistakes,
    write_private,
)

MASK = "***"


@click.group(context_settings=CONTEXT_SETTINGS)
def connections() -> None:
    """Add, list, show, test, import, export and delete connections; rotate the Fernet key.

    Tasks read a connection with Connection.get(conn_id): from the environment
    (HAREFLOW_CONN_<ID>) first, then the configured secrets backends, then the metastore these
    commands manage.

    \b
    Example:
      hareflow connections add warehouse --uri postgresql://etl@db:5432/dwh --password -
      hareflow connections test warehouse
    """


# -- add ----------------------------------------------------------------------------------------------


def _password(password: str | None, password_stdin: bool) -> str | None:
    """The password from the option, a hidden prompt (``-``) or one line of standard input."""
    if password_stdin:
        if password is not None:
            raise UserError("give --password or --password-stdin, not both")
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UserError("--password-stdin: no password on standard input")
        return line
    if password == "-":
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))
    return password


@connections.command("add")
@click.argument("conn_id")
@click.option(
    "--uri", default=None, help="The whole connection as scheme://login:password@host:port/schema?extra."
)
@click.option("--conn-type", default=None, help="Its type: postgresql, mysql, sqlite, http, smtp, ...")
@click.option("--host", default=None, help="Host name (for sqlite: the database file).")
@click.option("--port", default=None, type=int, help="TCP port.")
@click.option("--login", default=None, help="User name.")
@click.option("--password", default=None, help="Password; '-' asks for it (hidden).")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
@click.option("--schema", default=None, help="Database, or http/https for HTTP.")
@click.option(
    "--extra", default=None, help='A JSON object of further settings, like \'{"sslmode": "require"}\'.'
)
@click.option("--description", default=None, help="What it is for.")
@click.option(
    "--allowed-dag-ids", default=None, help="Comma-separated DAG ids whose tasks may read it (default: all)."
)
@click.option("--replace", is_flag=True, help="Overwrite the connection if CONN_ID exists.")
def connections_add(
    conn_id: str,
    uri: str | None,
    conn_type: str | None,
    host: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    password_stdin: bool,
    schema: str | None,
    extra: str | None,
    description: str | None,
    allowed_dag_ids: str | None,
    replace: bool,
) -> None:
    """Add connection CONN_ID from --uri or from field options.

    A field option given with --uri overrides that part of it. Keep passwords out of the shell
    history with --password - (a hidden prompt) or --password-stdin. An existing CONN_ID is
    refused unless --replace.

    \b
    Example:
      hareflow connections add warehouse --uri postgresql://etl@db:5432/dwh --password -
      hareflow connections add api --conn-type http --host api.example.com --schema https \\
          --login bot --password-stdin --extra '{"headers": {"Accept": "application/json"}}'
    """
    from dataclasses import replace as with_fields

    from hareflow.common.db.models import ConnectionRow
    from hareflow.common.secrets.connection import Connection
    from hareflow.common.secrets.store import put_connection

    fields: dict[str, Any] = {
        "conn_type": conn_type,
        "host": host,
        "port": port,
        "login": login,
        "schema": schema,
        "extra": extra,
        "description": description,
        "allowed_dag_ids": allowed_dag_ids,
    }
    if uri is None and conn_type is None:
        raise UserError("give --uri URI or --conn-type TYPE (and the fields it needs)")
    with secrets_mistakes():
        if uri is not None:
            fields["uri"] = uri
        conn = Connection.from_dict(conn_id, {k: v for k, v in fields.items() if v is not None})
    settings = get_settings()
    key = cipher(settings)
    with metastore(settings) as sessions:
        with sessions() as session:
            exists = session.get(ConnectionRow, conn_id) is not None
        if exists and not replace:
            raise UserError(f"connection {conn_id!r} exists: add --replace to overwrite it")
        secret = _password(password, password_stdin)
        if secret is not None:
            conn = with_fields(conn, password=secret)
        with sessions() as session, session.begin(), secrets_mistakes():
            created = put_connection(session, conn, key)
            audit(session, "connection_add", {"conn_id": conn_id, "replaced": not created})
    click.echo(f"connection {conn_id} {'added' if created else 'replaced'} ({conn.conn_type})")


# -- list / get ---------------------------------------------------------------------------------------


@connections.command("list")
@output_option
def connections_list(output: str) -> None:
    """List the connections in the metastore. Passwords and extras are never shown (nor
    decrypted): the password column says whether one is set.

    \b
    Example:
      hareflow connections list -o json
    """
    settings = get_settings()
    from hareflow.common.secrets.store import list_connections

    with metastore(settings) as sessions, sessions() as session:
        rows = list_connections(session)
    if output != "table":
        print_data([r.to_dict() for r in rows], output)
        return
    print_table(
        ["conn_id", "type", "host", "port", "login", "schema", "password", "description", "updated"],
        [
            [
                r.conn_id,
                r.conn_type,
                r.host,
                r.port,
                r.login,
                r.schema,
                "set" if r.password_set else "not set",
                r.description,
                when(r.updated_at),
            ]
            for r in rows
        ],
        empty="no connections (add one with `hareflow connections add CONN_ID --uri URI`)",
    )


def _load(settings: Any, conn_id: str) -> Any:
    """The decrypted connection CONN_ID from the metastore, or a UserError."""
    from hareflow.common.secrets.store import get_connection

    key = cipher(settings)
    with metastore(settings) as sessions, sessions() as session, secrets_mistakes():
        conn = get_connection(session, conn_id, key)
    if conn is None:
        raise UserError(f"no connection {conn_id!r} in the metastore (see `hareflow connections list`)")
    return conn


def _masked_uri(conn: Any) -> str:
    """The URI with the password as ``***`` and sensitive extra values masked."""
    from dataclasses import replace

    from hareflow.common.secrets.masking import redact_mapping

    marker = "\x00"  # quoted as %00; a real password is replaced before get_uri sees it
    uri = replace(
        conn, password=marker if conn.password else None, extra=redact_mapping(conn.extra)
    ).get_uri()
    return uri.replace(":%00@", f":{MASK}@", 1).replace("%2A%2A%2A", MASK)


@connections.command("get")
@click.argument("conn_id")
@click.option("--show-secrets", is_flag=True, help="Show the password and sensitive extra values.")
@click.option(
    "--uri", "as_uri", is_flag=True, help="Print the URI form (password masked unless --show-secrets)."
)
@output_option
def connections_get(conn_id: str, show_secrets: bool, as_uri: bool, output: str) -> None:
    """Show connection CONN_ID from the metastore, its password masked.

    The password reads *** (and so do extra values under keys like token or secret) unless
    --show-secrets.

    \b
    Example:
      hareflow connections get warehouse
      psql "$(hareflow connections get warehouse --uri --show-secrets)"
    """
    settings = get_settings()
    conn = _load(settings, conn_id)
    if as_uri:
        click.echo(conn.get_uri() if show_secrets else _masked_uri(conn))
        return
    data = conn.to_dict(secrets=show_secrets)
    if not show_secrets:
        data.pop("password_set")
        data["password"] = MASK if conn.password else None
    if output != "table":
        print_data(data, output)
        return
    import json

    order = ["conn_id", "conn_type", "description", "host", "port", "login", "password", "schema"]
    rows: list[list[object]] = [[k, data[k]] for k in order]
    rows.append(["extra", json.dumps(data["extra"]) if data["extra"] else None])
    allowed = data["allowed_dag_ids"]
    rows.append(["allowed_dag_ids", "all DAGs" if allowed is None else ", ".join(allowed) or "none"])
    print_table(["field", "value"], rows)


# -- delete -------------------------------------------------------------------------------------------


@connections.command("delete")
@click.argument("conn_id")
def connections_delete(conn_id: str) -> None:
    """Delete connection CONN_ID from the metastore.

    The environment and the secrets backends are not touched.

    \b
    Example:
      hareflow connections delete warehouse
    """
    settings = get_settings()
    from hareflow.common.secrets.store import delete_connection

    with metastore(settings) as sessions, sessions() as session, session.begin():
        deleted = delete_connection(session, conn_id)
        if deleted:
            audit(session, "connection_delete", {"conn_id": conn_id})
    if not deleted:
        raise UserError(f"no connection {conn_id!r} in the metastore (see `hareflow connections list`)")
    click.echo(f"connection {conn_id} deleted")


# -- test ---------------------------------------------------------------------------------------------


def _lookup(settings: Any, conn_id: str) -> tuple[Any, str]:
    """The connection as a task would get it, and the name of the backend that answered: the
    environment and secrets backends first (no database needed), then the metastore."""
    from hareflow.common.secrets.backends import CONN_ENV_PREFIX, chain_from_settings, env_name
    from hareflow.common.secrets.errors import ConnectionNotFound

    def first(chain: Any) -> tuple[Any, str] | None:
        for backend in chain.backends:
            conn = backend.get_connection(conn_id)
            if conn is not None:
                name = backend.name
                if name == "environment":
                    name += f" ({env_name(CONN_ENV_PREFIX, conn_id)})"
                return conn, name
        return None

    with secrets_mistakes():
        found = first(chain_from_settings(settings))
        if found is not None:
            return found
        with metastore(settings) as sessions:
            chain = chain_from_settings(settings, sessions)
            found = first(chain)
        if found is None:
            raise ConnectionNotFound(
                f"connection {conn_id!r} is not defined (looked in: {chain.describe()}; "
                f"in the environment as {env_name(CONN_ENV_PREFIX, conn_id)})"
            )
        return found


@connections.command("test")
@click.argument("conn_id")
def connections_test(conn_id: str) -> None:
    """Connect to what CONN_ID points at; exit 1 if that fails.

    SQL runs SELECT 1, HTTP a GET, SMTP EHLO and NOOP. CONN_ID is looked up as a task would:
    HAREFLOW_CONN_<ID>, the secrets backends, then the metastore. Prints ok or failed with the
    reason and the time taken.

    \b
    Example:
      hareflow connections test warehouse
    """
    settings = get_settings()
    from hareflow.common.providers import test_connection

    conn, source = _lookup(settings, conn_id)
    click.echo(f"testing {conn_id} ({conn.conn_type}, from {source})", err=True)
    started = time.monotonic()
    result = test_connection(conn)
    seconds = result.seconds or time.monotonic() - started
    message = result.message.replace(conn.password, MASK) if conn.password else result.message
    click.echo(f"{'ok' if result.ok else 'failed'}: {message} ({seconds:.2f}s)")
    if not result.ok:
        sys.exit(1)


# -- import / export ----------------------------------------------------------------------------------


def _parse_all(path: str) -> list[Any]:
    """Every connection in the file, or a UserError naming the file, line, id and field of the
    first bad entry (and how many more there are): nothing is written unless all are good."""
    from hareflow.common.secrets.connection import Connection, connection_from_text
    from hareflow.common.secrets.errors import SecretsError

    entries = read_entries(path, "connection ids to connections")
    parsed, bad = [], []
    for conn_id, entry in entries.items.items():
        try:
            if isinstance(entry, str):
                parsed.append(connection_from_text(conn_id, entry))
            else:
                parsed.append(Connection.from_dict(conn_id, entry))
        except SecretsError as exc:
            bad.append(f"{entries.where(conn_id)}: {exc}")
    if bad:
        more = f" (and {len(bad) - 1} more bad entries)" if len(bad) > 1 else ""
        raise UserError(f"{bad[0]}{more}; nothing was imported")
    return parsed


@connections.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--overwrite", is_flag=True, help="Replace connections that exist (else they are skipped).")
def connections_import(file: str, overwrite: bool) -> None:
    """Import connections from a JSON or YAML FILE, all or nothing.

    FILE's format is told by its extension, else by its content. It is a mapping of conn_id to
    its fields ({"conn_type": ..., "host": ..., ...}), to {"uri": ...} or to a URI
    string. Every entry is checked first; if one is bad nothing is written. Existing ids are
    skipped and reported unless --overwrite.

    \b
    Example:
      hareflow connections import connections.yaml --overwrite
    """
    from hareflow.common.secrets.store import list_connections, put_connection

    conns = _parse_all(file)
    settings = get_settings()
    key = cipher(settings)
    added, replaced, skipped = [], [], []
    with metastore(settings) as sessions, sessions() as session, session.begin(), secrets_mistakes():
        existing = {r.conn_id for r in list_connections(session)}
        for conn in conns:
            if conn.conn_id in existing and not overwrite:
                skipped.append(conn.conn_id)
                continue
            put_connection(session, conn, key)
            (replaced if conn.conn_id in existing else added).append(conn.conn_id)
        audit(
            session,
            "connection_import",
            {"file": file, "added": added, "replaced": replaced, "skipped": skipped},
        )
    report_import(file, "connection", added, replaced, skipped)


@connections.command("export")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Default: by FILE's extension, else json.",
)
def connections_export(file: str, fmt: str | None) -> None:
    """Back up every connection, secrets included, to a JSON or YAML FILE.

    FILE (- for standard output) has the form `connections import` reads.

    The export INCLUDES PASSWORDS AND EXTRAS IN PLAIN TEXT: it is a backup, for moving
    connections between installations. The file is created readable by its owner only (0600);
    keep it somewhere as safe as the metastore.

    \b
    Example:
      hareflow connections export backup.yaml
    """
    from hareflow.common.secrets.store import get_connection, list_connections

    settings = get_settings()
    key = cipher(settings)
    out: dict[str, Any] = {}
    with metastore(settings) as sessions, sessions() as session, session.begin(), secrets_mistakes():
        for summary in list_connections(session):
            conn = get_connection(session, summary.conn_id, key)
            data = conn.to_dict(secrets=True)
            data.pop("conn_id")
            out[conn.conn_id] = {k: v for k, v in data.items() if v not in (None, {})}
        write_private(file, dump(out, format_of(file, fmt)))  # a failed write rolls the audit row back
        audit(session, "connection_export", {"file": file, "count": len(out)})
    if file != "-":
        click.echo(f"exported {len(out)} connection(s) to {file} (with their secrets; mode 0600)")


# -- keys ---------------------------------------------------------------------------------------------


@connections.command("rotate-key")
def connections_rotate_key() -> None:
    """Re-encrypt every connection and variable with the first Fernet key.

    To change the key: put a new key first (HAREFLOW_FERNET_KEY=new,old), run this, then drop
    the old key. Everything is re-encrypted in one transaction: if a value does not decrypt
    with any configured key, nothing changes.

    \b
    Example:
      HAREFLOW_FERNET_KEY="$(hareflow connections generate-key),$OLD_KEY" hareflow connections rotate-key
    """
    from hareflow.common.secrets.store import rotate_keys

    settings = get_settings()
    key = cipher(settings)
    with metastore(settings) as sessions, sessions() as session, session.begin(), secrets_mistakes():
        conns, variables = rotate_keys(session, key)
        audit(session, "secrets_rotate_key", {"connections": conns, "variables": variables})
    click.echo(f"re-encrypted {conns} connection(s) and {variables} variable(s) with the first key")
    if key.key_count > 1:
        click.echo("the other key(s) in fernet_key can now be removed", err=True)


@connections.command("generate-key")
def connections_generate_key() -> None:
    """Print a new Fernet key (for HAREFLOW_FERNET_KEY). Nothing is stored.

    \b
    Example:
      hareflow connections generate-key
    """
    from hareflow.common.secrets.crypto import generate_key

    click.echo(generate_key())
