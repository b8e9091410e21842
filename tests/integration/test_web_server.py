"""The production web server: `hareflow web` and `hareflow standalone` serve through gunicorn, relay
live events over WebSocket, log requests only when asked, check their port before anything else and
stop cleanly on Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from hareflow.common.broker import make_executor
from hareflow.common.config import load_settings
from hareflow.common.db import create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.common.messages import StateEvent
from hareflow.common.users import create_user
from hareflow.web.security import issue_token

from tests.integration.test_cli_web import base_env, free_port, get

pytestmark = pytest.mark.integration


class Output:
    """A process's combined output, read on a thread so that waiting never blocks on a pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, marker: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        if any(marker in line for line in self.lines):
            return
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if marker in line:
                return
        raise AssertionError(f"{marker!r} never printed; output:\n" + "\n".join(self.lines))

    def rest(self, timeout: float = 10.0) -> list[str]:
        """Every line, once the process has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
        return self.lines


def start(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hareflow.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def ctrl_c(proc: subprocess.Popen[str]) -> int:
    """Press Ctrl-C (SIGINT to the whole process group, as a terminal does) and wait for the end."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def group_is_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def web_metastore(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A migrated PostgreSQL metastore with an admin; yields its URL and an API token."""
    engine = create_engine_for(postgres_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    with sessions() as s, s.begin():
        create_user(s, "admin", "a-long-password-1", "admin")
        token = issue_token(s, "admin")
    engine.dispose()
    yield postgres_url, token


def test_hareflow_web_serves_through_gunicorn_and_relays_live_events_over_websocket(
    tmp_path: Path, web_metastore: tuple[str, str], rabbitmq_url: str, broker_prefix: str
) -> None:
    url, token = web_metastore
    port = free_port()
    env = base_env(
        tmp_path,
        HAREFLOW_DATABASE_URL=url,
        HAREFLOW_BROKER_URL=rabbitmq_url,
        HAREFLOW_BROKER_PREFIX=broker_prefix,
    )
    proc = start("web", "--port", str(port), env=env)
    out = Output(proc)
    client = socketio.Client(reconnection=False)
    events: list[dict[str, Any]] = []
    client.on("events", lambda batch: events.extend(batch))
    publisher = None
    try:
        out.wait_for("hareflow web on")
        response = _head(port, "/login")
        assert response["server"].startswith("gunicorn"), response
        assert "werkzeug" not in response["server"].lower()

        client.connect(
            f"http://127.0.0.1:{port}", auth={"token": token}, transports=["websocket"], wait_timeout=10
        )
        assert client.transport() == "websocket"
        assert client.call("join", {"rooms": ["dag:served"]}, timeout=10) == {
            "ok": True,
            "rooms": ["dag:served"],
        }
        publisher = make_executor(
            load_settings(env={}, overrides={"broker_url": rabbitmq_url, "broker_prefix": broker_prefix})
        )
        publisher.start()
        states = ["queued", "running", "success"]
        publisher.publish_events(
            [StateEvent(kind="run", dag_id="served", run_id="r1", state=s, at=time.time()) for s in states]
        )
        deadline = time.monotonic() + 20
        while len(events) < len(states) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(e["dag_id"], e["run_id"], e["state"]) for e in events] == [
            ("served", "r1", s) for s in states
        ]
    finally:
        if client.connected:
            client.disconnect()
        if publisher is not None:
            publisher.close()
        assert ctrl_c(proc) == 0
    assert group_is_gone(proc.pid)
    # No access log by default: the requests above left no line behind.
    assert not [line for line in out.rest() if "GET /login" in line or "socket.io" in line], out.lines


def test_access_log_writes_one_line_per_request_with_access_log(
    tmp_path: Path, web_metastore: tuple[str, str]
) -> None:
    url, _ = web_metastore
    port = free_port()
    proc = start(
        "web", "--port", str(port), "--access-log", env=base_env(tmp_path, HAREFLOW_DATABASE_URL=url)
    )
    out = Output(proc)
    try:
        out.wait_for("hareflow web on")
        for _ in range(3):
            assert get(f"http://127.0.0.1:{port}/login")[0] == 200
        assert get(f"http://127.0.0.1:{port}/no-such-page")[0] == 404
        out.wait_for('"GET /no-such-page HTTP/1.1" 404', timeout=10)
    finally:
        assert ctrl_c(proc) == 0
    lines = out.rest()
    assert len([line for line in lines if '"GET /login HTTP/1.1" 200' in line]) == 3, lines


def test_standalone_on_a_taken_port_says_so_and_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        home = tmp_path / "home"
        done = subprocess.run(
            [sys.executable, "-m", "hareflow.cli", "standalone", "--port", str(port)],
            env=base_env(tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done
    assert f"cannot serve the web UI on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr and "Password" not in done.stdout + done.stderr
    assert not home.exists()  # no metastore, no copied examples, no secret key


def test_standalone_serves_through_gunicorn_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    work = tmp_path / "work"
    work.mkdir()
    proc = start("standalone", "--port", str(port), env=base_env(tmp_path), cwd=work)
    out = Output(proc)
    try:
        out.wait_for("Stop: Ctrl-C")
        assert _head(port, "/login")["server"].startswith("gunicorn")
        # gunicorn's start-up chatter stays off the first screen.
        assert not [line for line in out.lines if "gunicorn" in line.lower() or "Booting" in line], out.lines
    finally:
        code = ctrl_c(proc)
    assert code == 0, out.rest()
    assert group_is_gone(proc.pid), "a process of standalone outlived Ctrl-C"
    with socket.socket() as again:  # the port is free again
        again.bind(("127.0.0.1", port))


def _head(port: int, path: str) -> dict[str, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return {"status": str(response.status), "server": response.getheader("Server") or ""}
    finally:
        conn.close()
