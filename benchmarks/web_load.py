"""Load on the web server from another process: requests/s and latency under concurrent clients, and
live events reaching many open Socket.IO connections. One JSON object per line on stdout.

    python -m benchmarks.web_load [--server gunicorn|werkzeug] [--seconds 3] [--repeat 3]
                                  [--clients 1,10,50] [--sockets 200] [--events 200] [--only LABEL]

Builds a temporary PostgreSQL database (``HAREFLOW_TEST_DATABASE_URL``, default the local
``postgres`` superuser) with 100 small DAGs and one DAG of 50 tasks with 100 finished runs (rows
inserted directly), and a RabbitMQ prefix of its own on ``HAREFLOW_TEST_BROKER_URL`` (default the
local guest broker). Then it starts the web server as a separate process on a free loopback port:
``gunicorn`` is `hareflow web` (the production server), ``werkzeug`` the in-process Werkzeug server
the tests use (what `hareflow web` ran before), started in a process of its own.

HTTP: for each address and each number of clients, that many threads, each with one kept-alive
connection and an API token, send requests back to back for ``--seconds`` (after a short warm-up);
the result is requests/s and the p50/p99 latency, ``--repeat`` times (report medians: the machine
may be shared). The client runs on the same machine and takes CPU from the server: with 50 threads
it is part of what is measured.

Socket.IO: ``--sockets`` clients connect over WebSocket with the token and join the DAG's room;
then ``--events`` task state events (a fan-out of ``events / 2`` tasks going running, then success)
are published to the events exchange, as the results consumer does, and the benchmark counts the
sockets that received every one of them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from hareflow.common.broker import make_executor
from hareflow.common.config import load_settings
from hareflow.common.db import create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.common.messages import StateEvent
from hareflow.web.security import issue_token
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.web_pages import ADMIN_URL, BIG, populate

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the server process --------------------------------------------------------------------------------


def start_server(kind: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    if kind == "gunicorn":
        command = [sys.executable, "-m", "hareflow.cli", "web", "--port", str(port), "--log-level", "WARNING"]
    else:
        command = [sys.executable, "-m", "benchmarks.web_load", "--serve-werkzeug", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the {kind} server exited with {proc.returncode}") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the {kind} server did not listen on {port} within 60 s")


def serve_werkzeug(port: int) -> None:
    """The Werkzeug server of ``make_web_server``, as `hareflow web` ran it before gunicorn."""
    import logging
    import signal

    from hareflow.web.security import ensure_secret_key
    from hareflow.web.server import make_web_server, serve_until

    from hareflow.cli.common import setup_logging

    settings = load_settings()
    setup_logging("WARNING")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    settings = settings.replace(secret_key=ensure_secret_key(settings))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    serve_until(make_web_server(settings, host="127.0.0.1", port=port), stop)


# -- HTTP load ----------------------------------------------------------------------------------------


def load(port: int, path: str, token: str, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start, stop = threading.Barrier(clients + 1), threading.Event()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Authorization": f"Bearer {token}"}
        warm = time.monotonic() + 0.5
        while time.monotonic() < warm:  # connection, templates, caches
            _request(conn, path, headers)
        start.wait()
        mine = latencies[i]
        while not stop.is_set():
            began = time.perf_counter()
            if _request(conn, path, headers) != 200:
                errors[i] += 1
            mine.append(time.perf_counter() - began)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)
    elapsed = time.perf_counter() - began
    every = sorted(x for per in latencies for x in per)
    return {
        "requests": len(every),
        "errors": sum(errors),
        "rps": round(len(every) / elapsed, 1),
        "p50_ms": round(_quantile(every, 0.50) * 1000, 1),
        "p99_ms": round(_quantile(every, 0.99) * 1000, 1),
    }


def _request(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> int:
    """The response's status; 0 when the server closed the connection (counted as an error, and the
    next request opens a new connection, as a browser would)."""
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
    except (http.client.HTTPException, ConnectionError):
        conn.close()
        return 0
    return response.status


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


# -- Socket.IO fan-out --------------------------------------------------------------------------------


def sockets(port: int, token: str, n_sockets: int, n_events: int, settings: Any) -> dict[str, Any]:
    import socketio

    expected = {(f"task_{i:03d}", state) for i in range(n_events // 2) for state in ("running", "success")}
    got: list[set[tuple[str, str]]] = [set() for _ in range(n_sockets)]
    clients: list[Any] = []
    dropped: Counter[str] = Counter()  # why sockets closed before the end, as their clients saw it
    failed = 0
    began = time.perf_counter()
    give_up = time.monotonic() + 120  # a server that cannot take them all: count the rest as failed
    for i in range(n_sockets):
        if time.monotonic() > give_up:
            failed += n_sockets - i
            break
        client = socketio.Client(reconnection=False)
        client.on("events", lambda batch, mine=got[i]: mine.update((e["task_id"], e["state"]) for e in batch))
        client.on("disconnect", lambda reason=None: dropped.update([str(reason)]))
        try:
            client.connect(
                f"http://127.0.0.1:{port}", auth={"token": token}, transports=["websocket"], wait_timeout=30
            )
            if not client.call("join", {"rooms": [f"dag:{BIG}"]}, timeout=30)["ok"]:
                raise RuntimeError("join refused")
        except Exception:  # noqa: BLE001 - counted: a socket the server could not take
            failed += 1
            client.disconnect()
            continue
        clients.append(client)
    connected = time.perf_counter() - began
    publisher = make_executor(settings)
    publisher.start()
    sent = time.perf_counter()
    for state in ("running", "success"):
        for i in range(n_events // 2):
            publisher.publish_events(
                [
                    StateEvent(
                        kind="task",
                        dag_id=BIG,
                        run_id="fanout",
                        task_id=f"task_{i:03d}",
                        state=state,
                        try_number=1,
                        at=time.time(),
                    )
                ]
            )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(g >= expected for g in got):
        time.sleep(0.05)
    delivered = time.perf_counter() - sent
    complete = sum(1 for g in got if g >= expected)
    publisher.close()
    still_connected = sum(1 for c in clients if c.connected)
    reasons = dict(dropped)
    for client in clients:
        client.disconnect()
    return {
        "sockets": n_sockets,
        "connect_failures": failed,
        "still_connected": still_connected,
        "events": len(expected),
        "sockets_with_every_event": complete,
        "events_received": sum(len(g & expected) for g in got),
        "disconnect_reasons": reasons,
        "connect_seconds": round(connected, 2),
        "delivery_seconds": round(delivered, 2),
    }


# -- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["gunicorn", "werkzeug"], default="gunicorn")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--only", default="", help="measure only the addresses whose label has this")
    parser.add_argument("--serve-werkzeug", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_werkzeug is not None:
        serve_werkzeug(args.serve_werkzeug)
        return 0

    admin_url = os.environ.get("HAREFLOW_TEST_DATABASE_URL", ADMIN_URL)
    broker_url = os.environ.get("HAREFLOW_TEST_BROKER_URL", BROKER_URL)
    name = f"hfbench_load_{uuid.uuid4().hex[:8]}"
    prefix = f"hfbench-load-{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine_for(url)
    proc = None
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        populate(sessions, 100, 100, 50)
        with sessions() as s, s.begin():
            token = issue_token(s, "bench")
        engine.dispose()
        with tempfile.TemporaryDirectory() as home:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
            env.update(
                HAREFLOW_HOME=str(Path(home)),
                HAREFLOW_DATABASE_URL=url,
                HAREFLOW_BROKER_URL=broker_url,
                HAREFLOW_BROKER_PREFIX=prefix,
            )
            settings = load_settings(env=env)
            port = free_port()
            proc = start_server(args.server, env, port)
            emit({"type": "setup", "server": args.server, "port": port, "cpus": os.cpu_count()})
            addresses = [
                ("dag list page (100 of 101)", "/dags"),
                ("grid page (100 runs x 50 tasks)", f"/dags/{BIG}/grid?runs=100"),
                ("grid API (100 x 50)", f"/api/v1/dags/{BIG}/grid?limit=100"),
                ("run list API (50 runs)", f"/api/v1/dags/{BIG}/runs"),
            ]
            for label, path in addresses:
                if args.only not in label:
                    continue
                for clients in (int(c) for c in args.clients.split(",") if c):
                    results = [load(port, path, token, clients, args.seconds) for _ in range(args.repeat)]
                    emit(
                        {
                            "type": "http",
                            "server": args.server,
                            "address": label,
                            "clients": clients,
                            "rps": statistics.median(r["rps"] for r in results),
                            "p50_ms": statistics.median(r["p50_ms"] for r in results),
                            "p99_ms": statistics.median(r["p99_ms"] for r in results),
                            "errors": sum(r["errors"] for r in results),
                            "runs": results,
                        }
                    )
            if args.sockets:
                for _ in range(args.repeat):
                    emit(
                        {
                            "type": "socketio",
                            "server": args.server,
                            **sockets(port, token, args.sockets, args.events, settings),
                        }
                    )
    finally:
        if proc is not None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
        _delete_topology(broker_url, prefix)
    return 0


def _delete_topology(url: str, prefix: str) -> None:
    """Delete the exchanges and queues the run declared under its own prefix."""
    import pika
    from hareflow.common.broker.topology import Topology

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        topology = Topology(prefix)
        for queue in (topology.task_queue("default"), topology.dead_queue, topology.results_queue):
            channel.queue_delete(queue)
        for exchange in (
            topology.tasks_exchange,
            topology.results_exchange,
            topology.events_exchange,
            topology.dead_exchange,
        ):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
