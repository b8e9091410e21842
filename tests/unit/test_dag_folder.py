"""The worker's check of a task message's ``dag_file`` against its own DAG folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hareflow.worker.dag_folder import DagFolder


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "dags" / "team").mkdir(parents=True)
    (tmp_path / "dags" / "team" / "etl.py").write_text("")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "evil.py").write_text("")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "common_dag.py").write_text("")
    return tmp_path


def test_files_inside_the_folder_are_accepted(tree: Path) -> None:
    folder = DagFolder(tree / "dags")
    assert folder.refusal(str(tree / "dags" / "team" / "etl.py")) is None
    assert folder.refusal(str(tree / "dags" / "not_yet_written.py")) is None  # fails as an import error


@pytest.mark.parametrize(
    ("dag_file", "reason"),
    [
        ("{tree}/elsewhere/evil.py", "lies outside this worker's DAG folder"),
        ("{tree}/dags/../elsewhere/evil.py", "lies outside this worker's DAG folder"),
        ("{tree}/dags_evil/x.py", "lies outside this worker's DAG folder"),  # a sibling sharing the prefix
        ("/etc/passwd.py", "lies outside this worker's DAG folder"),
        ("dags/team/etl.py", "is not an absolute path"),
        ("{tree}/dags/team/etl.py\x00", "is not an absolute path"),
        ("{tree}/dags/team/etl.pyc", "is not a Python file"),
        ("", "names no DAG file"),
    ],
)
def test_anything_else_is_refused_with_the_reason(tree: Path, dag_file: str, reason: str) -> None:
    folder = DagFolder(tree / "dags")
    refusal = folder.refusal(dag_file.format(tree=tree))
    assert refusal is not None and reason in refusal
    assert repr(dag_file.format(tree=tree)) in refusal


def test_a_message_that_is_not_a_string_is_refused(tree: Path) -> None:
    refusal = DagFolder(tree / "dags").refusal(["/dags/x.py"])
    assert refusal == "task message names no DAG file (dag_file=['/dags/x.py'])"


def test_files_reached_through_symlinks_are_accepted_by_their_resolved_path(tree: Path) -> None:
    dags = tree / "dags"
    (dags / "linked.py").symlink_to(tree / "shared" / "common_dag.py")
    (dags / "team" / "all_shared").symlink_to(tree / "shared", target_is_directory=True)
    (dags / "team" / "loop").symlink_to(dags, target_is_directory=True)  # a loop is walked once
    folder = DagFolder(dags)
    assert folder.refusal(str(tree / "shared" / "common_dag.py")) is None
    assert folder.refusal(str(dags / "team" / "all_shared" / "common_dag.py")) is None
    assert folder.refusal(str(tree / "elsewhere" / "evil.py")) is not None


def test_a_symlinked_dag_folder_is_compared_resolved(tree: Path) -> None:
    (tree / "current").symlink_to(tree / "dags", target_is_directory=True)
    folder = DagFolder(tree / "current")
    assert folder.refusal(str(tree / "dags" / "team" / "etl.py")) is None
    assert folder.refusal(str(tree / "current" / "team" / "etl.py")) is None
