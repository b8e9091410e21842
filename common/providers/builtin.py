"""hareflow's own provider: SQL databases, HTTP, SMTP.

Connection tests go through the hooks tasks use (``SqlHook``: ``SELECT 1``; ``HttpHook``: a GET of
``extra["test_path"]``), so a connection that passes its test is one a task can use.
"""

from __future__ import annotations

from hareflow.common.providers.http import HttpHook, http_base_url
from hareflow.common.providers.registry import ConnectionType, ProviderInfo
from hareflow.common.providers.sql import SqlHook, sqlalchemy_url
from hareflow.common.secrets.connection import Connection

__all__ = ["SQL_TYPES", "builtin_provider", "http_base_url", "sqlalchemy_url"]

SQL_TYPES = {
    "postgresql": "PostgreSQL",
    "postgres": "PostgreSQL",
    "mysql": "MySQL / MariaDB",
    "mariadb": "MariaDB",
    "sqlite": "SQLite",
}
SQL_HOOK = "hareflow.common.providers.sql:SqlHook"
HTTP_HOOK = "hareflow.common.providers.http:HttpHook"
TASK_TYPES = (
    "hareflow.common.providers.sql:SqlTask",
    "hareflow.common.providers.sql:SqlCopyTask",
    "hareflow.common.providers.http:HttpTask",
    "hareflow.common.providers.sensors:SqlSensor",
    "hareflow.common.providers.sensors:HttpSensor",
    "hareflow.common.dag.sensors:FileSensor",
    "hareflow.common.dag.sensors:DateTimeSensor",
    "hareflow.common.dag.sensors:TimeDeltaSensor",
    "hareflow.common.dag.sensors:ExternalTaskSensor",
)


def fs_base_path(conn: Connection) -> str:
    """The base path of an ``fs`` connection: ``extra["path"]``, else ``host``, else the URI's path
    (``fs:///data/landing``), else the filesystem root."""
    import os

    if conn.extra.get("path"):
        return str(conn.extra["path"])
    if conn.host:
        return conn.host
    if conn.schema:
        return os.sep + conn.schema.lstrip("/")
    return os.sep


def _test_fs(conn: Connection) -> str:
    import os

    base = fs_base_path(conn)
    if not os.path.isdir(base):
        raise FileNotFoundError(f"{base} is not a directory on this host")
    return f"{base} is a directory on this host"


def _test_sql(conn: Connection) -> str:
    with SqlHook.from_connection(conn) as hook:
        hook.get_first("SELECT 1")
    return f"SELECT 1 on {conn.conn_type} {conn.host or ''}".rstrip()


def _test_http(conn: Connection) -> str:
    # No retries: a test reports what the service does now, at once.
    hook = HttpHook.from_connection(conn, retries=0, connect_timeout=10.0, read_timeout=10.0)
    response = hook.run("GET", str(conn.extra.get("test_path", "")))
    return f"GET {response.request.url}: HTTP {response.status_code}"


def _test_smtp(conn: Connection) -> str:
    from hareflow.common.providers.notifiers import smtp_address, smtp_session

    with smtp_session(conn, 10.0) as smtp:
        smtp.noop()
    host, port = smtp_address(conn)
    return f"SMTP {host}:{port}"


def builtin_provider() -> ProviderInfo:
    """hareflow's own ProviderInfo (also registered as the ``hareflow`` entry point)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("hareflow")
    except PackageNotFoundError:
        ours = "0"
    sql = tuple(
        ConnectionType(
            t,
            label,
            hints={"schema": "database", "host": "file path" if t == "sqlite" else "host"},
            hook=SQL_HOOK,
            test=_test_sql,
        )
        for t, label in SQL_TYPES.items()
    )
    http_hints = {
        "schema": "http or https",
        "extra": '{"headers": {...}, "bearer_token": "...", "timeout": 30, "retries": 3}',
    }
    return ProviderInfo(
        name="hareflow",
        version=ours,
        description="built in: SQL databases, HTTP, SMTP, file system",
        connection_types=sql
        + (
            ConnectionType("http", "HTTP", hints=http_hints, hook=HTTP_HOOK, test=_test_http),
            ConnectionType("https", "HTTPS", hints=http_hints, hook=HTTP_HOOK, test=_test_http),
            ConnectionType(
                "smtp", "SMTP (email)", hints={"extra": '{"starttls": true, "from": "..."}'}, test=_test_smtp
            ),
            ConnectionType(
                "fs",
                "File system (FileSensor)",
                fields=("host", "extra"),
                hints={"host": "base path", "extra": '{"path": "/data/landing"}'},
                test=_test_fs,
            ),
        ),
        hooks=(SQL_HOOK, HTTP_HOOK),
        task_types=TASK_TYPES,
    )
