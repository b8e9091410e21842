"""``hareflow variables``: key → value settings tasks read with ``Variable.get(key)``, stored in
the metastore encrypted with the Fernet key(s) in ``fernet_key``.

A variable whose key looks sensitive (contains password, secret, token, api_key, ...) is listed
as ``***``. Every change is written to the audit log with the operating-system user who ran the
command (keys and counts, never a value).
"""

from __future__ import annotations

import json
import sys
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
TABLE_WIDTH = 60  # longer values are cut in the table (-o json shows them whole)


@click.group(context_settings=CONTEXT_SETTINGS)
def variables() -> None:
    """Set, get, list, import, export and delete variables.

    Tasks read a variable with Variable.get(key): from the environment (HAREFLOW_VAR_<KEY>)
    first, then the configured secrets backends, then the metastore these commands manage.

    \b
    Example:
      hareflow variables set threshold 10
      hareflow variables set targets '{"eu": 3, "us": 5}' --json
    """


def _not_found(key: str) -> UserError:
    return UserError(f"no variable {key!r} in the metastore (see `hareflow variables list`)")


@variables.command("set")
@click.argument("key")
@click.argument("value")
@click.option("--json", "as_json", is_flag=True, help="VALUE is JSON: check it and store its JSON text.")
@click.option("--description", default=None, help="What it is for (kept if not given again).")
def variables_set(key: str, value: str, as_json: bool, description: str | None) -> None:
    """Set variable KEY to VALUE (created or replaced).

    VALUE - reads it from standard input,
    which keeps a secret out of the shell history.

    \b
    Example:
      hareflow variables set threshold 10 --description "rows below this fail the check"
      hareflow variables set targets '{"eu": 3, "us": 5}' --json
      printf '%s' "$TOKEN" | hareflow variables set api_token -
    """
    from hareflow.common.secrets.connection import check_id
    from hareflow.common.secrets.store import put_variable

    with secrets_mistakes():
        check_id(key, "variable key")
    if value == "-":
        value = sys.stdin.read().removesuffix("\n")
    if as_json:
        try:
            value = json.dumps(json.loads(value))
        except ValueError as exc:
            raise UserError(f"--json: the value of {key!r} is not valid JSON: {exc}") from None
    settings = get_settings()
    fernet = cipher(settings)
    with metastore(settings) as sessions, sessions() as session, session.begin(), secrets_mistakes():
        created = put_variable(session, key, value, fernet, description=description)
        audit(session, "variable_set", {"key": key, "created": created})
    click.echo(f"variable {key} {'created' if created else 'updated'}")


variables.add_command(
    click.Command(
        "add",
        callback=variables_set.callback,
        params=variables_set.params,
        help="The same as `hareflow variables set`.\n\n\b\nExample:\n  hareflow variables add threshold 10",
        context_settings=CONTEXT_SETTINGS,
    )
)


@variables.command("get")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Parse the value as JSON and print it indented.")
@click.option("--default", default=None, help="Print this when KEY is not set (instead of an error).")
def variables_get(key: str, as_json: bool, default: str | None) -> None:
    """Print the value of variable KEY from the metastore.

    \b
    Example:
      hareflow variables get targets --json
      hareflow variables get threshold --default 10
    """
    from hareflow.common.secrets.store import get_variable

    settings = get_settings()
    fernet = cipher(settings)
    with metastore(settings) as sessions, sessions() as session, secrets_mistakes():
        text = get_variable(session, key, fernet)
    if text is None:
        if default is None:
            raise _not_found(key)
        text = default
    if as_json:
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError as exc:
            raise UserError(f"variable {key!r} is not valid JSON: {exc}") from None
    click.echo(text)


@variables.command("list")
@output_option
def variables_list(output: str) -> None:
    """List the variables in the metastore, sensitive values masked.

    A variable whose key looks sensitive (password, secret, token, api_key, ...) shows ***.

    \b
    Example:
      hareflow variables list -o json
    """
    from hareflow.common.secrets.masking import is_sensitive
    from hareflow.common.secrets.store import list_variables

    settings = get_settings()
    fernet = cipher(settings)
    with metastore(settings) as sessions, sessions() as session, secrets_mistakes():
        rows = list_variables(session, fernet)
    shown = [(v.key, MASK if is_sensitive(v.key) else v.value, v.description, v.updated_at) for v in rows]
    if output != "table":
        print_data(
            [
                {"key": k, "value": val, "description": d, "updated_at": u.isoformat()}
                for k, val, d, u in shown
            ],
            output,
        )
        return
    print_table(
        ["key", "value", "description", "updated"],
        [[k, _cut(val), d, when(u)] for k, val, d, u in shown],
        empty="no variables (set one with `hareflow variables set KEY VALUE`)",
    )


def _cut(value: str) -> str:
    value = value.replace("\n", " ")
    return value if len(value) <= TABLE_WIDTH else value[: TABLE_WIDTH - 1] + "…"


@variables.command("delete")
@click.argument("key")
def variables_delete(key: str) -> None:
    """Delete variable KEY from the metastore.

    \b
    Example:
      hareflow variables delete threshold
    """
    from hareflow.common.secrets.store import delete_variable

    settings = get_settings()
    with metastore(settings) as sessions, sessions() as session, session.begin():
        deleted = delete_variable(session, key)
        if deleted:
            audit(session, "variable_delete", {"key": key})
    if not deleted:
        raise _not_found(key)
    click.echo(f"variable {key} deleted")


# -- import / export ----------------------------------------------------------------------------------


def _entry(key: str, entry: Any) -> tuple[str, str | None]:
    """(text, description) of one import entry, or a SecretsError naming what is wrong."""
    from hareflow.common.secrets.connection import check_id
    from hareflow.common.secrets.errors import SecretsError
    from hareflow.common.secrets.store import variable_text

    check_id(key, "variable key")
    description = None
    if isinstance(entry, dict) and "value" in entry and set(entry) <= {"value", "description"}:
        description = entry.get("description")
        if description is not None and not isinstance(description, str):
            raise SecretsError(f"variable {key!r}: description must be a string")
        entry = entry["value"]
    if entry is None:
        raise SecretsError(f"variable {key!r}: value is missing (null)")
    return variable_text(entry), description


def _parse_all(path: str) -> list[tuple[str, str, str | None]]:
    from hareflow.common.secrets.errors import SecretsError

    entries = read_entries(path, "variable keys to values")
    parsed, bad = [], []
    for key, entry in entries.items.items():
        try:
            parsed.append((key, *_entry(key, entry)))
        except SecretsError as exc:
            bad.append(f"{entries.where(key)}: {exc}")
    if bad:
        more = f" (and {len(bad) - 1} more bad entries)" if len(bad) > 1 else ""
        raise UserError(f"{bad[0]}{more}; nothing was imported")
    return parsed


@variables.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--overwrite", is_flag=True, help="Replace variables that exist (else they are skipped).")
def variables_import(file: str, overwrite: bool) -> None:
    """Import variables from a JSON or YAML FILE, all or nothing.

    FILE's format is told by its extension, else by its content. It is a mapping of key to value
    (a string as it is, anything else stored as JSON) or to {"value": ...,
    "description": ...}. Every entry is checked first; if one is bad nothing is written.
    Existing keys are skipped and reported unless --overwrite.

    \b
    Example:
      hareflow variables import variables.json
    """
    from hareflow.common.db.models import VariableRow
    from hareflow.common.secrets.store import put_variable

    parsed = _parse_all(file)
    settings = get_settings()
    fernet = cipher(settings)
    added, replaced, skipped = [], [], []
    with metastore(settings) as sessions, sessions() as session, session.begin(), secrets_mistakes():
        for key, text, description in parsed:
            exists = session.get(VariableRow, key) is not None
            if exists and not overwrite:
                skipped.append(key)
                continue
            put_variable(session, key, text, fernet, description=description)
            (replaced if exists else added).append(key)
        audit(
            session,
            "variable_import",
            {"file": file, "added": added, "replaced": replaced, "skipped": skipped},
        )
    report_import(file, "variable", added, replaced, skipped)


@variables.command("export")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Default: by FILE's extension, else json.",
)
def variables_export(file: str, fmt: str | None) -> None:
    """Back up every variable, sensitive ones included, to a JSON or YAML FILE.

    FILE (- for standard output) has the form `variables import` reads: key to value text, or to
    {"value", "description"}.

    The export INCLUDES SENSITIVE VALUES IN PLAIN TEXT: it is a backup. The file is created
    readable by its owner only (0600).

    \b
    Example:
      hareflow variables export variables.json
    """
    from hareflow.common.secrets.store import list_variables

    settings = get_settings()
    fernet = cipher(settings)
    with metastore(settings) as sessions, sessions() as session, session.begin(), secrets_mistakes():
        rows = list_variables(session, fernet)
        out: dict[str, Any] = {
            v.key: {"value": v.value, "description": v.description} if v.description else v.value
            for v in rows
        }
        write_private(file, dump(out, format_of(file, fmt)))  # a failed write rolls the audit row back
        audit(session, "variable_export", {"file": file, "count": len(rows)})
    if file != "-":
        click.echo(f"exported {len(out)} variable(s) to {file} (with their values; mode 0600)")
