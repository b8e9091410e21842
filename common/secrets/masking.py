"""Masking: secret values a task has seen become ``***`` before any text leaves its process.

What is secret: a connection's password; the values of its ``extra`` under a key that looks
sensitive; a variable whose key looks sensitive (all of it, and every string inside it when it is
JSON). A key looks sensitive when it contains one of :data:`SENSITIVE_WORDS` (Airflow's list),
case-insensitively. Each secret is masked as written and in the forms it is commonly printed in
(URL-quoted, JSON-escaped, repr). Values shorter than :data:`MIN_LENGTH` characters are not masked:
masking ``a`` or ``1`` everywhere would make every log unreadable and protect nothing.

The task process keeps one :class:`Masker`; its log stream, its error text, its rendered template
fields and its callbacks' output pass through :meth:`Masker.redact`.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import quote

MASK = "***"
MIN_LENGTH = 3
SENSITIVE_WORDS = (
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
)


def is_sensitive(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(word in lowered for word in SENSITIVE_WORDS)


def redact_mapping(value: Any, sensitive: bool = False) -> Any:
    """A copy of a JSON value with the values under sensitive keys replaced by ``***``."""
    if isinstance(value, Mapping):
        return {k: redact_mapping(v, sensitive or is_sensitive(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_mapping(v, sensitive) for v in value]
    if sensitive and value not in (None, ""):
        return MASK
    return value


def _strings_under(value: Any, sensitive: bool) -> Iterable[str]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings_under(v, sensitive or is_sensitive(str(k)))
    elif isinstance(value, list):
        for v in value:
            yield from _strings_under(v, sensitive)
    elif sensitive and isinstance(value, str | int | float) and not isinstance(value, bool):
        yield str(value)


def connection_secrets(conn: Any) -> list[str]:
    """The values of a connection that are secret."""
    found = [conn.password] if conn.password else []
    found.extend(_strings_under(conn.extra, False))
    return found


def variable_secrets(key: str, text: str | None) -> list[str]:
    """The values of a variable that are secret: all of it when its key looks sensitive."""
    if text is None or not is_sensitive(key):
        return []
    found = [text]
    try:
        found.extend(_strings_under(json.loads(text), True))
    except ValueError:
        pass
    return found


def _forms(secret: str) -> set[str]:
    forms = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    return {f for f in forms if len(f) >= MIN_LENGTH}


class Masker:
    """Secrets seen so far, and a redactor for them. Thread-safe."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            before = len(self._secrets)
            for value in values:
                if isinstance(value, str) and len(value) >= MIN_LENGTH:
                    self._secrets |= _forms(value)
            if len(self._secrets) != before:
                ordered = sorted(self._secrets, key=len, reverse=True)  # longest first
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)


#: The one masker of this process (a task process masks what its own task has seen).
masker = Masker()


class MaskedStream(io.TextIOBase):
    """A text stream writing through to ``target`` with this process's secrets masked."""

    def __init__(self, target: TextIO) -> None:
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._target.write(masker.redact(text))
        return len(text)

    def flush(self) -> None:
        self._target.flush()
