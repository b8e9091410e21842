"""Fixtures for real services: one per service, each isolating the test and cleaning up.

A missing service skips the tests that need it, unless HAREFLOW_REQUIRE_SERVICES=1 (CI), where it
fails them instead: a missing service must never pass silently.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hareflow.common.config import Settings, load_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REQUIRE_SERVICES = os.environ.get("HAREFLOW_REQUIRE_SERVICES") == "1"
# Sensors in the tests poke every fraction of a second, in reschedule mode too. Set before any
# process is started: a worker's fork server keeps the environment it started with.
os.environ.setdefault("HAREFLOW_SENSOR_MIN_RESCHEDULE_INTERVAL", "0")
AMQP_URL = os.environ.get("HAREFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_URL = os.environ.get(
    "HAREFLOW_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
MYSQL_URL = os.environ.get("HAREFLOW_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
TEST_PREFIX = "hft"

#: Test files that take minutes, collected first: `-n 2 --dist loadfile` hands whole files to the
#: two processes in collection order (pyproject's --no-loadscope-reorder), so a long file collected
#: late would run alone at the end while the other process sits idle.
LONGEST_FIRST = (
    "tests/fault/test_control_plane_outage.py",  # a 5-minute outage, by design
    "tests/integration/test_installed_wheel.py",
    "tests/fault/test_database_outage.py",
    "tests/fault/test_multi_host.py",
    "tests/integration/test_compose_stack.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def service_missing(name: str, error: object) -> None:
    message = f"{name} is not reachable: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (HAREFLOW_REQUIRE_SERVICES=1)")
    pytest.skip(message)


# -- RabbitMQ -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    import pika

    try:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL + "?connection_attempts=2&retry_delay=1"))
        conn.close()
    except Exception as exc:
        service_missing("RabbitMQ", exc)
    yield AMQP_URL
    _delete_test_topology(AMQP_URL)


def _delete_test_topology(url: str) -> None:
    """Remove every queue and exchange the tests declared (names start with the test prefix)."""
    import pika

    try:
        out = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True, timeout=60
        ).stdout.split()
        exchanges = subprocess.run(
            ["rabbitmqctl", "-q", "list_exchanges", "name"], capture_output=True, text=True, timeout=60
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return
    conn = pika.BlockingConnection(pika.URLParameters(url))
    mine = tuple(f"{p}." for p in _PREFIXES_USED)  # only this session's: others may be running
    for name in out:
        if name.startswith(mine):
            _quietly(conn, lambda ch, n=name: ch.queue_delete(n))
    for name in exchanges:
        if name.startswith(mine):
            _quietly(conn, lambda ch, n=name: ch.exchange_delete(n))
    conn.close()


_PREFIXES_USED: set[str] = set()


def _quietly(conn: object, action: Callable[[object], object]) -> None:
    """One deletion on its own channel: a queue still held exclusively (its connection is closing)
    closes that channel, not the whole clean-up."""
    import pika.exceptions

    try:
        ch = conn.channel()  # type: ignore[attr-defined]
        action(ch)
        ch.close()
    except pika.exceptions.AMQPChannelError:
        pass


@pytest.fixture
def broker_prefix() -> str:
    """A fresh name prefix: this test's exchanges and queues are its own."""
    prefix = f"{TEST_PREFIX}-{uuid.uuid4().hex[:10]}"
    _PREFIXES_USED.add(prefix)
    return prefix


# -- databases ------------------------------------------------------------------------------------------


def _temporary_database(admin_url: str, name: str) -> Iterator[str]:
    url = make_url(admin_url)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:
        service_missing(url.get_backend_name(), exc)
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if url.get_backend_name() == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _temporary_database(PG_URL, f"hft_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def mysql_url() -> Iterator[str]:
    yield from _temporary_database(MYSQL_URL, f"hft_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hareflow.db'}"


# -- hareflow settings and DAG folders ------------------------------------------------------------------


@pytest.fixture
def dags_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    return folder


@pytest.fixture
def write_dag(dags_folder: Path) -> Callable[[str, str], Path]:
    """Write a DAG file (dedented) into the test's DAG folder."""

    def write(name: str, source: str) -> Path:
        path = dags_folder / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


def fast_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings tuned for tests: short waits and intervals, isolated home, and new DAGs active at
    once (tests about pausing at creation pass ``dags_are_paused_at_creation=True``)."""
    values: dict[str, object] = {
        "home": str(tmp_path / "home"),
        "dags_are_paused_at_creation": False,
        "scheduler_idle_wait": 0.2,
        "dag_dir_list_interval": 0.3,
        "heartbeat_interval": 0.5,
        "log_chunk_interval": 0.1,
        "worker_concurrency": 4,
    }
    values.update(overrides)
    return load_settings(env={}, overrides=values)
