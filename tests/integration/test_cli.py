"""The ``hareflow`` command as users run it: a real process, exit codes and messages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hareflow.cluster import Cluster, WorkerSpec
from tests.conftest import fast_settings


def hareflow_command() -> list[str]:
    """The installed console script (beside this interpreter), or the module as a fallback."""
    script = Path(sys.executable).with_name("hareflow")
    if script.exists():
        return [str(script)]
    found = shutil.which("hareflow")
    return [found] if found else [sys.executable, "-m", "hareflow.cli"]


def run_hareflow(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``hareflow ARGS`` with only ``env``'s HAREFLOW_* settings (none inherited from the test run)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    return subprocess.run(
        [*hareflow_command(), *args], env={**base, **env}, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli_env(tmp_path: Path, sqlite_url: str, dags_folder: Path) -> dict[str, str]:
    return {
        "HAREFLOW_HOME": str(tmp_path / "home"),
        "HAREFLOW_DATABASE_URL": sqlite_url,
        "HAREFLOW_DAGS_FOLDER": str(dags_folder),
    }


@pytest.fixture
def cluster(tmp_path: Path, sqlite_url: str, dags_folder: Path, write_dag) -> Iterator[Cluster]:
    """A running one-node system (SQLite, local executor) with a DAG that succeeds and one that fails."""
    write_dag(
        "cli_dags.py",
        """
        from hareflow import DAG, task

        with DAG("succeeds"):
            @task
            def fine():
                return "fine"

            fine()

        with DAG("fails"):
            @task
            def broken():
                raise ValueError("broken on purpose")

            broken()
        """,
    )
    settings = fast_settings(tmp_path, database_url=sqlite_url, dags_folder=str(dags_folder))
    system = Cluster(settings, workers=[WorkerSpec(concurrency=2)])
    system.migrate()
    system.start()
    try:
        system.wait_for_dag("succeeds")
        system.wait_for_dag("fails")
        yield system
    finally:
        system.stop()


def test_trigger_with_wait_exits_zero_when_the_run_succeeds(
    cluster: Cluster, cli_env: dict[str, str]
) -> None:
    done = run_hareflow(cli_env, "dags", "trigger", "succeeds", "--wait", "--timeout", "60")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "created run manual__" in done.stdout
    assert done.stdout.rstrip().endswith(": success")


def test_trigger_with_wait_exits_one_when_the_run_fails(cluster: Cluster, cli_env: dict[str, str]) -> None:
    done = run_hareflow(cli_env, "dags", "trigger", "fails", "--wait", "--timeout", "60")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "broken on purpose" in done.stdout
    assert done.stdout.rstrip().endswith(": failed")


def test_trigger_with_a_conf_that_is_not_json_exits_two_with_one_line_and_no_traceback(
    cli_env: dict[str, str],
) -> None:
    done = run_hareflow(cli_env, "dags", "trigger", "succeeds", "--conf", "{not json")

    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "--conf is not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_triggering_an_unknown_dag_exits_two_naming_it(cli_env: dict[str, str]) -> None:
    migrated = run_hareflow(cli_env, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr

    done = run_hareflow(cli_env, "dags", "trigger", "no_such_dag")

    assert done.returncode == 2
    assert "no DAG named 'no_such_dag'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_without_a_broker_exits_two_saying_it_needs_one(cli_env: dict[str, str]) -> None:
    done = run_hareflow(cli_env, "worker")

    assert done.returncode == 2
    assert "HAREFLOW_BROKER_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_db_check_against_an_unreachable_database_exits_two_naming_the_masked_url(
    cli_env: dict[str, str],
) -> None:
    env = {**cli_env, "HAREFLOW_DATABASE_URL": "postgresql://u:s3cret-pw@127.0.0.1:1/x"}

    done = run_hareflow(env, "db", "check")

    assert done.returncode == 2
    assert "postgresql://u:***@127.0.0.1:1/x" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
