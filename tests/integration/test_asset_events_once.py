"""Exactly once, on all three databases: a successful try records one asset event per outlet
however many copies of its result arrive and however two results consumers interleave, and two
schedulers looking at the same new events create one consumer run.

The results are fabricated (as a worker would send them) and applied with the results consumer's
own read and write steps; the interleaving is fixed by the test, not left to thread timing. SQLite
serializes transactions (``BEGIN IMMEDIATE``), so there the copies follow each other.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.config import Settings, load_settings
from hareflow.common.dag.serialize import SerializedDag
from hareflow.common.db import (
    AssetDagRunQueue,
    AssetEvent,
    Dag,
    DagRun,
    DagRunAssetEvent,
    TaskInstance,
    create_engine_for,
    make_session_factory,
)
from hareflow.common.db.migrate import migrate
from hareflow.common.messages import ResultMessage, TaskKey
from hareflow.common.runs import trigger_run
from hareflow.scheduler.dag_processor import DagProcessor
from hareflow.scheduler.loop import LoopReport, Scheduler
from hareflow.scheduler.results import apply_results, read_reports, write_reports
from hareflow.scheduler.scheduling import schedule_pass
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

DATABASES = {"postgresql": "postgres_url", "mariadb": "mysql_url", "sqlite": "sqlite_url"}
SOURCE = """
    from hareflow import DAG, Asset, task

    orders = Asset("warehouse://sales/orders")

    with DAG("producer"):
        @task(outlets=[orders])
        def write():
            return 1
        write()

    with DAG("consumer", schedule=[orders]):
        @task
        def read():
            return 1
        read()
"""


@pytest.fixture(params=list(DATABASES))
def metastore(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[sessionmaker[Session], Settings]]:
    engine = create_engine_for(request.getfixturevalue(DATABASES[request.param]))
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        folder = tmp_path / "dags"
        folder.mkdir()
        (folder / "assets.py").write_text(textwrap.dedent(SOURCE))
        settings = load_settings(
            env={}, overrides={"dags_folder": str(folder), "dags_are_paused_at_creation": False}
        )
        DagProcessor(settings=settings, session_factory=sessions, folder=folder).run_once()
        yield sessions, settings
    finally:
        engine.dispose()


def _serialized(session: Session, dag: Dag) -> SerializedDag:
    return SerializedDag.from_dict(dag.serialized)


def _queued_producer(sessions: sessionmaker[Session]) -> TaskInstance:
    with sessions() as s, s.begin():
        trigger_run(s, "producer", triggered_by="test")
    with sessions() as s, s.begin():
        schedule_pass(s, datetime.now(UTC), _serialized)
    with sessions() as s:
        ti = s.scalars(select(TaskInstance).where(TaskInstance.dag_id == "producer")).one()
    assert ti.state == "queued"
    return ti


def _success(ti: TaskInstance, extra: dict[str, int]) -> list[ResultMessage]:
    key = TaskKey(ti.id, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number)
    common = {"worker": "w", "hostname": "h", "pid": 1}
    return [
        ResultMessage(key=key, outcome="running", at=1000.0, **common),  # type: ignore[arg-type]
        ResultMessage(
            key=key,
            outcome="success",
            at=1001.0,
            started_at=1000.0,
            result_json="1",
            outlet_events=[{"uri": "warehouse://sales/orders", "extra": extra}],
            **common,  # type: ignore[arg-type]
        ),
    ]


def _count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_duplicate_and_racing_success_results_record_one_asset_event(
    metastore: tuple[sessionmaker[Session], Settings],
) -> None:
    sessions, _ = metastore
    ti = _queued_producer(sessions)
    messages = _success(ti, {"rows": 1})
    serial = sessions.kw["bind"].dialect.name == "sqlite"

    # Two consumers read the same success before either writes (a redelivered copy racing the
    # first), then a third copy arrives after both committed.
    first, second = sessions(), sessions()
    try:
        first.begin()
        batch_a = read_reports(first, messages)
        if serial:
            write_reports(first, batch_a, datetime.now(UTC))
            first.commit()
        second.begin()
        batch_b = read_reports(second, messages)
        if not serial:
            write_reports(first, batch_a, datetime.now(UTC))
            first.commit()
        write_reports(second, batch_b, datetime.now(UTC))
        second.commit()
    finally:
        first.close()
        second.close()
    with sessions() as s, s.begin():
        apply_results(s, messages, datetime.now(UTC))

    with sessions() as s:
        events = s.scalars(select(AssetEvent)).all()
        assert [(e.source_dag_id, e.source_task_id, e.source_try_number, e.extra) for e in events] == [
            ("producer", "write", 1, {"rows": 1})
        ]
        queued = s.scalars(select(AssetDagRunQueue)).all()
        assert [(q.target_dag_id, q.first_event_id, q.last_event_id) for q in queued] == [
            ("consumer", events[0].id, events[0].id)
        ]


def test_two_schedulers_create_one_consumer_run_for_one_set_of_events(
    metastore: tuple[sessionmaker[Session], Settings],
) -> None:
    sessions, settings = metastore
    ti = _queued_producer(sessions)
    with sessions() as s, s.begin():
        apply_results(s, _success(ti, {}), datetime.now(UTC))
    one = Scheduler(settings=settings, session_factory=sessions, executor=LocalExecutor())
    two = Scheduler(settings=settings, session_factory=sessions, executor=LocalExecutor())
    serial = sessions.kw["bind"].dialect.name == "sqlite"

    if not serial:
        # Scheduler one holds the consumer's row (its run not committed yet): two skips the DAG.
        held = sessions()
        try:
            held.begin()
            held.get(Dag, "consumer", with_for_update={"skip_locked": True})
            report = LoopReport()
            two.create_asset_runs(datetime.now(UTC), report)
            assert report.runs_created == 0
        finally:
            held.close()
    created = []
    for scheduler in (one, two, one, two):
        report = LoopReport()
        scheduler.create_asset_runs(datetime.now(UTC), report)
        created.append(report.runs_created)
    assert created == [1, 0, 0, 0]
    with sessions() as s:
        runs = s.scalars(select(DagRun).where(DagRun.dag_id == "consumer")).all()
        assert [(r.run_type, r.conf) for r in runs] == [("asset_triggered", {})]
    assert _count(sessions, DagRunAssetEvent) == 1
    assert _count(sessions, AssetDagRunQueue) == 0


def test_a_queue_range_spanning_an_event_already_consumed_does_not_hand_it_to_a_second_run(
    metastore: tuple[sessionmaker[Session], Settings],
) -> None:
    """Ids are given at insert and committed in any order, so a widened range can span an event a
    run already consumed (one committed late): the next run gets only the new ones."""
    from hareflow.common.assets import NewEvent, consume_if_ready, record_events

    sessions, _ = metastore
    uri = "warehouse://sales/orders"

    def consume() -> DagRun | None:
        with sessions() as s, s.begin():
            dag = s.get(Dag, "consumer")
            assert dag is not None
            schedule = SerializedDag.from_dict(dag.serialized).asset_schedule
            return consume_if_ready(s, dag, schedule, datetime.now(UTC))

    with sessions() as s, s.begin():
        (first,) = record_events(s, [NewEvent(uri=uri, extra={"n": 1})], datetime.now(UTC))
        first_id = first.id
    assert consume() is not None
    with sessions() as s, s.begin():
        (second,) = record_events(s, [NewEvent(uri=uri, extra={"n": 2})], datetime.now(UTC))
        second_id = second.id
        s.execute(update(AssetDagRunQueue).values(first_event_id=first_id))  # the widened range
    run = consume()
    assert run is not None
    with sessions() as s:
        linked = s.scalars(select(DagRunAssetEvent.event_id).where(DagRunAssetEvent.run_pk == run.id)).all()
    assert linked == [second_id]
