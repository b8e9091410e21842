"""A new user's first minutes: the real `hareflow standalone`, started twice on one home folder."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hareflow.common.config.settings import bundled_examples_folder
from hareflow.common.db import AuditLog, Dag, DagRun, create_engine_for, make_session_factory
from sqlalchemy import select

from tests.integration.conftest import wait_until
from tests.integration.test_cli import clean_env, hareflow_command
from tests.integration.test_cli_web import free_port, stop
from tests.integration.test_compose_stack import log_in

pytestmark = pytest.mark.integration

LAST_LINE = "Stop: Ctrl-C"


def start_standalone(home: Path, cwd: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*hareflow_command(), "standalone", "--port", str(port)],
        env=clean_env({"HAREFLOW_HOME": str(home)}),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def first_screen(proc: subprocess.Popen[str], timeout: float = 90.0) -> list[str]:
    """Every line the process printed up to and including the screen's last line."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(
        target=lambda out: ([lines.put(line) for line in out], lines.put(None)),
        args=(proc.stdout,),
        daemon=True,
    ).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            seen.append(line.rstrip("\n"))
            if LAST_LINE in line:
                return seen
    except queue.Empty:
        raise AssertionError(f"no {LAST_LINE!r} within {timeout:g}s; output:\n" + "\n".join(seen)) from None
    raise AssertionError("standalone ended before its first screen:\n" + "\n".join(seen))


def field(lines: list[str], name: str) -> str:
    [value] = [line.split(":", 1)[1].strip() for line in lines if line.strip().startswith(f"{name}:")]
    return value


def run(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*hareflow_command(), *args],
        env=clean_env({"HAREFLOW_HOME": str(home)}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


def sessions(home: Path):  # noqa: ANN201 - a session factory on standalone's SQLite metastore
    return make_session_factory(create_engine_for(f"sqlite:///{home / 'hareflow.db'}"))


def test_the_first_start_is_quiet_copies_the_examples_and_runs_them_and_the_next_keeps_the_users_edits(
    tmp_path: Path,
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    port = free_port()
    examples = sorted(p.name for p in bundled_examples_folder().glob("example_*.py"))

    first = start_standalone(home, cwd, port)
    try:
        screen = first_screen(first)
        # Nothing before the screen: no migration or plugin lines, no component start-up logs.
        assert screen[0] == "hareflow standalone is running.", "\n".join(screen)
        assert not [line for line in screen if "alembic" in line or " INFO " in line]
        assert field(screen, "Web UI") == f"http://127.0.0.1:{port}/"
        assert field(screen, "User") == "admin"
        password = field(screen, "Password")
        text = "\n".join(screen)
        assert "`hareflow users set-password admin`" in text and "Change password" in text
        assert field(screen, "DAG folder") == str(home / "dags")
        assert "copied here on this first start" in text
        assert sorted(p.name for p in (home / "dags").iterdir()) == examples

        # The password works, and the copied examples were unpaused and run at once.
        assert log_in(port, "admin", password).open(f"http://127.0.0.1:{port}/dags", timeout=10).status == 200
        db = sessions(home)
        with db() as s:
            dags = {d.dag_id: d for d in s.scalars(select(Dag))}
            unpaused_by = {a.dag_id for a in s.scalars(select(AuditLog).where(AuditLog.action == "unpause"))}
        assert dags and not [d for d in dags.values() if d.is_paused]
        assert all(Path(d.fileloc).parent == home / "dags" for d in dags.values())
        assert unpaused_by == set(dags)

        def a_run() -> int | None:
            with db() as s:  # a new session each time: one transaction would keep one snapshot
                return s.scalar(select(DagRun.id).limit(1))

        wait_until(a_run, timeout=60, message="a first run")
    finally:
        assert stop(first) == 0

    # Between the starts the user edits one example, deletes another and pauses a third.
    edited = home / "dags" / "example_etl.py"
    edited.write_text(edited.read_text() + "\n# edited by the user\n")
    (home / "dags" / "example_retries.py").unlink()
    assert run(home, cwd, "dags", "pause", "example_fanout").returncode == 0

    second = start_standalone(home, cwd, port)
    try:
        screen = first_screen(second)
        assert not [line for line in screen if "Password" in line or "copied" in line], screen
        assert field(screen, "DAG folder") == str(home / "dags")
        assert edited.read_text().endswith("# edited by the user\n")
        assert not (home / "dags" / "example_retries.py").exists()
        with sessions(home)() as s:
            assert s.get(Dag, "example_fanout").is_paused  # type: ignore[union-attr]
            assert not s.get(Dag, "example_etl").is_paused  # type: ignore[union-attr]
        # Other commands on the same home agree on the DAG folder.
        shown = json.loads(run(home, cwd, "config", "show", "-o", "json").stdout)
        assert shown["dags_folder (effective)"] == str(home / "dags")
        tested = run(home, cwd, "tasks", "test", "example_fanout", "plan")
        assert tested.returncode == 0, tested.stderr
    finally:
        assert stop(second) == 0


def test_with_a_dags_folder_here_nothing_is_copied_and_a_new_dag_starts_paused(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "work"
    (cwd / "dags").mkdir(parents=True)
    (cwd / "dags" / "mine.py").write_text(
        "from datetime import datetime\nfrom hareflow import DAG, task\n"
        "with DAG('mine', schedule='@daily', start_date=datetime(2020, 1, 1), catchup=True):\n"
        "    @task\n    def hi():\n        return 1\n    hi()\n"
    )
    proc = start_standalone(home, cwd, free_port())
    try:
        screen = first_screen(proc)
        assert field(screen, "DAG folder") == str(cwd / "dags")
        assert "copied" not in "\n".join(screen)
        assert not (home / "dags").exists()
        factory = sessions(home)

        def stored() -> Dag | None:  # the first screen can come before the folder's first parse
            with factory() as s:
                return s.get(Dag, "mine")

        assert wait_until(stored, timeout=60, message="DAG 'mine' parsed").is_paused
        time.sleep(2.0)  # several scheduling passes: none may start the catch-up
        with factory() as s:
            assert s.scalars(select(DagRun)).all() == []  # six years of catch-up wait for a person
    finally:
        assert stop(proc) == 0
