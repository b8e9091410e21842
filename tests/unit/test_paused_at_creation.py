"""New DAGs start paused (``dags_are_paused_at_creation``); re-parsing never changes the flag."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hareflow.common.config import load_settings
from hareflow.common.db import Dag
from hareflow.common.operations import set_paused
from sqlalchemy import select

from tests.unit.test_scheduler_loop import DAILY, NOW, Harness


@pytest.fixture
def paused_harness(tmp_path: Path):
    h = Harness(tmp_path, dags_are_paused_at_creation=True)
    yield h
    h.close()


def paused(harness: Harness, dag_id: str) -> bool:
    with harness.sessions() as s:
        dag = s.get(Dag, dag_id)
        assert dag is not None
        return dag.is_paused


def test_the_setting_defaults_to_paused_and_reads_false_from_the_environment() -> None:
    assert load_settings(env={}).dags_are_paused_at_creation is True
    env = {"HAREFLOW_DAGS_ARE_PAUSED_AT_CREATION": "false"}
    assert load_settings(env=env).dags_are_paused_at_creation is False


def test_a_dag_seen_for_the_first_time_is_paused_and_gets_no_runs(paused_harness: Harness) -> None:
    paused_harness.dag_file("daily.py", DAILY.format(catchup=True, max_runs=16))
    assert paused(paused_harness, "daily")
    for _ in range(3):
        paused_harness.scheduler.run_once(NOW)
    assert paused_harness.runs("daily") == []  # no burst of catch-up runs before anyone looked


def test_with_the_setting_off_a_new_dag_is_active_at_once(tmp_path: Path) -> None:
    harness = Harness(tmp_path, dags_are_paused_at_creation=False)
    try:
        harness.dag_file("daily.py", DAILY.format(catchup=False, max_runs=16))
        assert not paused(harness, "daily")
        harness.scheduler.run_once(NOW)
        assert len(harness.runs("daily")) == 1
    finally:
        harness.close()


def test_re_parsing_a_changed_file_never_changes_the_paused_flag(paused_harness: Harness) -> None:
    paused_harness.dag_file("daily.py", DAILY.format(catchup=True, max_runs=16))
    paused_harness.dag_file("daily.py", DAILY.format(catchup=True, max_runs=3))  # changed: re-stored
    assert paused(paused_harness, "daily")
    with paused_harness.sessions() as s, s.begin():
        set_paused(s, "daily", False, username="alice")
    paused_harness.dag_file("daily.py", DAILY.format(catchup=True, max_runs=4))
    assert not paused(paused_harness, "daily")
    with paused_harness.sessions() as s:
        assert s.get(Dag, "daily").max_active_runs == 4  # type: ignore[union-attr]


def test_unpausing_a_catch_up_dag_creates_its_runs_from_the_start_date(paused_harness: Harness) -> None:
    paused_harness.dag_file("daily.py", DAILY.format(catchup=True, max_runs=16))
    paused_harness.scheduler.run_once(NOW)
    with paused_harness.sessions() as s, s.begin():
        set_paused(s, "daily", False, username="alice")
    later = NOW + timedelta(minutes=1)  # the next timer pass after the unpause
    for _ in range(3):
        paused_harness.scheduler.run_once(later)
    runs = paused_harness.runs("daily")
    assert [r.logical_date.day for r in runs] == [1, 2, 3, 4]  # type: ignore[union-attr]


def test_a_dag_known_from_another_folder_moves_to_this_one_on_the_first_parse_keeping_its_flag(
    tmp_path: Path,
) -> None:
    """What standalone's first start after an upgrade does: the examples were known from the bundled
    folder (which still exists), and are now read from the copy in $HAREFLOW_HOME/dags."""
    from hareflow.common.db import ImportError_
    from hareflow.scheduler.dag_processor import DagProcessor

    harness = Harness(tmp_path, dags_are_paused_at_creation=True)
    try:
        harness.dag_file("daily.py", DAILY.format(catchup=False, max_runs=1))
        with harness.sessions() as s, s.begin():
            set_paused(s, "daily", False, username="alice")
        copy = tmp_path / "home" / "dags"
        copy.mkdir(parents=True)
        (copy / "daily.py").write_text((harness.folder / "daily.py").read_text())
        DagProcessor(settings=harness.settings, session_factory=harness.sessions, folder=copy).run_once(NOW)
        with harness.sessions() as s:
            dag = s.get(Dag, "daily")
            assert dag is not None and dag.is_active and dag.fileloc == str((copy / "daily.py").resolve())
            assert not dag.is_paused
            assert s.scalars(select(ImportError_)).all() == []
    finally:
        harness.close()
