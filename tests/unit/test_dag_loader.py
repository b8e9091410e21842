"""Loading DAG files: discovery, helper imports, worker lookups, the processor child and plugins."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hareflow.common.dag import (
    BaseTask,
    Context,
    DagNotFound,
    TaskNotFound,
    find_dag_files,
    get_task,
    load_dag_file,
    load_plugins,
)
from hareflow.common.dag import plugins as plugins_module

REPO = Path(__file__).resolve().parents[2]

GOOD = """
from datetime import datetime
from hareflow import DAG, BashTask, task

print("chatty DAG file")

with DAG("good", schedule="@daily", start_date=datetime(2026, 1, 1)):
    @task
    def hello():
        return "hi"
    hello() >> BashTask("after", "echo after")

with DAG("also_good"):
    BashTask("only", "true")
"""


def _write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    return path


def test_every_dag_in_a_file_is_collected_even_when_not_assigned(tmp_path: Path) -> None:
    result = load_dag_file(_write(tmp_path / "good.py", GOOD))
    assert result.errors == []
    assert [d.dag_id for d in result.dags] == ["good", "also_good"]
    assert result.dags[0].fileloc == str(tmp_path / "good.py")
    assert result.dags[0].lineno == 6


def test_dag_file_can_import_a_helper_module_next_to_it(tmp_path: Path) -> None:
    _write(tmp_path / "shared_helpers.py", "COMMAND = 'echo from helper'\n")
    path = _write(
        tmp_path / "uses_helper.py",
        """
        from hareflow import DAG, BashTask
        from shared_helpers import COMMAND
        with DAG("helped"):
            BashTask("run", COMMAND)
        """,
    )
    before = list(sys.path)
    result = load_dag_file(path)
    assert result.errors == []
    assert result.dags[0].get_task("run").bash_command == "echo from helper"  # type: ignore[attr-defined]
    assert sys.path == before
    sys.modules.pop("shared_helpers", None)


def test_dag_file_modules_are_not_left_in_sys_modules(tmp_path: Path) -> None:
    path = _write(tmp_path / "good.py", GOOD)
    before = set(sys.modules)
    load_dag_file(path)
    load_dag_file(path)
    assert {m for m in set(sys.modules) - before if "dagfile" in m} == set()


def test_dag_file_can_use_dataclasses(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "dc.py",
        """
        from dataclasses import dataclass
        from hareflow import DAG, BashTask

        @dataclass
        class Target:
            name: str

        with DAG("dc"):
            BashTask("t", "echo " + Target("x").name)
        """,
    )
    assert load_dag_file(path).errors == []


def test_find_dag_files_skips_private_hidden_and_unrelated_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.py", "from hareflow import DAG\n")
    _write(tmp_path / "sub" / "b.py", "# mentions DAG\n")
    _write(tmp_path / "_private.py", "from hareflow import DAG\n")
    _write(tmp_path / ".hidden" / "c.py", "from hareflow import DAG\n")
    _write(tmp_path / "_skipdir" / "d.py", "from hareflow import DAG\n")
    _write(tmp_path / "plain.py", "x = 1\n")
    _write(tmp_path / "notes.txt", "DAG\n")
    assert find_dag_files(tmp_path) == [tmp_path / "a.py", tmp_path / "sub" / "b.py"]


def test_find_dag_files_follows_symlinked_folders_once(tmp_path: Path) -> None:
    dags, kept = tmp_path / "dags", tmp_path / "kept"
    dags.mkdir()
    kept.mkdir()
    (kept / "shared.py").write_text("from hareflow import DAG\n")
    (dags / "team").symlink_to(kept, target_is_directory=True)
    (kept / "again").symlink_to(dags, target_is_directory=True)  # a loop back to the top
    assert find_dag_files(dags) == [dags / "team" / "shared.py"]


def test_get_task_returns_a_runnable_task_and_reloads_changed_files(tmp_path: Path) -> None:
    path = _write(tmp_path / "w.py", GOOD)
    first = get_task(path, "good", "hello")
    assert first.execute(Context(dag_id="good", task_id="hello", run_id="r")) == "hi"
    assert get_task(path, "good", "hello") is first
    _write(tmp_path / "w.py", GOOD.replace('return "hi"', 'return "hello again"'))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))
    second = get_task(path, "good", "hello")
    assert second is not first
    assert second.execute(Context(dag_id="good", task_id="hello", run_id="r")) == "hello again"


def test_get_task_explains_missing_dags_and_tasks(tmp_path: Path) -> None:
    path = _write(tmp_path / "w.py", GOOD)
    with pytest.raises(DagNotFound, match="DAG 'gone' is not defined in"):
        get_task(path, "gone", "hello")
    with pytest.raises(TaskNotFound, match="task 'gone' is not in DAG 'good'"):
        get_task(path, "good", "gone")
    broken = _write(tmp_path / "broken.py", "from hareflow import DAG\nraise RuntimeError('nope')\n")
    with pytest.raises(DagNotFound, match=r"broken.py:2: RuntimeError: nope"):
        get_task(broken, "good", "hello")
    with pytest.raises(DagNotFound, match="cannot read DAG file"):
        get_task(tmp_path / "missing.py", "good", "hello")


def _run_child(path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "hareflow.common.dag.processor_child", str(path)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_processor_child_prints_one_json_line_per_file_and_survives_broken_files(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.py", GOOD + "\nimport os\nos.write(1, b'raw fd output\\n')\n")
    syntax = _write(tmp_path / "syntax.py", "from hareflow import DAG\nwith DAG('s'):\n    x = (\n")
    raising = _write(
        tmp_path / "raising.py", "from hareflow import DAG\nprint('before')\nraise ValueError('bad config')\n"
    )

    good_report = _run_child(good)
    assert good_report["file"] == str(good)
    assert good_report["errors"] == []
    assert [d["dag_id"] for d in good_report["dags"]] == ["good", "also_good"]
    assert [t["task_id"] for t in good_report["dags"][0]["tasks"]] == ["hello", "after"]

    syntax_report = _run_child(syntax)
    assert syntax_report["dags"] == []
    [error] = syntax_report["errors"]
    assert error["file"] == str(syntax) and error["line"] == 3
    assert error["message"].startswith("SyntaxError")

    raising_report = _run_child(raising)
    [error] = raising_report["errors"]
    assert error["line"] == 3 and error["message"].startswith("ValueError: bad config")


def test_processor_child_rejects_bad_usage() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hareflow.common.dag.processor_child"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert proc.returncode == 2 and "usage" in proc.stderr


class _FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self._target = target

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


class SqlTask(BaseTask):
    def execute(self, ctx: Context) -> Any:
        return None


class CopyTask(BaseTask):
    def execute(self, ctx: Context) -> Any:
        return None


def test_load_plugins_reads_the_entry_point_group_and_logs_broken_plugins(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = ModuleType("fake_plugin_module")
    module.HAREFLOW_TASK_TYPES = [CopyTask]  # type: ignore[attr-defined]
    entry_points = [
        _FakeEntryPoint("sql", SqlTask),
        _FakeEntryPoint("module", module),
        _FakeEntryPoint("factory", lambda: [SqlTask]),
        _FakeEntryPoint("broken", ImportError("missing dependency")),
        _FakeEntryPoint("wrong", 42),
    ]
    groups: list[str] = []

    def fake_entry_points(*, group: str) -> list[_FakeEntryPoint]:
        groups.append(group)
        return entry_points

    monkeypatch.setattr(plugins_module.importlib.metadata, "entry_points", fake_entry_points)
    with caplog.at_level(logging.ERROR, logger="hareflow.common.dag.plugins"):
        found = load_plugins()
    assert groups == ["hareflow.plugins"]
    assert found == {"SqlTask": SqlTask, "CopyTask": CopyTask}
    assert "broken" in caplog.text and "wrong" in caplog.text


def test_the_dag_processor_child_puts_the_dag_folder_on_the_path_and_never_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hareflow.scheduler.dag_processor import parse_file

    dags = tmp_path / "dags"
    (dags / "common").mkdir(parents=True)
    (dags / "common" / "__init__.py").write_text("")
    (dags / "common" / "helpers.py").write_text("ID = 'from_helpers'\n")
    nested = _write(
        dags / "team" / "etl.py",
        "from common.helpers import ID\nfrom hareflow import DAG, task\n\n"
        "with DAG(ID):\n    @task\n    def t():\n        return 1\n\n    t()\n",
    )
    cwd = tmp_path / "cwd"
    (cwd / "hareflow").mkdir(parents=True)
    (cwd / "hareflow" / "__init__.py").write_text("raise ImportError('the wrong hareflow')\n")
    monkeypatch.chdir(cwd)
    report = parse_file(str(nested), 60, str(dags))
    assert report.errors == []
    assert [d["dag_id"] for d in report.dags] == ["from_helpers"]


def test_the_dag_folder_is_appended_to_the_path_once_so_it_never_shadows_an_installed_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hareflow.common.dag.loader import add_dags_folder_to_path

    monkeypatch.setattr(sys, "path", ["/first", "/second"])
    add_dags_folder_to_path(tmp_path)
    add_dags_folder_to_path(tmp_path)
    dag_file = _write(tmp_path / "one.py", GOOD)
    add_dags_folder_to_path(dag_file)  # a DAG "folder" that is one file: its directory
    assert sys.path == ["/first", "/second", str(tmp_path)]


def _processes_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if marker in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def _gone(marker: str, timeout: float = 10.0) -> bool:
    """Whether every process holding ``marker`` is gone (a SIGKILL takes effect a moment later)."""
    import time

    deadline = time.monotonic() + timeout
    while _processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_dag_file_that_starts_a_thread_and_a_process_at_import_parses_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    from hareflow.scheduler.dag_processor import parse_file

    marker = f"{600 + os.getpid() % 1000}.25"
    path = _write(
        tmp_path / "starts_things.py",
        f"""
        import subprocess, threading, time
        from hareflow import DAG, task

        threading.Thread(target=time.sleep, args=(600,)).start()  # not a daemon
        subprocess.Popen(["sleep", "{marker}"])  # inherits the parse's stdout and stderr

        with DAG("starts_things"):
            @task
            def t():
                return 1

            t()
        """,
    )
    report = parse_file(str(path), 20, str(tmp_path))

    assert report.errors == []
    assert [d["dag_id"] for d in report.dags] == ["starts_things"]
    assert _gone(f"sleep {marker}")
