"""SQL databases: ``SqlHook`` (a SQLAlchemy engine from a connection) and the ``SqlTask`` and
``SqlCopyTask`` task types.

Connection types: ``postgresql``/``postgres`` (psycopg2), ``mysql``/``mariadb`` (PyMySQL) and
``sqlite`` (the file path in ``host``). String and number values of ``extra`` become URL query
parameters (``sslmode=require``, ``charset=utf8mb4``).

A task process runs one try and exits, so the hook's engine uses ``NullPool``: every connection is
closed when its block ends, nothing is pooled across tries, and ``close()`` has nothing left to
wait for. SQLAlchemy is imported when a hook first needs it, never when a DAG file is parsed.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Unpack

from hareflow.common.dag.context import Context
from hareflow.common.dag.dag import DAG
from hareflow.common.dag.settings import TaskSettings
from hareflow.common.dag.task import BaseTask
from hareflow.common.providers import checks
from hareflow.common.providers.errors import WrongConnectionType
from hareflow.common.secrets.connection import Connection

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as DbConnection
    from sqlalchemy.engine import Engine

#: Connection type -> SQLAlchemy dialect and driver.
DRIVERS = {
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
CONNECT_TIMEOUT_SECONDS = 10

Sql = str | Sequence[str]


def sqlalchemy_url(conn: Connection) -> str:
    """The SQLAlchemy URL of a SQL connection (drivers: psycopg2, PyMySQL, sqlite3)."""
    from sqlalchemy.engine import URL

    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host or ''}"
    driver = DRIVERS.get(conn.conn_type)
    if driver is None:
        raise WrongConnectionType(
            f"connection {conn.conn_id!r}: type {conn.conn_type!r} is not a SQL database "
            f"(expected one of {', '.join(sorted([*DRIVERS, 'sqlite']))})"
        )
    query = {
        k: str(v)
        for k, v in conn.extra.items()
        if isinstance(v, str | int | float) and not isinstance(v, bool)
    }
    return URL.create(
        driver,
        username=conn.login,
        password=conn.password,
        host=conn.host,
        port=conn.port,
        database=conn.schema,
        query=query,
    ).render_as_string(hide_password=False)


def _connect_args(conn: Connection) -> dict[str, object]:
    # Both psycopg2 and PyMySQL take connect_timeout in seconds; a connection's own
    # ?connect_timeout= in extra arrives through the URL and wins.
    if conn.conn_type in DRIVERS and "connect_timeout" not in conn.extra:
        return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    return {}


def _statements(sql: Sql) -> list[str]:
    return [sql] if isinstance(sql, str) else list(sql)


def _split_table(table: str) -> tuple[str | None, str]:
    schema, dot, name = table.rpartition(".")
    return (schema, name) if dot else (None, table)


class SqlHook:
    """A SQL database reached through connection ``conn_id``.

    The connection is looked up when first needed (``Connection.get``); pass ``connection=`` to use
    one already in hand (the connection test does). Statements are SQLAlchemy ``text()``: bind
    parameters are written ``:name`` and given as a dict.
    """

    def __init__(self, conn_id: str, *, connection: Connection | None = None) -> None:
        self.conn_id = conn_id
        self._connection = connection
        self._engine: Engine | None = None

    @classmethod
    def from_connection(cls, connection: Connection) -> SqlHook:
        return cls(connection.conn_id, connection=connection)

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = Connection.get(self.conn_id)
        return self._connection

    # -- the engine -------------------------------------------------------------------------------

    def get_engine(self) -> Engine:
        """The hook's engine (created on first use, ``NullPool``); ``close()`` disposes of it."""
        if self._engine is None:
            import sqlalchemy

            conn = self.connection
            self._engine = sqlalchemy.create_engine(
                sqlalchemy_url(conn), connect_args=_connect_args(conn), poolclass=sqlalchemy.pool.NullPool
            )
        return self._engine

    def close(self) -> None:
        """Dispose of the engine; the hook makes a new one if used again."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> SqlHook:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def begin(self) -> Iterator[DbConnection]:
        """A database connection inside one transaction: committed at the end, rolled back on error."""
        with self.get_engine().begin() as db:
            yield db

    @property
    def dialect(self) -> str:
        """``postgresql``, ``mysql`` or ``sqlite``."""
        return self.get_engine().dialect.name

    # -- statements -------------------------------------------------------------------------------

    def run(self, sql: Sql, parameters: Mapping[str, Any] | None = None) -> list[int]:
        """Run one statement or a list of them, in one transaction; return each one's row count
        (-1 where the driver does not say). The same ``parameters`` go to every statement."""
        from sqlalchemy import text

        counts: list[int] = []
        with self.begin() as db:
            for statement in _statements(sql):
                result = db.execute(text(statement), dict(parameters or {}))
                counts.append(result.rowcount)
                result.close()
        return counts

    def get_records(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row of a query, as tuples."""
        from sqlalchemy import text

        with self.begin() as db:
            return [tuple(row) for row in db.execute(text(sql), dict(parameters or {}))]

    def get_first(self, sql: str, parameters: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of a query, or None when it returns none."""
        from sqlalchemy import text

        with self.begin() as db:
            row = db.execute(text(sql), dict(parameters or {})).first()
        return None if row is None else tuple(row)

    def run_returning(
        self, sql: Sql, parameters: Mapping[str, Any] | None = None, *, max_rows: int
    ) -> tuple[list[str], list[tuple[Any, ...]], bool]:
        """Run statements in one transaction; return the last one's column names, up to
        ``max_rows`` of its rows, and whether it had more. A last statement returning no rows
        gives ``([], [], False)``."""
        from sqlalchemy import text

        statements = _statements(sql)
        with self.begin() as db:
            for statement in statements[:-1]:
                db.execute(text(statement), dict(parameters or {})).close()
            result = db.execute(text(statements[-1]), dict(parameters or {}))
            if not result.returns_rows:
                result.close()
                return [], [], False
            columns = list(result.keys())
            rows = [tuple(row) for row in result.fetchmany(max_rows + 1)]
            result.close()
        return columns, rows[:max_rows], len(rows) > max_rows

    # -- writing rows -----------------------------------------------------------------------------

    def table_columns(self, table: str) -> list[str]:
        """The column names of ``table`` (``schema.table`` allowed), in table order."""
        from sqlalchemy import inspect

        schema, name = _split_table(table)
        return [c["name"] for c in inspect(self.get_engine()).get_columns(name, schema=schema)]

    def insert_rows(
        self,
        table: str,
        rows: Iterable[Sequence[Any]],
        target_fields: Sequence[str] | None = None,
        batch_size: int = 1000,
        *,
        db: DbConnection | None = None,
    ) -> int:
        """Insert ``rows`` (sequences of values in ``target_fields`` order; the table's columns when
        not given) in batches of ``batch_size``; return how many were inserted. All in one
        transaction, or in ``db``'s when a connection from ``begin()`` is passed."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size!r}")
        fields = list(target_fields) if target_fields else self.table_columns(table)
        if db is None:
            with self.begin() as own:
                return self.insert_rows(table, rows, fields, batch_size, db=own)
        statement = self._insert_statement(table, fields)
        count = 0
        batch: list[dict[str, Any]] = []
        for row in rows:
            values = tuple(row)
            if len(values) != len(fields):
                raise ValueError(
                    f"a row for {table} has {len(values)} values, expected {len(fields)}: {fields}"
                )
            batch.append(dict(zip(fields, values, strict=True)))
            if len(batch) >= batch_size:
                db.execute(statement, batch)
                count, batch = count + len(batch), []
        if batch:
            db.execute(statement, batch)
            count += len(batch)
        return count

    @staticmethod
    def _insert_statement(table: str, fields: Sequence[str]) -> Any:
        import sqlalchemy

        schema, name = _split_table(table)
        target = sqlalchemy.table(name, *(sqlalchemy.column(f) for f in fields), schema=schema)
        return sqlalchemy.insert(target)

    def truncate(self, table: str, *, db: DbConnection) -> None:
        """Empty ``table`` (``DELETE FROM`` on SQLite, which has no TRUNCATE)."""
        import sqlalchemy

        schema, name = _split_table(table)
        quoted = db.dialect.identifier_preparer.quote(name)
        if schema:
            quoted = f"{db.dialect.identifier_preparer.quote_schema(schema)}.{quoted}"
        verb = "DELETE FROM" if db.dialect.name == "sqlite" else "TRUNCATE TABLE"
        db.execute(sqlalchemy.text(f"{verb} {quoted}"))

    def __repr__(self) -> str:
        return f"<SqlHook {self.conn_id}>"


def jsonable(value: Any) -> Any:
    """A database value as JSON: dates and times in ISO 8601, decimals as numbers (integers when
    whole), UUIDs as text, bytes in base64; anything else unknown as its ``str``."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def _check_sql(task_id: str, sql: Any) -> Sql:
    if isinstance(sql, str):
        if not sql.strip():
            raise checks.fail(task_id, "sql", "is empty")
        statements: Sql = sql
    elif isinstance(sql, list | tuple) and sql:
        if not all(isinstance(s, str) and s.strip() for s in sql):
            raise checks.fail(task_id, "sql", "must be a list of non-empty SQL strings")
        statements = list(sql)
    else:
        raise checks.fail(task_id, "sql", f"must be a SQL string or a non-empty list of them, not {sql!r}")
    checks.template(task_id, "sql", statements)
    return statements


class SqlTask(BaseTask):
    """Runs ``sql`` (a statement or a list, in one transaction) against connection ``conn_id``.

    ``sql`` and ``parameters`` are templates rendered on the worker (``WHERE day = '{{ ds }}'``);
    bind parameters are ``:name`` in the SQL. With ``return_rows`` the result is the last
    statement's rows as a list of dicts (column -> value, see ``jsonable``), at most ``max_rows``
    of them; the log says when rows were left out. Otherwise the result is each statement's row count.
    """

    template_fields = ("sql", "parameters")

    def __init__(
        self,
        task_id: str,
        conn_id: str,
        sql: Sql,
        parameters: Mapping[str, Any] | None = None,
        return_rows: bool = False,
        max_rows: int = 1000,
        *,
        dag: DAG | None = None,
        **settings: Unpack[TaskSettings],
    ) -> None:
        self.conn_id = checks.conn_id(task_id, "conn_id", conn_id)
        self.sql = _check_sql(task_id, sql)
        self.parameters = checks.string_mapping(task_id, "parameters", parameters, str_values=False)
        checks.template(task_id, "parameters", self.parameters)
        self.return_rows = checks.boolean(task_id, "return_rows", return_rows)
        self.max_rows = checks.positive_int(task_id, "max_rows", max_rows)
        super().__init__(task_id, dag=dag, **settings)

    def execute(self, ctx: Context) -> Any:
        with SqlHook(self.conn_id) as hook:
            if not self.return_rows:
                counts = hook.run(self.sql, self.parameters)
                print(f"ran {len(counts)} statement(s) on {self.conn_id}; row counts {counts}")
                return counts
            columns, rows, more = hook.run_returning(self.sql, self.parameters, max_rows=self.max_rows)
        if more:
            print(
                f"the query returned more than max_rows={self.max_rows} rows; the result holds the first "
                f"{self.max_rows}"
            )
        else:
            print(f"the query returned {len(rows)} row(s)")
        return [{c: jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows]


class SqlCopyTask(BaseTask):
    """Copies the rows of ``sql`` (run on ``source_conn_id``) into ``target_table`` on
    ``target_conn_id``, ``batch_size`` rows at a time; the result is the number of rows copied.

    The source is read with a server-side cursor (``stream_results``), so only one batch is in
    memory. The target is written in one transaction (after a truncate when ``truncate``; MySQL
    commits a TRUNCATE by itself). ``target_fields`` defaults to the query's column names. ``sql``
    is a template.
    """

    template_fields = ("sql",)

    def __init__(
        self,
        task_id: str,
        source_conn_id: str,
        sql: str,
        target_conn_id: str,
        target_table: str,
        batch_size: int = 1000,
        target_fields: Sequence[str] | None = None,
        truncate: bool = False,
        *,
        dag: DAG | None = None,
        **settings: Unpack[TaskSettings],
    ) -> None:
        self.source_conn_id = checks.conn_id(task_id, "source_conn_id", source_conn_id)
        self.target_conn_id = checks.conn_id(task_id, "target_conn_id", target_conn_id)
        if not isinstance(sql, str):
            raise checks.fail(task_id, "sql", f"must be one SQL query (a string), not {type(sql).__name__}")
        self.sql = _check_sql(task_id, sql)
        if not isinstance(target_table, str) or not target_table.strip():
            raise checks.fail(task_id, "target_table", f"must be a table name, not {target_table!r}")
        self.target_table = target_table
        self.batch_size = checks.positive_int(task_id, "batch_size", batch_size)
        if target_fields is not None and (
            isinstance(target_fields, str)
            or not target_fields
            or not all(isinstance(f, str) and f for f in target_fields)
        ):
            raise checks.fail(
                task_id, "target_fields", f"must be a non-empty list of column names, not {target_fields!r}"
            )
        self.target_fields = list(target_fields) if target_fields is not None else None
        self.truncate = checks.boolean(task_id, "truncate", truncate)
        super().__init__(task_id, dag=dag, **settings)

    def execute(self, ctx: Context) -> int:
        from sqlalchemy import text

        with SqlHook(self.source_conn_id) as source, SqlHook(self.target_conn_id) as target:
            with source.get_engine().connect() as reading, target.begin() as writing:
                result = reading.execution_options(
                    stream_results=True, max_row_buffer=self.batch_size
                ).execute(text(str(self.sql)))
                fields = self.target_fields or list(result.keys())
                if self.truncate:
                    target.truncate(self.target_table, db=writing)
                copied = 0
                while batch := result.fetchmany(self.batch_size):
                    copied += target.insert_rows(
                        self.target_table, batch, fields, self.batch_size, db=writing
                    )
                    print(f"copied {copied} row(s) into {self.target_table}")
                result.close()
        print(
            f"done: {copied} row(s) copied from {self.source_conn_id} "
            f"to {self.target_conn_id} {self.target_table}"
        )
        return copied
