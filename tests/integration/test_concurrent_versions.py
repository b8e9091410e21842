"""Several schedulers storing the same DAG at once record its version once, on PostgreSQL and
MariaDB; a writer whose insert finds the version already there reads that row."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hareflow.common.dag_versions as dag_versions
from hareflow.common.db import Dag, DagVersion, make_session_factory
from hareflow.scheduler.dag_processor import ProcessReport, parse_file
from sqlalchemy import select
from sqlalchemy.engine import Engine

from tests.integration.test_concurrent_writers import GOOD, _processors, _race, engine  # noqa: F401

EDITED = GOOD.replace("return 1", "return 2")


def _versions(db: Engine) -> list[tuple[str, int]]:
    with make_session_factory(db)() as s:
        return sorted(s.execute(select(DagVersion.dag_id, DagVersion.version_number)).tuples().all())


def _store_at_once(db: Engine, tmp_path: Path, path: Path) -> None:
    report = parse_file(str(path), 60)
    first, second, gate = _processors(db, tmp_path)
    now = datetime.now(UTC)
    _race(
        db,
        lambda: first._store(report, now, ProcessReport()),
        lambda: second._store(report, now, ProcessReport()),
        gate,
    )


def test_two_schedulers_storing_the_same_file_at_once_record_each_version_once(
    engine: Engine,  # noqa: F811 - the fixture of test_concurrent_writers
    tmp_path: Path,
) -> None:
    (tmp_path / "dags").mkdir()
    path = tmp_path / "dags" / "race.py"
    for source in (GOOD, EDITED):  # a new file, then an edit of it
        path.write_text(source)
        _store_at_once(engine, tmp_path, path)

    assert _versions(engine) == [("first", 1), ("first", 2), ("second", 1), ("second", 2)]
    with make_session_factory(engine)() as s:
        latest = dict(s.execute(select(Dag.dag_id, Dag.dag_version_id)).tuples().all())
        numbers = {d: s.get(DagVersion, v).version_number for d, v in latest.items()}  # type: ignore[union-attr]
    assert numbers == {"first": 2, "second": 2}


def test_a_writer_whose_insert_finds_the_version_taken_reads_that_row(
    engine: Engine,  # noqa: F811
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "race.py").write_text(GOOD)
    first, _, gate = _processors(engine, tmp_path)
    gate.open.set()
    first._store(parse_file(str(tmp_path / "dags" / "race.py"), 60), datetime.now(UTC), ProcessReport())
    [(dag_id, _), *_] = _versions(engine)
    real, looks = dag_versions._by_hash, []

    def missed_once(session: Any, dag_id: str, digest: str) -> Any:  # read before the other committed
        looks.append(digest)
        return None if len(looks) == 1 else real(session, dag_id, digest)

    monkeypatch.setattr(dag_versions, "_by_hash", missed_once)
    sessions = make_session_factory(engine)
    with sessions() as s, s.begin():
        dag = s.get(Dag, dag_id, with_for_update=True)
        assert dag is not None
        stored = s.get(DagVersion, dag.dag_version_id)
        assert stored is not None
        got = dag_versions.record_version(
            s,
            dag,
            source=stored.source,
            source_digest=dag_versions.source_hash(stored.source),
            now=stored.created_at,
        )
        assert (got.id, got.version_number) == (stored.id, 1)  # the existing row, unchanged
    assert len(looks) == 2
    assert _versions(engine) == [("first", 1), ("second", 1)]
