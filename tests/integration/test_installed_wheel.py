"""hareflow installed from a wheel built from this tree, in a virtualenv of its own.

Only ``hareflow`` goes into site-packages: ``import common`` fails after installation, and a DAG
folder holding its own ``common/``, ``utils/``, ``scheduler.py``, ``web/`` and ``worker.py`` loads and
runs in standalone mode and with a separate scheduler and worker, even when the scheduler is started
from a folder that holds a ``hareflow/`` directory of its own.

The virtualenv gets the wheel (``--no-deps``) and sees this environment's dependencies through a
``.pth`` line; the editable install of the tree is not visible in it (``.pth`` files of a directory
added that way are not processed), so everything hareflow itself runs comes from the wheel.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import wait_until
from tests.integration.test_cli import clean_env
from tests.integration.test_cli_web import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

USER_DAG = """
    from common.helpers import greet
    import scheduler, utils, web, worker

    from hareflow import DAG, task

    with DAG("{dag_id}"):

        @task
        def hello():
            text = greet(utils.NAME, scheduler.ROLE, web.ROLE, worker.ROLE)
            print(text)
            return text

        hello()
"""
EXPECTED = "hello world from the user's scheduler, web and worker"


class Installed:
    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.python = venv / "bin" / "python"
        self.hareflow = venv / "bin" / "hareflow"

    def run(
        self, env: dict[str, str], *args: str, cwd: Path, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.hareflow), *args],
            env=clean_env(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, env: dict[str, str], *args: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        return subprocess.Popen(
            [str(self.hareflow), *args], env=clean_env(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = dist.glob("hareflow-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    [site_dir] = (venv / "lib").glob("python3*/site-packages")
    (site_dir / "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return Installed(venv)


@pytest.fixture
def user_dags(tmp_path: Path) -> Path:
    """A DAG folder with helper packages named like hareflow's own parts, and a DAG in a subfolder."""
    folder = tmp_path / "dags"
    files = {
        "common/__init__.py": "",
        "common/helpers.py": "def greet(*words):\n    return 'hello ' + ' '.join(words)\n",
        "utils/__init__.py": 'NAME = "world from the user\'s"\n',
        "scheduler.py": "ROLE = 'scheduler,'\n",
        "web/__init__.py": "ROLE = 'web'\n",
        "worker.py": "ROLE = 'and worker'\n",
        "top_level.py": USER_DAG.format(dag_id="user_top"),
        "team/nested.py": USER_DAG.format(dag_id="user_nested"),
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def shadowing_cwd(tmp_path: Path) -> Path:
    """A working directory with a ``hareflow/`` package that would break every DAG if imported."""
    cwd = tmp_path / "cwd"
    (cwd / "hareflow").mkdir(parents=True)
    (cwd / "hareflow" / "__init__.py").write_text("raise ImportError('the wrong hareflow was imported')\n")
    return cwd


def test_the_wheel_installs_only_the_hareflow_package(installed: Installed, tmp_path: Path) -> None:
    code = (
        "import importlib.util, json, hareflow, hareflow.common.migrations, hareflow.web, hareflow.worker, "
        "hareflow.scheduler\n"
        "print(json.dumps({'hareflow': hareflow.__file__, 'web': hareflow.web.__file__, "
        "'bare': [n for n in ('common', 'scheduler', 'worker', 'web') if importlib.util.find_spec(n)]}))"
    )
    out = subprocess.run([str(installed.python), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["bare"] == []
    assert found["hareflow"].startswith(str(installed.venv)) and found["web"].startswith(str(installed.venv))
    bare = subprocess.run(
        [str(installed.python), "-c", "import common"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bare.returncode == 1 and "No module named 'common'" in bare.stderr


def _trigger_and_check(installed: Installed, env: dict[str, str], cwd: Path, dag_id: str) -> None:
    unpaused = installed.run(env, "dags", "unpause", dag_id, cwd=cwd)
    assert unpaused.returncode == 0, unpaused.stdout + unpaused.stderr
    run = installed.run(env, "dags", "trigger", dag_id, "--wait", "--timeout", "90", cwd=cwd)
    assert run.returncode == 0, run.stdout + run.stderr
    run_id = run.stdout.split("created run ", 1)[1].split(" of ", 1)[0]
    logs = installed.run(env, "tasks", "logs", run_id, "hello", "--dag", dag_id, cwd=cwd)
    assert EXPECTED in logs.stdout, logs.stdout + logs.stderr


def _wait_for_dags(installed: Installed, env: dict[str, str], cwd: Path, *dag_ids: str) -> None:
    def loaded() -> bool:
        out = installed.run(env, "dags", "list", "--output", "json", cwd=cwd)
        return out.returncode == 0 and set(dag_ids) <= {d["dag_id"] for d in json.loads(out.stdout or "[]")}

    wait_until(loaded, timeout=60, interval=0.3, message=f"DAGs {dag_ids} loaded")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_user_modules_named_like_hareflow_parts_load_and_run_in_standalone(
    installed: Installed,
    user_dags: Path,
    shadowing_cwd: Path,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    env = {"HAREFLOW_HOME": str(tmp_path / "home"), "HAREFLOW_DAGS_FOLDER": str(user_dags)}
    log = tmp_path / "standalone.log"
    processes.append(
        installed.start(env, "standalone", "--port", str(free_port()), cwd=shadowing_cwd, log=log)
    )
    _wait_for_dags(installed, env, shadowing_cwd, "user_top", "user_nested")
    errors = installed.run(env, "dags", "errors", "--output", "json", cwd=shadowing_cwd)
    assert json.loads(errors.stdout) == [], errors.stdout
    for dag_id in ("user_top", "user_nested"):
        _trigger_and_check(installed, env, shadowing_cwd, dag_id)


def test_user_modules_named_like_hareflow_parts_load_and_run_with_a_scheduler_and_a_worker(
    installed: Installed,
    user_dags: Path,
    shadowing_cwd: Path,
    tmp_path: Path,
    postgres_url: str,
    rabbitmq_url: str,
    broker_prefix: str,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    broker = {"HAREFLOW_BROKER_URL": rabbitmq_url, "HAREFLOW_BROKER_PREFIX": broker_prefix}
    control = {
        **broker,
        "HAREFLOW_HOME": str(tmp_path / "home"),
        "HAREFLOW_DATABASE_URL": postgres_url,
        "HAREFLOW_DAGS_FOLDER": str(user_dags),
    }
    # The worker has only the broker and the DAG files, and a home of its own.
    worker = {
        **broker,
        "HAREFLOW_HOME": str(tmp_path / "worker-home"),
        "HAREFLOW_DAGS_FOLDER": str(user_dags),
    }
    migrated = installed.run(control, "db", "migrate", cwd=shadowing_cwd)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    processes.append(installed.start(control, "scheduler", cwd=shadowing_cwd, log=tmp_path / "scheduler.log"))
    processes.append(installed.start(worker, "worker", cwd=shadowing_cwd, log=tmp_path / "worker.log"))
    _wait_for_dags(installed, control, shadowing_cwd, "user_top", "user_nested")
    for dag_id in ("user_top", "user_nested"):
        _trigger_and_check(installed, control, shadowing_cwd, dag_id)
