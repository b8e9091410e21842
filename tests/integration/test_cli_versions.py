"""DAG versions with a real scheduler on PostgreSQL, ``hareflow dags versions`` and ``hareflow dags
report``: a run records the version it ran; after the DAG file is edited, the old run's graph and
source are still the old ones; the report times each file as the DAG processor parses it."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hareflow.common.db import Dag, DagRun
from sqlalchemy import select

from tests.integration.conftest import wait_until
from tests.integration.test_cli import CliSystem, assert_user_error, cli_system, invoke_hareflow

ONE_TASK = """
    from hareflow import DAG, task

    with DAG("versioned"):
        @task
        def extract():
            return 1

        extract()
"""
TWO_TASKS = """
    from hareflow import DAG, task

    with DAG("versioned"):
        @task
        def extract():
            return 1

        @task
        def load(value):
            return value + 1

        load(extract())
"""


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliSystem]:
    yield from cli_system(tmp_path_factory, {"versioned.py": ONE_TASK}, wait_for=["versioned"])


def _version_id(hf: CliSystem) -> int | None:
    with hf.cluster.sessions() as s:
        dag = s.get(Dag, "versioned")
        return dag.dag_version_id if dag is not None else None


def _run_version(hf: CliSystem, run_id: str) -> int | None:
    with hf.cluster.sessions() as s:
        return s.scalar(
            select(DagRun.dag_version_id).where(DagRun.dag_id == "versioned", DagRun.run_id == run_id)
        )


def _web_client(hf: CliSystem) -> Any:
    from hareflow.web import create_app

    from tests.web.conftest import add_user, login

    add_user(hf.cluster.sessions, "ver_viewer", "viewer")
    settings = hf.cluster.settings.replace(secret_key="ver-tests-secret-key-0123456789")
    app = create_app(settings, sessions=hf.cluster.sessions, executor=hf.cluster._shared)
    return login(app.test_client(), "ver_viewer")


def test_a_run_keeps_the_version_it_ran_after_its_dag_file_is_edited(hf: CliSystem) -> None:
    first_version = wait_until(lambda: _version_id(hf), message="the DAG's first version")
    old = hf.run_to_end("versioned")
    assert _run_version(hf, old) == first_version

    (hf.dags_folder / "versioned.py").write_text(textwrap.dedent(TWO_TASKS))
    wait_until(lambda: _version_id(hf) not in (None, first_version), message="the edited DAG's version")
    new = hf.run_to_end("versioned")
    assert _run_version(hf, new) == _version_id(hf)

    client = _web_client(hf)
    old_run = client.api("GET", f"/dags/versioned/runs/{old}").json
    old_version = client.api("GET", f"/dags/versioned/versions/{old_run['dag_version']}").json
    page = client.get(f"/dags/versioned/graph?run_id={quote(old, safe='')}").text
    assert old_run["dag_version"] == 1
    assert [t["task_id"] for t in old_version["serialized"]["tasks"]] == ["extract"]
    assert "def load" not in old_version["source"] and "def extract" in old_version["source"]
    assert '"id": "load"' not in page.split('id="graph-data">')[1].split("</script>")[0]
    assert client.api("GET", f"/dags/versioned/runs/{new}").json["dag_version"] == 2

    listed = hf.json("dags", "versions", "versioned")
    table = hf.ok("dags", "versions", "versioned").stdout
    assert [(v["version_number"], v["runs"], v["is_latest"]) for v in listed] == [(2, 1, True), (1, 1, False)]
    assert table.splitlines()[0].split()[:4] == ["VERSION", "HASH", "CREATED", "AT"]
    assert listed[0]["version_hash"][:12] in table
    shown = hf.ok("runs", "show", old, "--dag", "versioned").stdout
    assert "dag_version:" in shown and shown.split("dag_version:")[1].split()[0] == "1"


def test_versions_of_an_unknown_dag_is_one_clear_line(hf: CliSystem) -> None:
    assert_user_error(hf.invoke("dags", "versions", "no_such_dag"), "no DAG named 'no_such_dag'")


# -- dags report -------------------------------------------------------------------------------------

SLOW = """
    import time
    from hareflow import DAG, BashTask

    time.sleep(0.6)
    with DAG("slow_one"):
        BashTask("a", "true") >> BashTask("b", "true")
    with DAG("slow_two"):
        BashTask("c", "true")
"""
FAST = """
    from hareflow import DAG, BashTask

    with DAG("fast"):
        BashTask("only", "true")
"""
BROKEN = """
    from hareflow import DAG

    with DAG("broken"):
        raise RuntimeError("this DAG file is broken")
"""


@pytest.fixture
def report_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    for name, source in (("slow.py", SLOW), ("fast.py", FAST), ("broken.py", BROKEN)):
        (folder / name).write_text(textwrap.dedent(source))
    (folder / "helper.py").write_text("X = 1\n")  # not a DAG file: no report line
    return folder


def test_dags_report_times_each_file_slowest_first_with_its_dags_tasks_and_errors(
    report_folder: Path, tmp_path: Path
) -> None:
    env = {"HAREFLOW_HOME": str(tmp_path / "home"), "HAREFLOW_DAGS_FOLDER": str(report_folder)}
    result = invoke_hareflow(env, "dags", "report", "-o", "json")
    assert result.exit_code == 0, result.output

    import json

    rows = json.loads(result.stdout)
    assert [Path(r["file"]).name for r in rows][0] == "slow.py"
    assert sorted(Path(r["file"]).name for r in rows) == ["broken.py", "fast.py", "slow.py"]
    assert [r["duration"] for r in rows] == sorted((r["duration"] for r in rows), reverse=True)
    by_name = {Path(r["file"]).name: r for r in rows}
    slow = by_name["slow.py"]
    assert (slow["dags"], slow["tasks"], slow["dag_ids"], slow["errors"]) == (
        2,
        3,
        ["slow_one", "slow_two"],
        [],
    )
    assert slow["duration"] >= 0.6 and slow["import_duration"] >= 0.6
    broken = by_name["broken.py"]
    assert broken["dags"] == 0 and "this DAG file is broken" in " ".join(broken["errors"])

    table = invoke_hareflow(env, "dags", "report").stdout
    assert table.splitlines()[0].split()[:5] == ["FILE", "DURATION", "IMPORT", "DAGS", "TASKS"]
    assert table.splitlines()[1].startswith("slow.py")
    assert "3 files, 3 DAGs" in table


def test_dags_report_of_a_missing_folder_is_one_clear_line(tmp_path: Path) -> None:
    env = {"HAREFLOW_HOME": str(tmp_path / "home"), "HAREFLOW_DAGS_FOLDER": str(tmp_path / "nowhere")}
    result = invoke_hareflow(env, "dags", "report")
    assert_user_error(result, "DAG folder", "nowhere", "does not exist")
    assert_user_error(
        invoke_hareflow(env, "dags", "report", "--folder", str(tmp_path / "x")), "'" + str(tmp_path / "x")
    )
