"""Standalone's first start: its own copy of the example DAGs, copied once, never overwritten."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hareflow.common.config import load_settings
from hareflow.common.config.settings import bundled_examples_folder
from hareflow.common.dag.loader import find_dag_files, load_dag_file
from hareflow.common.dag.serialize import SerializedDag, serialize_dag

from hareflow.cli.common import UserError
from hareflow.cli.first_run import PENDING_FILE, first_screen, prepare_dags_folder

EXAMPLE_FILES = sorted(p.name for p in find_dag_files(bundled_examples_folder()))


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    return home, cwd


def test_the_first_start_copies_the_examples_into_home_and_pins_that_folder(
    places: tuple[Path, Path],
) -> None:
    home, cwd = places
    settings, folder = prepare_dags_folder(load_settings(env={"HAREFLOW_HOME": str(home)}), cwd)
    assert folder.copied_examples and folder.path == home / "dags"
    assert settings.dags_folder == home / "dags"
    assert sorted(p.name for p in (home / "dags").iterdir()) == EXAMPLE_FILES
    for name in EXAMPLE_FILES:
        assert (home / "dags" / name).read_bytes() == (bundled_examples_folder() / name).read_bytes()
    assert (home / PENDING_FILE).exists()
    assert not (home / "dags.copying").exists()


def test_a_later_start_keeps_edits_and_does_not_bring_a_deleted_example_back(
    places: tuple[Path, Path],
) -> None:
    home, cwd = places
    base = load_settings(env={"HAREFLOW_HOME": str(home)})
    prepare_dags_folder(base, cwd)
    edited = home / "dags" / EXAMPLE_FILES[0]
    edited.write_text("# mine now\n")
    (home / "dags" / EXAMPLE_FILES[1]).unlink()
    settings, folder = prepare_dags_folder(base, cwd)
    assert not folder.copied_examples and folder.path == home / "dags"
    assert edited.read_text() == "# mine now\n"
    assert not (home / "dags" / EXAMPLE_FILES[1]).exists()


def test_nothing_is_copied_when_dags_exists_here_or_a_folder_is_configured(places: tuple[Path, Path]) -> None:
    home, cwd = places
    (cwd / "dags").mkdir()
    _, here = prepare_dags_folder(load_settings(env={"HAREFLOW_HOME": str(home)}), cwd)
    configured = load_settings(env={"HAREFLOW_HOME": str(home), "HAREFLOW_DAGS_FOLDER": str(home / "mine")})
    _, chosen = prepare_dags_folder(configured, home)
    assert (here.path, here.copied_examples) == (cwd / "dags", False)
    assert (chosen.path, chosen.copied_examples) == (home / "mine", False)
    assert not (home / "dags").exists() and not (home / PENDING_FILE).exists()


def test_a_home_that_cannot_be_written_is_one_clear_error_naming_the_folders(
    places: tuple[Path, Path],
) -> None:
    home, cwd = places
    (home / "dags.copying").write_text("a file where the staging folder goes\n")
    blocked = load_settings(env={"HAREFLOW_HOME": str(home / "dags.copying" / "home")})
    with pytest.raises(UserError, match=r"cannot copy the example DAGs from .* to .*dags\.copying/home/dags"):
        prepare_dags_folder(blocked, cwd)


def test_missing_bundled_examples_are_a_clear_error_and_leave_no_folder_behind(tmp_path: Path) -> None:
    from hareflow.cli.first_run import _copy_examples

    empty = tmp_path / "example_dags"
    empty.mkdir()
    with pytest.raises(UserError, match=r"no example DAGs in .*example_dags: re-install hareflow"):
        _copy_examples(empty, tmp_path / "home" / "dags", tmp_path / "home" / PENDING_FILE)
    assert not (tmp_path / "home" / "dags").exists()


def test_no_bundled_example_starts_a_burst_of_catch_up_runs_however_late_it_is_started() -> None:
    for when in (datetime(2026, 12, 2, tzinfo=UTC), datetime(2036, 6, 1, tzinfo=UTC)):
        for path in find_dag_files(bundled_examples_folder()):
            for dag in load_dag_file(path).dags:
                sdag = SerializedDag.from_dict(serialize_dag(dag))
                due, last = 0, None
                while due <= 100 and (info := sdag.next_dagrun_info(last, when)) and info.run_after <= when:
                    due, last = due + 1, info.logical_date
                # example_etl catches up one bounded week (end_date), two runs at a time
                assert due <= (7 if dag.catchup else 1), (dag.dag_id, when, due)
                assert dag.max_active_runs <= 2 or not dag.catchup


def test_the_first_screen_shows_the_url_user_password_folder_and_how_to_stop(tmp_path: Path) -> None:
    from hareflow.cli.first_run import DagsFolder

    first = first_screen(
        "http://127.0.0.1:8080/",
        DagsFolder(tmp_path, True),
        password="pw-123",
        metastore="sqlite",
        executor="local",
    )
    later = first_screen(
        "http://127.0.0.1:8080/", DagsFolder(tmp_path), password=None, metastore="sqlite", executor="local"
    )
    for text in (first, later):
        assert "Web UI:      http://127.0.0.1:8080/" in text
        assert f"DAG folder:  {tmp_path}" in text and "Ctrl-C" in text
    assert "Password:    pw-123" in first and "hareflow users set-password admin" in first
    assert "Change password" in first and "copied here on this first start" in first
    assert "Password" not in later and "copied" not in later


def test_the_copied_examples_are_unpaused_once_except_a_dag_someone_paused_or_unpaused(
    tmp_path: Path,
) -> None:
    import json

    from hareflow.common.db import AuditLog, Dag
    from hareflow.common.operations import set_paused
    from sqlalchemy import select

    from hareflow.cli.first_run import unpause_copied_examples
    from tests.unit.test_scheduler_loop import DAILY, Harness

    harness = Harness(tmp_path, dags_are_paused_at_creation=True)
    try:
        harness.dag_file("a.py", DAILY.format(catchup=False, max_runs=1).replace('"daily"', '"a"'))
        harness.dag_file("b.py", DAILY.format(catchup=False, max_runs=1).replace('"daily"', '"b"'))
        harness.dag_file("mine.py", DAILY.format(catchup=False, max_runs=1).replace('"daily"', '"mine"'))
        with harness.sessions() as s, s.begin():
            set_paused(s, "b", False, username="alice")
            set_paused(s, "b", True, username="alice")
        home = tmp_path / "home"
        home.mkdir()
        copied = [str((harness.folder / name).resolve()) for name in ("a.py", "b.py")]
        (home / PENDING_FILE).write_text(json.dumps({"files": copied}))

        assert unpause_copied_examples(harness.sessions, home) == ["a"]
        assert not (home / PENDING_FILE).exists()
        assert unpause_copied_examples(harness.sessions, home) == []  # once
        with harness.sessions() as s:
            paused = {d.dag_id: d.is_paused for d in s.scalars(select(Dag))}
            by = [a.username for a in s.scalars(select(AuditLog).where(AuditLog.dag_id == "a"))]
        assert paused == {"a": False, "b": True, "mine": True} and by == ["standalone"]
    finally:
        harness.close()
