"""The results consumer's state application, on a real (file) SQLite metastore."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hareflow.common.db import (
    Base,
    DagRun,
    TaskInstance,
    TaskLog,
    TaskResult,
    Worker,
    create_engine_for,
    make_session_factory,
)
from hareflow.common.messages import HeartbeatMessage, LogMessage, ResultMessage, TaskKey
from hareflow.scheduler.results import apply_results
from sqlalchemy import func, select
from sqlalchemy.orm import Session

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def session(tmp_path: Path):
    engine = create_engine_for(f"sqlite:///{tmp_path / 'm.db'}")
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as s:
        with s.begin():
            run = DagRun(dag_id="d", run_id="r", run_type="manual", state="running", queued_at=NOW, conf={})
            s.add(run)
            s.flush()
            s.add(
                TaskInstance(
                    run_pk=run.id,
                    dag_id="d",
                    run_id="r",
                    task_id="t",
                    state="queued",
                    try_number=1,
                    max_tries=2,
                )
            )
        yield s
    engine.dispose()


def key(try_number: int = 1) -> TaskKey:
    return TaskKey(ti_id=1, dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=try_number)


def result(outcome: str, try_number: int = 1, at: float = 100.0, **kw: object) -> ResultMessage:
    return ResultMessage(key=key(try_number), outcome=outcome, worker="w1", hostname="h1", pid=5, at=at, **kw)  # type: ignore[arg-type]


def apply(session: Session, *messages: object) -> list:
    if session.in_transaction():  # a read by the test helpers below auto-began one
        session.commit()
    with session.begin():
        return apply_results(session, list(messages), NOW)  # type: ignore[arg-type]


def ti(session: Session) -> TaskInstance:
    session.expire_all()
    return session.get(TaskInstance, 1)  # type: ignore[return-value]


def test_running_then_success_records_the_result_and_timings(session: Session) -> None:
    events = apply(session, result("running", at=100.0), result("success", at=102.5, result_json="[1, 2]"))
    t = ti(session)
    assert (t.state, t.worker, t.hostname, t.duration) == ("success", "w1", "h1", 2.5)
    assert session.scalar(select(TaskResult.value_json)) == "[1, 2]"
    assert [e.state for e in events] == ["running", "success"]


def test_a_short_try_without_a_running_report_keeps_its_real_start_time(session: Session) -> None:
    apply(session, result("success", at=103.0, started_at=101.0))
    t = ti(session)
    assert (t.state, t.start_date, t.duration) == ("success", datetime.fromtimestamp(101.0, tz=UTC), 2.0)


def test_a_duplicate_final_result_changes_nothing(session: Session) -> None:
    apply(session, result("success", result_json="1"))
    before = ti(session).end_date
    assert (
        apply(session, result("failed", at=500.0, error="late"), result("success", at=600.0, result_json="2"))
        == []
    )
    t = ti(session)
    assert (t.state, t.end_date, t.error) == ("success", before, None)
    assert session.scalar(select(func.count()).select_from(TaskResult)) == 1


def test_a_result_for_another_try_is_ignored(session: Session) -> None:
    assert apply(session, result("success", try_number=2)) == []
    assert ti(session).state == "queued"


def test_a_failure_with_tries_left_becomes_up_for_retry_with_its_error(session: Session) -> None:
    apply(session, result("failed", error="ValueError: boom"))
    t = ti(session)
    assert (t.state, t.error) == ("up_for_retry", "ValueError: boom")


def test_log_chunks_are_stored_once_even_when_redelivered(session: Session) -> None:
    chunk = LogMessage(key=key(), seq=1, text="hello\n", at=1.0)
    apply(session, chunk, chunk)
    apply(session, chunk, LogMessage(key=key(), seq=2, text="world\n", at=2.0))
    texts = session.scalars(select(TaskLog.text).order_by(TaskLog.seq)).all()
    assert texts == ["hello\n", "world\n"]


def test_heartbeats_upsert_the_worker_and_ignore_older_beats(session: Session) -> None:
    beat = dict(worker="w1", hostname="h1", pid=5, queues=["default"], concurrency=4)
    apply(session, HeartbeatMessage(**beat, running=[1, 2], at=200.0))  # type: ignore[arg-type]
    apply(session, HeartbeatMessage(**beat, running=[], at=150.0))  # type: ignore[arg-type]
    session.expire_all()
    w = session.get(Worker, "w1")
    assert w is not None and w.running == 2 and w.last_heartbeat == datetime.fromtimestamp(200.0, tz=UTC)


def test_results_for_unknown_task_instances_are_dropped(session: Session) -> None:
    stray = ResultMessage(
        key=TaskKey(99, "d", "r", "t", -1, 1), outcome="success", worker="w", hostname="h", pid=1, at=1.0
    )
    assert apply(session, stray) == []


def test_a_result_that_cannot_be_applied_is_dead_lettered_and_the_rest_of_its_batch_is_kept(
    tmp_path: Path,
) -> None:
    from hareflow.common.broker.local import LocalExecutor
    from hareflow.common.config import load_settings
    from hareflow.scheduler.results import ResultsConsumer

    engine = create_engine_for(f"sqlite:///{tmp_path / 'r.db'}")
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    with sessions() as s, s.begin():
        run = DagRun(dag_id="d", run_id="r", run_type="manual", state="running", queued_at=NOW, conf={})
        s.add(run)
        s.flush()
        s.add(TaskInstance(run_pk=run.id, dag_id="d", run_id="r", task_id="t", state="queued", try_number=1))
    executor = LocalExecutor()
    consumer = ResultsConsumer(executor=executor, session_factory=sessions, settings=load_settings(env={}))
    consumer.start()
    poison = result("running", at=1e20)  # a timestamp no datetime can hold
    executor.publish_results([poison, result("success", at=100.0, result_json="5")])
    assert consumer.run_once(timeout=1) == 1
    assert [reason for _, reason in executor.dead_letters][0].startswith("result could not be applied")
    with sessions() as s:
        assert s.get(TaskInstance, 1).state == "success"  # type: ignore[union-attr]
    engine.dispose()


def test_a_batch_read_before_another_consumer_committed_changes_nothing_and_announces_nothing(
    session: Session,
) -> None:
    from hareflow.common import metrics
    from hareflow.scheduler.results import read_reports, write_reports

    lost = metrics.STATE_WRITES_LOST.labels("report_running")
    before = lost._value.get()
    with session.begin():
        stale = read_reports(session, [result("running", at=100.0)])  # sees the try queued
    apply(session, result("success", at=102.0, result_json="7"))  # another consumer commits first
    with session.begin():
        assert write_reports(session, stale, NOW) == []
    t = ti(session)
    assert (t.state, t.end_date) == ("success", datetime.fromtimestamp(102.0, tz=UTC))
    assert lost._value.get() == before + 1


def test_a_stale_success_does_not_store_a_second_result_for_the_try(session: Session) -> None:
    from hareflow.scheduler.results import read_reports, write_reports

    with session.begin():
        stale = read_reports(session, [result("success", at=101.0, result_json="1")])
    apply(session, result("success", at=102.0, result_json="2"))
    with session.begin():
        assert write_reports(session, stale, NOW) == []
    assert session.scalars(select(TaskResult.value_json)).all() == ["2"]


def test_a_reschedule_keeps_the_try_counts_the_delivery_and_a_late_report_of_it_changes_nothing(
    session: Session,
) -> None:
    events = apply(
        session,
        result("running", at=100.0),
        result("up_for_reschedule", at=101.0, reschedule_at=131.0, first_poke_at=100.5),
    )
    t = ti(session)
    assert (t.state, t.try_number, t.reschedules) == ("up_for_reschedule", 1, 1)
    assert t.next_retry_at == datetime.fromtimestamp(131.0, tz=UTC)
    assert t.first_poke_at == datetime.fromtimestamp(100.5, tz=UTC)
    assert [e.state for e in events] == ["running", "up_for_reschedule"]
    session.commit()
    with session.begin():  # the scheduler dispatches the next poke: same try, delivery 1
        session.get(TaskInstance, 1).state = "queued"  # type: ignore[union-attr]
    assert apply(session, result("success", at=140.0, result_json="1")) == []  # delivery 0, late
    assert ti(session).state == "queued"
    apply(
        session,
        result("up_for_reschedule", at=150.0, reschedule_at=180.0, first_poke_at=149.0, reschedules=1),
    )
    t = ti(session)
    assert (t.state, t.reschedules) == ("up_for_reschedule", 2)
    assert t.first_poke_at == datetime.fromtimestamp(100.5, tz=UTC)  # the first poke's, kept


def test_a_log_chunk_is_dated_by_when_its_worker_sent_it_unless_that_clock_is_far_off() -> None:
    from hareflow.scheduler.results import _sent_at

    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    sent = now.timestamp() - 2.5  # the chunk waited in the results queue

    assert _sent_at(sent, now) == now - timedelta(seconds=2.5)
    assert _sent_at(now.timestamp() - 7200, now) == now  # a clock two hours off
    assert _sent_at(float("nan"), now) == now and _sent_at(1e20, now) == now
