"""`hareflow health ROLE` and the web's `/health` against real processes, as container healthchecks
use them: each long-running process reports healthy while it works, and stops being healthy when it
hangs or exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hareflow.common.db import create_engine_for
from hareflow.common.db.migrate import migrate

from tests.integration.test_cli import clean_env, run_hareflow, start_hareflow
from tests.integration.test_cli_web import free_port, get

pytestmark = pytest.mark.integration


def health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_hareflow(env, "health", *args, timeout=60)


def wait_for_health(env: dict[str, str], *args: str, ok: bool, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        proc = health(env, *args)
        assert "Traceback" not in proc.stderr, proc.stderr
        if (proc.returncode == 0) == ok:
            return proc.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"health {args} stayed {proc.returncode}: {proc.stdout}{proc.stderr}")
        time.sleep(0.5)


@pytest.fixture
def processes(
    tmp_path: Path, postgres_url: str, rabbitmq_url: str, broker_prefix: str, dags_folder: Path
) -> Iterator[tuple[dict[str, str], dict[str, subprocess.Popen[str]], int]]:
    migrate(create_engine_for(postgres_url))
    env = clean_env(
        {
            "HAREFLOW_HOME": str(tmp_path / "home"),
            "HAREFLOW_DATABASE_URL": postgres_url,
            "HAREFLOW_BROKER_URL": rabbitmq_url,
            "HAREFLOW_BROKER_PREFIX": broker_prefix,
            "HAREFLOW_DAGS_FOLDER": str(dags_folder),
        }
    )
    port = free_port()
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for role, args in (
            ("scheduler", ["scheduler"]),
            ("worker", ["worker", "--concurrency", "1"]),
            ("web", ["web", "--port", str(port)]),
        ):
            procs[role] = start_hareflow(
                env,
                *args,
                stdout=open(tmp_path / f"{role}.log", "w"),  # noqa: SIM115 - closed with the process
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        yield env, procs, port
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_every_long_running_process_reports_healthy_and_a_hung_or_stopped_one_does_not(processes) -> None:
    env, procs, port = processes
    for role in ("scheduler", "results", "worker"):
        out = wait_for_health(env, role, ok=True)
        assert f"{role} healthy" in out
    out = wait_for_health(env, "web", "--url", f"http://127.0.0.1:{port}/health", ok=True)
    assert out.startswith("web healthy")

    # A hung worker stops refreshing its report.
    worker = procs["worker"]
    os.killpg(worker.pid, signal.SIGSTOP)
    time.sleep(2.5)
    out = wait_for_health(env, "worker", "--max-age", "2", ok=False, timeout=10)
    assert "worker unhealthy" in out and "last report" in out
    os.killpg(worker.pid, signal.SIGCONT)
    wait_for_health(env, "worker", "--max-age", "8", ok=True, timeout=20)

    # A worker that exits takes its report with it.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    out = wait_for_health(env, "worker", ok=False, timeout=5)
    assert "no running worker process" in out
    assert health(env, "scheduler").returncode == 0  # the others are unaffected

    details = json.loads(health(env, "scheduler", "--json").stdout)
    assert details["ok"] is True and details["processes"][0]["pid"] == procs["scheduler"].pid


def test_web_health_needs_no_login_and_shows_no_error_texts(processes) -> None:
    env, procs, port = processes
    url = f"http://127.0.0.1:{port}/health"
    wait_for_health(env, "web", "--url", url, ok=True)
    deadline = time.monotonic() + 60
    while True:  # the scheduler's first heartbeat row may take a moment
        status, body = get(url)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    report = json.loads(body)
    assert status == 200, report
    assert report["ok"] and report["database"]["ok"] and report["broker"]["ok"] and report["scheduler"]["ok"]
    assert get(f"http://127.0.0.1:{port}/api/v1/health")[0] == 401  # the detailed one needs a login

    procs["web"].send_signal(signal.SIGTERM)
    procs["web"].wait(30)
    out = wait_for_health(env, "web", "--url", url, ok=False, timeout=5)
    assert "no answer from" in out
