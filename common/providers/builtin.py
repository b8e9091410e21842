"""hareflow's own provider: SQL databases, HTTP, SMTP."""

from __future__ import annotations

from hareflow.common.providers.registry import ConnectionType, ProviderInfo
from hareflow.common.secrets.connection import Connection

SQL_TYPES = {
    "postgresql": "PostgreSQL",
    "postgres": "PostgreSQL",
    "mysql": "MySQL / MariaDB",
    "mariadb": "MariaDB",
    "sqlite": "SQLite",
}


def sqlalchemy_url(conn: Connection) -> str:
    """The SQLAlchemy URL of a SQL connection (drivers: psycopg2, PyMySQL, sqlite3)."""
    from sqlalchemy.engine import URL

    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host or ''}"
    driver = {
        "postgresql": "postgresql+psycopg2",
        "postgres": "postgresql+psycopg2",
        "mysql": "mysql+pymysql",
        "mariadb": "mysql+pymysql",
    }.get(conn.conn_type)
    if driver is None:
        raise ValueError(f"connection {conn.conn_id!r}: type {conn.conn_type!r} is not a SQL database")
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


def _test_sql(conn: Connection) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        sqlalchemy_url(conn), connect_args=_timeout_args(conn), poolclass=sqlalchemy.pool.NullPool
    )
    try:
        with engine.connect() as c:
            c.execute(sqlalchemy.text("SELECT 1"))
    finally:
        engine.dispose()
    return f"SELECT 1 on {conn.conn_type} {conn.host or ''}".rstrip()


def _timeout_args(conn: Connection) -> dict[str, object]:
    if conn.conn_type in ("postgresql", "postgres"):
        return {"connect_timeout": 10}
    if conn.conn_type in ("mysql", "mariadb"):
        return {"connect_timeout": 10}
    return {}


def http_base_url(conn: Connection) -> str:
    scheme = (
        conn.schema
        if conn.schema in ("http", "https")
        else ("https" if conn.conn_type == "https" else "http")
    )
    host = conn.host or ""
    if "://" in host:
        return host.rstrip("/")
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}"


def _test_http(conn: Connection) -> str:
    import httpx

    auth = (conn.login, conn.password or "") if conn.login else None
    url = http_base_url(conn) + "/" + str(conn.extra.get("test_path", "")).lstrip("/")
    response = httpx.get(url, auth=auth, timeout=10.0, headers=conn.extra.get("headers") or {})
    if response.status_code >= 500:
        raise RuntimeError(f"GET {url}: HTTP {response.status_code}")
    return f"GET {url}: HTTP {response.status_code}"


def _test_smtp(conn: Connection) -> str:
    import smtplib

    port = conn.port or (465 if conn.extra.get("ssl") else 25)
    cls = smtplib.SMTP_SSL if conn.extra.get("ssl") else smtplib.SMTP
    with cls(conn.host or "localhost", port, timeout=10) as smtp:
        smtp.ehlo()
        if conn.extra.get("starttls"):
            smtp.starttls()
        if conn.login:
            smtp.login(conn.login, conn.password or "")
        smtp.noop()
    return f"SMTP {conn.host}:{port}"


def builtin_provider() -> ProviderInfo:
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
            test=_test_sql,
        )
        for t, label in SQL_TYPES.items()
    )
    return ProviderInfo(
        name="hareflow",
        version=ours,
        description="built in: SQL databases, HTTP, SMTP",
        connection_types=sql
        + (
            ConnectionType(
                "http",
                "HTTP",
                hints={"schema": "http or https", "extra": '{"headers": {...}}'},
                test=_test_http,
            ),
            ConnectionType("https", "HTTPS", test=_test_http),
            ConnectionType(
                "smtp", "SMTP (email)", hints={"extra": '{"starttls": true, "from": "..."}'}, test=_test_smtp
            ),
        ),
    )
