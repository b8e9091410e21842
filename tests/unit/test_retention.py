"""The clean-up's archive file and cutoff, without a database."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hareflow.common.retention import ArchiveFile, CleanError, cutoff_for

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_the_archive_appears_under_its_name_only_when_closed_and_only_its_owner_reads_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.jsonl"
    archive = ArchiveFile(path)
    archive.write("dag_run", [{"id": 1, "end_date": NOW, "body": b"\x00\xff"}])
    archive.flush()
    archive.committed()

    assert not path.exists()
    assert stat.S_IMODE(os.stat(archive.partial).st_mode) == 0o600
    archive.close()

    assert not archive.partial.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"table": "dag_run", "row": {"id": 1, "end_date": "2026-06-01T00:00:00+00:00", "body": "AP8="}}
    ]


def test_rows_of_a_batch_that_did_not_commit_are_taken_out_of_the_archive(tmp_path: Path) -> None:
    archive = ArchiveFile(tmp_path / "out.jsonl")
    archive.write("audit_log", [{"id": 1}])
    archive.flush()
    archive.committed()
    archive.write("audit_log", [{"id": 2}, {"id": 3}])
    archive.flush()  # written and flushed, then the transaction failed
    archive.rollback()
    archive.write("audit_log", [{"id": 4}])  # the batch again, or the next one, not committed either
    archive.close()

    rows = [json.loads(line)["row"]["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows == [1]
    assert archive.rows == 1


def test_an_existing_archive_or_a_partial_one_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "kept.jsonl").write_text("earlier\n")
    with pytest.raises(CleanError, match="kept.jsonl exists"):
        ArchiveFile(tmp_path / "kept.jsonl")
    (tmp_path / "left.jsonl.partial").write_text("interrupted\n")
    with pytest.raises(CleanError, match="an interrupted clean-up left it"):
        ArchiveFile(tmp_path / "left.jsonl")
    assert (tmp_path / "kept.jsonl").read_text() == "earlier\n"
    assert (tmp_path / "left.jsonl.partial").read_text() == "interrupted\n"


@pytest.mark.parametrize("days", [0, -1, float("nan")])
def test_a_cutoff_needs_a_positive_number_of_days(days: float) -> None:
    with pytest.raises(CleanError, match="must be more than 0"):
        cutoff_for(days, NOW)


def test_the_cutoff_is_that_many_days_before_now() -> None:
    assert cutoff_for(1.5, NOW) == NOW - timedelta(days=1, hours=12)
