"""A third-party provider, installed for real: examples/providers/hareflow-provider-example.

It is pip-installed into a temporary target directory (from a copy, so the build leaves nothing
in the repository); the real ``hareflow`` command then runs with that directory on PYTHONPATH, as
if the package were installed beside hareflow.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "providers" / "hareflow-provider-example"


@pytest.fixture(scope="module")
def provider_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example provider installed (with its entry point metadata) into a directory of its own."""
    root = tmp_path_factory.mktemp("provider")
    source = root / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            *_isolation(),
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def _isolation() -> list[str]:
    """Build with this environment's setuptools when it can build the example (faster, offline);
    else let pip fetch one into an isolated build environment."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 77 else []


def hareflow_env(provider_dir: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    env.update(PYTHONPATH=str(provider_dir), HAREFLOW_HOME=str(tmp_path / "home"), **extra)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hareflow.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


class KvService(ThreadingHTTPServer):
    """The key-value service the example's ``kv`` connection type talks to."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), KvHandler)
        self.store: dict[str, Any] = {}


class KvHandler(BaseHTTPRequestHandler):
    server: KvService

    def log_message(self, *_: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/health":
            self._reply(200, {"ok": True})
            return
        key = unquote(self.path.removeprefix("/kv/"))
        if key in self.server.store:
            self._reply(200, {"key": key, "value": self.server.store[key]})
        else:
            self._reply(404, {"error": f"no key {key}"})

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        key = unquote(self.path.removeprefix("/kv/"))
        length = int(self.headers.get("Content-Length") or 0)
        self.server.store[key] = json.loads(self.rfile.read(length))["value"]
        self._reply(200, {"key": key})


@pytest.fixture
def kv_service() -> Iterator[KvService]:
    server = KvService()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_providers_list_shows_the_installed_providers_connection_type_hook_and_task_type(
    provider_dir: Path, tmp_path: Path
) -> None:
    env = hareflow_env(provider_dir, tmp_path)
    as_json = run(["providers", "list", "--output", "json"], env)
    table = run(["providers", "list"], env)

    assert as_json.returncode == 0, as_json.stderr
    listed = {p["name"]: p for p in json.loads(as_json.stdout)}
    assert list(listed)[0] == "hareflow"  # hareflow's own first, once, though also an entry point
    assert len([p for p in json.loads(as_json.stdout) if p["name"] == "hareflow"]) == 1
    example = listed["example"]
    assert example["version"] == "0.1.0"
    assert [c["conn_type"] for c in example["connection_types"]] == ["kv"]
    assert example["connection_types"][0]["hook"] == "hareflow_provider_example.hook:KvHook"
    assert example["hooks"] == ["hareflow_provider_example.hook:KvHook"]
    assert example["task_types"] == ["hareflow_provider_example.tasks:KvPutTask"]
    assert "hareflow.common.providers.sql:SqlTask" in listed["hareflow"]["task_types"]

    assert table.returncode == 0, table.stderr
    (line,) = [row for row in table.stdout.splitlines() if row.startswith("example ")]
    assert line.split() == ["example", "0.1.0", "kv", "KvHook", "KvPutTask"]


def test_the_registry_offers_the_providers_connection_type_and_tests_it_through_its_hook(
    provider_dir: Path, tmp_path: Path, kv_service: KvService
) -> None:
    code = textwrap.dedent(
        f"""
        from hareflow.common.providers import connection_types, hook_for, task_types, test_connection
        from hareflow.common.secrets import Connection
        print(sorted(connection_types()))
        print(hook_for("kv").__name__, task_types()["KvPutTask"])
        print(test_connection(Connection.from_uri("store", "kv://127.0.0.1:{kv_service.server_address[1]}")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=hareflow_env(provider_dir, tmp_path)
    )

    assert done.returncode == 0, done.stderr
    types, hook, probe = done.stdout.splitlines()
    assert "'kv'" in types and "'postgresql'" in types
    assert hook == "KvHook hareflow_provider_example.tasks:KvPutTask"
    assert probe.startswith("ProbeResult(ok=True, message='GET http://127.0.0.1:")


def test_a_dag_file_using_the_providers_task_type_runs_with_dags_test(
    provider_dir: Path, tmp_path: Path, kv_service: KvService
) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "remember.py").write_text(
        textwrap.dedent(
            """
            from hareflow import DAG, task
            from hareflow_provider_example import KvPutTask

            with DAG("remember", params={"who": "ada"}):
                @task
                def shout(saved):
                    return "saved " + saved["value"]

                put = KvPutTask("put", "store", key="day-{{ params.who }}", value="{{ ds }}")
                shout(put.output)
            """
        )
    )
    env = hareflow_env(
        provider_dir,
        tmp_path,
        HAREFLOW_DAGS_FOLDER=str(folder),
        HAREFLOW_CONN_STORE=f"kv://127.0.0.1:{kv_service.server_address[1]}",
    )
    done = run(["dags", "test", "remember", "--logical-date", "2026-01-05"], env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert kv_service.store == {"day-ada": "2026-01-05"}
    assert '--- put: success, returned {"key":"day-ada","value":"2026-01-05"}' in done.stdout
    assert '--- shout: success, returned "saved 2026-01-05"' in done.stdout


def test_a_provider_that_fails_to_load_is_left_out_with_a_warning(provider_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    info = broken / "broken_provider-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-provider\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hareflow.providers]\nbroken = broken_provider:provider_info\n")
    (broken / "broken_provider.py").write_text("def provider_info():\n    raise RuntimeError('no config')\n")
    env = hareflow_env(provider_dir, tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(provider_dir), str(broken)])

    done = run(["providers", "list", "--output", "json"], env)

    assert done.returncode == 0, done.stderr
    assert [p["name"] for p in json.loads(done.stdout)] == ["hareflow", "example"]
    assert "provider broken failed to load: RuntimeError: no config" in done.stderr
