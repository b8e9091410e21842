"""Column types that behave the same on PostgreSQL, MySQL/MariaDB and SQLite.

Every text column stores whatever a task, a DAG file or a client sends: PostgreSQL refuses a NUL
character (``\x00``) in text, MySQL and SQLite keep it. So that nothing a task prints or raises can
make a write fail (and leave a task instance wedged), every text column replaces NUL with the visible
``␀`` (U+2400) on the way in, on all three databases. JSON columns need nothing: JSON escapes NUL as
``\u0000``, which the ``json`` types of all three accept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, LargeBinary, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes everywhere.

    Stored as naive UTC (SQLite and MySQL keep no offset; MySQL gets microsecond precision),
    returned as aware UTC. Naive values given to it are rejected: they are always a bug.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


NUL_REPLACEMENT = "\u2400"


def storable(text: str) -> str:
    """``text`` with every NUL character replaced by a visible ``␀``."""
    return text.replace("\x00", NUL_REPLACEMENT) if "\x00" in text else text


class SafeString(TypeDecorator[str]):
    """``String(length)`` whose NUL characters are stored as ``␀``."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return storable(value) if isinstance(value, str) else value


class SafeText(SafeString):
    """``Text`` whose NUL characters are stored as ``␀``."""

    impl = Text
    cache_ok = True


class LongText(SafeText):
    """Large text (MySQL's TEXT stops at 64 KiB: LONGTEXT there), NUL stored as ``␀``."""

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.LONGTEXT())
        return dialect.type_descriptor(Text())


class LongBinary(TypeDecorator[bytes]):
    """Bytes up to a few MiB: ``BYTEA`` on PostgreSQL, ``BLOB`` on SQLite, ``LONGBLOB`` on MySQL
    (whose ``BLOB`` stops at 64 KiB)."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.LONGBLOB())
        return dialect.type_descriptor(LargeBinary())
