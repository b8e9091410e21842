"""What ``hareflow connections`` and ``hareflow variables`` share: their import and export files
(JSON or YAML, errors naming the file and line), the Fernet cipher with clear errors, ``-o yaml``
and the operating-system user the audit log records.

Like the rest of the package, nothing heavy is imported at module level: PyYAML and the secrets
layer are imported by the functions that need them.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from hareflow.cli.common import UserError, print_json

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("json", "yaml")
_WS = re.compile(r"\s*")


@contextmanager
def secrets_mistakes() -> Iterator[None]:
    """Turn the secrets layer's errors (a bad field, a missing or wrong Fernet key, a broken
    secrets backend setting) into one clear line and exit code 2. Their messages never hold a
    secret."""
    from hareflow.common.config import ConfigError
    from hareflow.common.secrets.errors import SecretsError

    try:
        yield
    except (SecretsError, ConfigError) as exc:
        raise UserError(str(exc)) from None


def cipher(settings: Any) -> Any:
    """The configured Fernet cipher, or a UserError saying how to configure one."""
    from hareflow.common.secrets.crypto import cipher_from_settings

    with secrets_mistakes():
        return cipher_from_settings(settings)


def audit(session: Any, action: str, details: dict[str, Any]) -> None:
    """One audit_log row for a change to connections or variables: ids and counts, never values."""
    from hareflow.common.audit import audit as write
    from hareflow.common.audit import cli_origin, cli_user

    write(session, action, username=cli_user(), details=details, origin=cli_origin())


# -- output -----------------------------------------------------------------------------------------


def output_option(f: F) -> F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["table", "json", "yaml"]),
        default="table",
        show_default=True,
        help="table for people, json or yaml for scripts.",
    )(f)


def dump(data: Any, fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False))
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def print_data(data: Any, fmt: str) -> None:
    """``data`` as JSON or YAML on stdout."""
    if fmt == "yaml":
        click.echo(dump(data, "yaml"), nl=False)
    else:
        print_json(data)


def report_import(file: str, what: str, added: list[str], replaced: list[str], skipped: list[str]) -> None:
    """What an import did: counts on stdout, the skipped ids on stderr."""
    parts = [f"{len(added)} added"]
    if replaced:
        parts.append(f"{len(replaced)} replaced")
    click.echo(f"imported {what}s from {file}: {', '.join(parts)}")
    if skipped:
        names = ", ".join(skipped)
        click.echo(f"skipped {len(skipped)} existing {what}(s) (--overwrite replaces): {names}", err=True)


# -- files --------------------------------------------------------------------------------------------


def format_of(path: str, given: str | None) -> str:
    """``given``, else yaml for a .yaml/.yml file, else json."""
    if given:
        return given
    return "yaml" if Path(path).suffix.lower() in (".yaml", ".yml") else "json"


def write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600, an existing file too); ``-``
    is standard output."""
    if path == "-":
        click.echo(text, nl=False)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a new file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Entries:
    """The top-level mapping of an import file, with the line each key is on."""

    path: str
    items: dict[str, Any]
    lines: dict[str, int]

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.path} line {line}" if line else self.path


def read_entries(path: str, what: str) -> Entries:
    """The mapping ``id → entry`` in a JSON or YAML file (by extension; otherwise JSON if it
    starts with ``{``, else YAML). Unreadable files, syntax errors, a top level that is not a
    mapping and duplicate ids are one UserError naming the file (and line)."""
    name = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"{name}: cannot read: {reason}") from None
    suffix = Path(path).suffix.lower()
    is_json = suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip().startswith("{"))
    data, lines = _load_json(name, text) if is_json else _load_yaml(name, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{name}: expected a mapping of {what}, got a {type(data).__name__}")
    return Entries(name, {str(k): v for k, v in data.items()}, lines)


def _load_json(name: str, text: str) -> tuple[Any, dict[str, int]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{name} line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}") from None
    return data, _unique(name, _json_key_lines(text) if isinstance(data, dict) else [])


def _json_key_lines(text: str) -> list[tuple[str, int]]:
    """Each top-level key of a JSON object (``text`` is known to parse) with its line."""
    decoder = json.JSONDecoder()
    out: list[tuple[str, int]] = []
    i = _WS.match(text, 0).end() + 1  # type: ignore[union-attr]  # past "{"
    i = _WS.match(text, i).end()  # type: ignore[union-attr]
    while text.startswith('"', i):
        key, end = decoder.raw_decode(text, i)
        out.append((key, text.count("\n", 0, i) + 1))
        i = _WS.match(text, _WS.match(text, end).end() + 1).end()  # type: ignore[union-attr]  # past ":"
        _, i = decoder.raw_decode(text, i)
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if not text.startswith(",", i):
            break
        i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    return out


def _load_yaml(name: str, text: str) -> tuple[Any, dict[str, int]]:
    import yaml

    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name} line {mark.line + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        raise UserError(f"{where}: not valid YAML: {problem}") from None
    keys: list[tuple[str, int]] = []
    if isinstance(node, yaml.MappingNode):
        keys = [(str(k.value), k.start_mark.line + 1) for k, _ in node.value]
    return data, _unique(name, keys)


def _unique(name: str, keys: list[tuple[str, int]]) -> dict[str, int]:
    """{key: line}, or a UserError for a key given twice (JSON and YAML parsers keep the last)."""
    lines: dict[str, int] = {}
    for key, line in keys:
        if key in lines:
            raise UserError(f"{name} line {line}: {key!r} is given twice (first on line {lines[key]})")
        lines[key] = line
    return lines
