"""docker-compose.yml's hareflow services run as real processes, without a Docker engine.

Each service is started with exactly the command, environment and healthcheck the compose file gives
it; only what a container network would provide is mapped onto this machine: the `postgres` and
`rabbitmq` host names become the test services, the DAG mount becomes its source folder, each
container gets its own home folder, and ports that would be private to a container get free ports
here. The worker service runs twice, as `--scale worker=2` would.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import clean_env, hareflow_command
from tests.integration.test_cli_web import free_port
from tests.unit.test_deployment import REQUIRED, ROOT, load_compose

pytestmark = pytest.mark.integration

WORKERS = 2


def hareflow(args: list[str]) -> list[str]:
    return [*hareflow_command(), *args]


class Stack:
    def __init__(self, tmp_path: Path, database_url: str, broker_url: str, broker_prefix: str) -> None:
        self.tmp_path = tmp_path
        self.compose = load_compose({**REQUIRED, "DAGS_DIR": "./examples/dags"})
        self.database_url = database_url
        self.broker_url = broker_url
        self.broker_prefix = broker_prefix
        self.procs: list[subprocess.Popen[bytes]] = []
        self.web_port = free_port()

    def env(self, service: str, replica: int = 0) -> dict[str, str]:
        """The service's compose environment, mapped onto this machine."""
        spec = self.compose["services"][service]
        env = {str(k): str(v) for k, v in spec["environment"].items()}
        assert env.get("HAREFLOW_DATABASE_URL", "@postgres:5432/").count("@postgres:5432/") == 1
        assert "@rabbitmq:5672/" in env["HAREFLOW_BROKER_URL"] or service == "init"
        if "HAREFLOW_DATABASE_URL" in env:
            env["HAREFLOW_DATABASE_URL"] = self.database_url
        if "HAREFLOW_BROKER_URL" in env:
            env["HAREFLOW_BROKER_URL"] = self.broker_url
        for mount in spec.get("volumes") or []:  # the DAG folder: its source, read in place
            source, target = mount.split(":")[:2]
            if env.get("HAREFLOW_DAGS_FOLDER") == target:
                env["HAREFLOW_DAGS_FOLDER"] = str(ROOT / source)
        if "HAREFLOW_METRICS_PORT" in env:  # one port per container there; one machine here
            env["HAREFLOW_METRICS_PORT"] = str(free_port())
            env["HAREFLOW_METRICS_HOST"] = "127.0.0.1"
        env["HAREFLOW_BROKER_PREFIX"] = self.broker_prefix  # not in compose: keeps tests apart
        env["HAREFLOW_HOME"] = str(self.tmp_path / f"{service}-{replica}")  # each container's own
        if service == "web":
            env["HAREFLOW_WEB_PORT"] = str(self.web_port)
        return clean_env(env)

    def command(self, service: str) -> list[str]:
        args = [str(a) for a in self.compose["services"][service]["command"]]
        if service == "web":
            args[args.index("--port") + 1] = str(self.web_port)
            args[args.index("--host") + 1] = "127.0.0.1"
        return hareflow(args)

    def start(self, service: str, replica: int = 0) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{service}-{replica}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            self.command(service),
            env=self.env(service, replica),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def healthy(self, service: str, replica: int = 0) -> subprocess.CompletedProcess[str]:
        test = self.compose["services"][service]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "hareflow"]
        return subprocess.run(
            hareflow(test[2:]), env=self.env(service, replica), capture_output=True, text=True, timeout=60
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp_path.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def stack(tmp_path: Path, postgres_url: str, rabbitmq_url: str, broker_prefix: str) -> Iterator[Stack]:
    s = Stack(tmp_path, postgres_url, rabbitmq_url, broker_prefix)
    try:
        yield s
    finally:
        s.stop()


def wait_healthy(stack: Stack, service: str, replica: int = 0, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        check = stack.healthy(service, replica)
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} never healthy: {check.stdout}{check.stderr}\n{stack.logs()}")
        time.sleep(0.5)


def log_in(port: int, username: str, password: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(f"http://127.0.0.1:{port}/login", timeout=10).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    form = urllib.parse.urlencode({"username": username, "password": password, "csrf_token": token[1]})
    opener.open(f"http://127.0.0.1:{port}/login", data=form.encode(), timeout=10)
    return opener


def api(opener: urllib.request.OpenerDirector, port: int, path: str) -> Any:
    return json.loads(opener.open(f"http://127.0.0.1:{port}/api/v1{path}", timeout=10).read())


def test_the_compose_services_run_a_dag_with_two_workers_and_pass_their_healthchecks(stack: Stack) -> None:
    init = subprocess.run(
        stack.command("init"), env=stack.env("init"), capture_output=True, text=True, timeout=120
    )
    assert init.returncode == 0, init.stdout + init.stderr
    assert "admin user admin created" in init.stdout

    stack.start("scheduler")
    stack.start("web")
    for replica in range(WORKERS):
        stack.start("worker", replica)
    for service, replica in [("scheduler", 0), ("web", 0)] + [("worker", r) for r in range(WORKERS)]:
        wait_healthy(stack, service, replica)

    # The admin that init created from the environment logs in to the web service.
    web = log_in(stack.web_port, "admin", REQUIRED["HAREFLOW_ADMIN_PASSWORD"])
    assert api(web, stack.web_port, "/me")["role"] == "admin"
    deadline = time.monotonic() + 60
    while True:  # both replicas registered with the scheduler through their heartbeats
        workers = api(web, stack.web_port, "/workers")["workers"]
        if len(workers) == WORKERS and {w["state"] for w in workers} == {"active"}:
            break
        assert time.monotonic() < deadline, f"{workers}\n{stack.logs()}"
        time.sleep(0.5)

    # A run of the example DAG from the mounted folder, unpaused (new DAGs start paused) and
    # triggered as an operator would.
    unpause = subprocess.run(
        hareflow(["dags", "unpause", "example_fanout"]),
        env=stack.env("scheduler"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unpause.returncode == 0, unpause.stdout + unpause.stderr + stack.logs()
    trigger = subprocess.run(
        hareflow(["dags", "trigger", "example_fanout", "--wait", "--timeout", "120"]),
        env=stack.env("scheduler"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr + stack.logs()
    runs = api(web, stack.web_port, "/dags/example_fanout/runs")["runs"]
    assert [r["state"] for r in runs] == ["success"]
    health = json.loads(
        urllib.request.urlopen(f"http://127.0.0.1:{stack.web_port}/health", timeout=10).read()
    )
    assert health["ok"] is True
