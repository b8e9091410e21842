"""`hareflow standalone` and `hareflow web` serve the UI; `hareflow users token` opens the API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hareflow.common.db import create_engine_for
from hareflow.common.db.migrate import migrate

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hareflow(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hareflow.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 90.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never printed; output:\n" + "\n".join(lines))


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    env.update(HAREFLOW_HOME=str(tmp_path / "home"), **extra)
    return env


def test_standalone_serves_the_ui_and_creates_the_first_admin_once(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "hello.py").write_text(
        textwrap.dedent(
            """
            from datetime import datetime
            from hareflow import DAG, task
            with DAG("hello", start_date=datetime(2026, 1, 1)):
                @task
                def hi():
                    return "hi"
                hi()
            """
        )
    )
    port = free_port()
    env = base_env(tmp_path, HAREFLOW_DAGS_FOLDER=str(dags))
    first = hareflow("standalone", "--port", str(port), env=env)
    try:
        lines = read_until(first, "Stop: Ctrl-C")
        created = [line for line in lines if line.strip().startswith("Password: ")]
        assert len(created) == 1
        assert get(f"http://127.0.0.1:{port}/login")[0] == 200
        assert get(f"http://127.0.0.1:{port}/api/v1/dags")[0] == 401  # login required
        token = subprocess.run(
            [sys.executable, "-m", "hareflow.cli", "users", "token", "admin"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        deadline = time.monotonic() + 30
        while True:
            status, body = get(f"http://127.0.0.1:{port}/api/v1/dags", token)
            assert status == 200
            if "hello" in body.decode() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "hello" in json.dumps(json.loads(body))
    finally:
        assert stop(first) == 0
    assert (tmp_path / "home" / "secret_key").exists()
    second = hareflow("standalone", "--port", str(port), env=env)
    try:
        lines = read_until(second, "Stop: Ctrl-C")
        assert not [line for line in lines if "Password" in line]
    finally:
        stop(second)


def test_hareflow_web_serves_the_login_page_from_a_migrated_metastore(
    tmp_path: Path, postgres_url: str
) -> None:
    migrate(create_engine_for(postgres_url))
    port = free_port()
    proc = hareflow("web", "--port", str(port), env=base_env(tmp_path, HAREFLOW_DATABASE_URL=postgres_url))
    try:
        read_until(proc, "hareflow web on")
        status, body = get(f"http://127.0.0.1:{port}/login")
        assert status == 200 and b"password" in body.lower()
    finally:
        assert stop(proc) == 0


def test_hareflow_web_refuses_an_unmigrated_metastore(tmp_path: Path, postgres_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hareflow.cli", "web", "--port", str(free_port())],
        env=base_env(tmp_path, HAREFLOW_DATABASE_URL=postgres_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "run `hareflow db migrate`" in proc.stderr and "Traceback" not in proc.stderr
