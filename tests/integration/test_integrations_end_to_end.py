"""The integrations example, end to end on the RabbitMQ path, with a worker that has no database URL.

``examples/integrations/orders_api_to_postgres.py`` pulls JSON from a local HTTP API (with a bearer
token from its connection), stages and merges it into a PostgreSQL database with ``SqlTask`` and a
hook, and emails on failure through a local SMTP server. Every credential is in a Connection stored
encrypted in the metastore; the worker is a separate ``hareflow worker`` process given only the
broker URL and the DAG folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import TaskLog
from hareflow.common.secrets import Connection, store
from hareflow.common.secrets.crypto import Cipher, generate_key
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from hareflow.cluster import Cluster
from tests.conftest import PG_URL, _temporary_database, fast_settings
from tests.integration.test_notifiers import Mailbox, _start_smtp

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "integrations" / "orders_api_to_postgres.py"
TOKEN = "tok-orders-7Hq2-unlikely"
ORDERS = [
    {"id": 1, "customer": "ada", "amount": 12.5},
    {"id": 2, "customer": "grace", "amount": 40},
    {"id": 3, "customer": "alan", "amount": 7.25},
]


class OrdersApi:
    """A local HTTP API: ``GET /orders?day=...`` answers ``body``; it records what it was sent."""

    def __init__(self) -> None:
        self.body: Any = ORDERS
        self.requests: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                api.requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
                data = json.dumps(api.body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[OrdersApi]:
    server = OrdersApi()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    yield from _start_smtp()


@pytest.fixture
def warehouse_url() -> Iterator[str]:
    yield from _temporary_database(PG_URL, f"hft_wh_{uuid.uuid4().hex[:10]}")


def _as_connection_uri(sqlalchemy_url: str) -> str:
    url = make_url(sqlalchemy_url)
    auth = url.username or ""
    if url.password:
        auth += f":{url.password}"
    return f"postgresql://{auth}@{url.host}:{url.port or 5432}/{url.database}"


def _worker(settings: Any, home: Path) -> subprocess.Popen[bytes]:
    """``hareflow worker`` with the broker URL and the DAG folder only: no database URL, no key."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    child_env.update(
        {
            "HAREFLOW_HOME": str(home),
            "HAREFLOW_BROKER_URL": settings.broker_url,
            "HAREFLOW_BROKER_PREFIX": settings.broker_prefix,
            "HAREFLOW_DAGS_FOLDER": str(settings.dags_folder),
            "HAREFLOW_LOG_LEVEL": "WARNING",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "hareflow.cli", "worker", "--concurrency", "2"],
        env=child_env,
        cwd=str(REPO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_the_example_pulls_an_api_loads_postgres_and_emails_on_failure_with_a_worker_holding_no_database_url(
    tmp_path: Path,
    postgres_url: str,
    warehouse_url: str,
    rabbitmq_url: str,
    broker_prefix: str,
    api: OrdersApi,
    smtp: Mailbox,
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLE, dags / EXAMPLE.name)
    key = generate_key()
    settings = fast_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=rabbitmq_url,
        broker_prefix=broker_prefix,
        dags_folder=str(dags),
        fernet_key=key,
        base_url="http://hareflow.test",
    )
    cluster = Cluster(settings, workers=())
    cluster.migrate()
    cipher = Cipher([key])
    with cluster.sessions() as session, session.begin():
        store.put_connection(
            session,
            Connection("orders_api", "http", host="127.0.0.1", port=api.port, extra={"bearer_token": TOKEN}),
            cipher,
        )
        store.put_connection(
            session, Connection.from_uri("warehouse", _as_connection_uri(warehouse_url)), cipher
        )
        store.put_connection(
            session,
            Connection.from_uri("smtp_alerts", f"smtp://127.0.0.1:{smtp.port}?from=hf%40example.com"),
            cipher,
        )
        store.put_variable(session, "orders_min_amount", "10", cipher)
    worker_home = tmp_path / "worker-home"
    cluster.start()
    worker = _worker(settings, worker_home)
    try:
        cluster.wait_for_dag("orders_api_to_postgres")
        good = cluster.trigger("orders_api_to_postgres")
        assert cluster.wait_for_run("orders_api_to_postgres", good, timeout=120) == "success"

        api.body = {"error": "the orders service is down"}  # response_check fails: not a list
        bad = cluster.trigger("orders_api_to_postgres")
        assert cluster.wait_for_run("orders_api_to_postgres", bad, timeout=120) == "failed"
        mails = _wait(lambda: smtp.messages, "the failure email")
    finally:
        worker.terminate()
        worker.wait(30)
        cluster.stop()

    engine = create_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, customer, amount FROM orders ORDER BY id")).all()
    finally:
        engine.dispose()
    assert [(r[0], r[1], float(r[2])) for r in rows] == [
        (1, "ada", 12.5),
        (2, "grace", 40.0),
    ]  # min amount 10
    assert api.requests[0]["authorization"] == f"Bearer {TOKEN}"
    assert api.requests[0]["path"].startswith("/orders?day=")

    mail = mails[0]
    assert mail["Subject"].startswith("[hareflow] orders_api_to_postgres failed on ")
    assert mail["From"] == "hf@example.com" and mail["To"] == "data-team@example.com"
    body = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "http://hareflow.test/dags/orders_api_to_postgres/runs/" in body
    assert len(smtp.messages) == 1  # once per failed run; the good run sent nothing

    with cluster.sessions() as session:
        logs = "".join(session.scalars(select(TaskLog.text)))
    assert "staged 3 orders" in logs
    assert TOKEN not in logs
    assert not (worker_home / "hareflow.db").exists()  # the worker never opened a metastore


def _wait(condition: Any, what: str, timeout: float = 60.0) -> Any:
    from tests.integration.conftest import wait_until

    return wait_until(condition, timeout=timeout, message=what)
