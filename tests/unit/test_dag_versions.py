"""DAG versions: recorded when a DAG's serialized form or source changes, never per parse, and
taken by every run from the DAG's current version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hareflow.common.assets import record_external_event
from hareflow.common.backfill import create_backfill
from hareflow.common.dag_versions import list_versions, record_version, run_version, version_hash
from hareflow.common.db import Dag, DagCode, DagRun, DagVersion
from hareflow.common.event_runs import insert_event_runs, make_event
from hareflow.common.runs import trigger_run
from sqlalchemy import event, func, select

from tests.unit.test_scheduler_loop import NOW, Harness

TWO = """
from hareflow import DAG, task
with DAG("versioned"):
    @task
    def first():
        return 1
    first(){extra}
"""
SECOND = """
    @task
    def second():
        return 2
    second()"""


@pytest.fixture
def harness(tmp_path: Path):
    h = Harness(tmp_path)
    yield h
    h.close()


def versions(h: Harness, dag_id: str = "versioned") -> list[DagVersion]:
    with h.sessions() as s:
        return list(
            s.scalars(
                select(DagVersion).where(DagVersion.dag_id == dag_id).order_by(DagVersion.version_number)
            )
        )


def current(h: Harness, dag_id: str = "versioned") -> int | None:
    with h.sessions() as s:
        dag = s.get(Dag, dag_id)
        assert dag is not None
        return dag.dag_version_id


def test_a_dag_parsed_twice_unchanged_has_one_version(harness: Harness) -> None:
    harness.dag_file("v.py", TWO.format(extra=""))
    harness.dag_file("v.py", TWO.format(extra=""))  # a fresh processor: parsed and stored again

    [only] = versions(harness)
    assert only.version_number == 1
    assert current(harness) == only.id
    assert [t["task_id"] for t in only.serialized["tasks"]] == ["first"]
    assert only.source is not None and "def first" in only.source
    with harness.sessions() as s:
        code = s.get(DagCode, DagCode.key(only.fileloc))
        assert code is not None
        assert only.version_hash == version_hash(only.dag_hash, code.source_hash)


def test_an_edited_dag_gets_version_two_and_version_one_keeps_the_old_shape(harness: Harness) -> None:
    harness.dag_file("v.py", TWO.format(extra=""))
    harness.dag_file("v.py", TWO.format(extra=SECOND))

    first, second = versions(harness)
    assert (first.version_number, second.version_number) == (1, 2)
    assert [t["task_id"] for t in first.serialized["tasks"]] == ["first"]
    assert [t["task_id"] for t in second.serialized["tasks"]] == ["first", "second"]
    assert "def second" not in (first.source or "") and "def second" in (second.source or "")
    assert current(harness) == second.id


def test_a_source_only_edit_is_a_new_version_with_the_same_serialized_form(harness: Harness) -> None:
    harness.dag_file("v.py", TWO.format(extra=""))
    harness.dag_file("v.py", TWO.format(extra="") + "# a comment at the end (no line number moves)\n")

    first, second = versions(harness)
    assert first.dag_hash == second.dag_hash and first.version_hash != second.version_hash
    assert second.source is not None and "# a comment" in second.source
    assert current(harness) == second.id


def test_a_reverted_edit_is_the_earlier_version_again(harness: Harness) -> None:
    harness.dag_file("v.py", TWO.format(extra=""))
    harness.dag_file("v.py", TWO.format(extra=SECOND))
    harness.dag_file("v.py", TWO.format(extra=""))

    first, _ = versions(harness)
    assert len(versions(harness)) == 2
    assert current(harness) == first.id


def test_two_writers_of_the_same_version_store_one_row(harness: Harness) -> None:
    harness.dag_file("v.py", TWO.format(extra=""))
    [stored] = versions(harness)
    # Two writers that both missed the other's row (each read before the other committed): the
    # insert of the second finds the key taken and does nothing; both end on the same row.
    for _ in range(2):
        with harness.sessions() as s, s.begin():
            dag = s.get(Dag, "versioned")
            assert dag is not None
            dag.dag_version_id = None
            got = record_version(s, dag, source=stored.source, source_digest=_digest(stored.source), now=NOW)
            assert got.id == stored.id
    assert len(versions(harness)) == 1
    assert current(harness) == stored.id


def test_a_writer_losing_the_insert_race_reads_the_winners_row(harness: Harness, monkeypatch) -> None:
    harness.dag_file("v.py", TWO.format(extra=""))
    [stored] = versions(harness)
    import hareflow.common.dag_versions as module

    real, calls = module._by_hash, []

    def missed_first(session, dag_id, digest):  # the first look happens before the winner commits
        calls.append(digest)
        return None if len(calls) == 1 else real(session, dag_id, digest)

    monkeypatch.setattr(module, "_by_hash", missed_first)
    with harness.sessions() as s, s.begin():
        dag = s.get(Dag, "versioned")
        assert dag is not None
        got = record_version(s, dag, source=stored.source, source_digest=_digest(stored.source), now=NOW)
    assert got.id == stored.id and len(calls) == 2
    assert len(versions(harness)) == 1


def _digest(source: str | None) -> str:
    from hareflow.common.dag_versions import source_hash

    return source_hash(source)


def test_parsing_an_unchanged_file_asks_nothing_about_versions(harness: Harness, monkeypatch) -> None:
    harness.dag_file("v.py", TWO.format(extra=""))
    import hareflow.scheduler.dag_processor as processor

    def fail(*_: object, **__: object) -> None:
        raise AssertionError("an unchanged parse recorded a version")

    monkeypatch.setattr(processor, "record_version", fail)
    statements: list[str] = []
    listen = event.listens_for(harness.engine, "before_cursor_execute")
    listen(lambda conn, cursor, statement, *_: statements.append(statement))
    harness.dag_file("v.py", TWO.format(extra=""))
    parsed = list(statements)
    assert parsed and not [s for s in parsed if "dag_version " in s or "dag_version\n" in s]
    assert len(versions(harness)) == 1


SCHEDULED = """
from datetime import datetime
from hareflow import DAG, Asset, WebhookTrigger, task
with DAG("producer"):
    @task(outlets=[Asset("s3://bucket/orders")])
    def make():
        return 1
    make()
with DAG("consumer", schedule=[Asset("s3://bucket/orders")]):
    @task
    def use():
        return 1
    use()
with DAG("daily", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False,
         trigger=WebhookTrigger()):
    @task
    def only():
        return 1
    only()
"""


def test_every_way_of_creating_a_run_records_the_dags_current_version(harness: Harness) -> None:
    harness.dag_file("all.py", SCHEDULED)
    with harness.sessions() as s, s.begin():
        trigger_run(s, "daily", run_id="manual_one", now=NOW)
        create_backfill(
            s, "daily", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), now=NOW
        )
        dag = s.get(Dag, "daily")
        assert dag is not None
        insert_event_runs(s, dag, [make_event({}, {"n": 1}, None, "delivery-1")], NOW, triggered_by="t")
        record_external_event(s, "s3://bucket/orders", {}, "alice", NOW)
    harness.scheduler.run_once(NOW)  # the scheduled run of "daily", the asset-triggered one of "consumer"

    with harness.sessions() as s:
        runs = s.execute(select(DagRun.dag_id, DagRun.run_type, DagRun.dag_version_id)).all()
        wanted = {d: s.get(Dag, d).dag_version_id for d in ("daily", "consumer")}  # type: ignore[union-attr]
    types = {(dag_id, run_type) for dag_id, run_type, _ in runs}
    assert {
        ("daily", "scheduled"),
        ("daily", "manual"),
        ("daily", "backfill"),
        ("daily", "event"),
        ("consumer", "asset_triggered"),
    } <= types
    assert all(v is not None and v == wanted[d] for d, _, v in runs), runs


def test_runs_keep_their_version_after_the_dag_changes_and_the_listing_counts_them(harness: Harness) -> None:
    harness.dag_file("v.py", TWO.format(extra=""))
    with harness.sessions() as s, s.begin():
        old = trigger_run(s, "versioned", run_id="before", now=NOW)
        assert run_version(s.get(Dag, "versioned"))["dag_version_id"] == old.dag_version_id  # type: ignore[arg-type]
    harness.dag_file("v.py", TWO.format(extra=SECOND))
    with harness.sessions() as s, s.begin():
        trigger_run(s, "versioned", run_id="after", now=NOW.replace(hour=11))
    with harness.sessions() as s:
        numbers = dict(s.execute(select(DagRun.run_id, DagRun.dag_version_number)).tuples().all())
        dag = s.get(Dag, "versioned")
        assert dag is not None
        listed = [(v.version_number, v.runs, v.is_latest) for v in list_versions(s, dag)]
        assert s.scalar(select(func.count()).select_from(DagVersion)) == 2
    assert numbers == {"before": 1, "after": 2}
    assert listed == [(2, 1, True), (1, 1, False)]


def test_every_place_that_creates_runs_takes_their_version_from_run_version() -> None:
    """A new way of creating runs must record their version too: each module that builds a
    ``DagRun`` (or inserts into its table) spreads ``run_version(dag)`` into it."""
    root = Path(__file__).resolve().parents[2]
    creating = []
    for folder in ("common", "scheduler", "web", "worker", "hareflow"):
        for path in sorted((root / folder).rglob("*.py")):
            text = path.read_text()
            if path.name == "models.py" or "migrations" in path.parts:
                continue
            if "DagRun(" in text or ("DagRun.__table__" in text and "insert(" in text):
                creating.append(path.relative_to(root))
                assert "**run_version(dag)" in text, f"{path}: creates runs without run_version(dag)"
    assert {str(p) for p in creating} >= {"common/runs.py", "common/backfill.py", "common/assets.py"}
    assert "common/event_runs.py" in {str(p) for p in creating}
