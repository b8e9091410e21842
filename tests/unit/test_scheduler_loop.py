"""One scheduler iteration at a time, with the clock passed in: no sleeps, no broker."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.config import load_settings
from hareflow.common.db import (
    Base,
    Dag,
    DagRun,
    TaskInstance,
    Worker,
    create_engine_for,
    make_session_factory,
)
from hareflow.common.messages import TaskMessage
from hareflow.scheduler.dag_processor import DagProcessor
from hareflow.scheduler.loop import LoopReport, Scheduler
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


class CapturingExecutor(LocalExecutor):
    """The local executor, keeping what the scheduler publishes instead of queueing it."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[TaskMessage] = []

    def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        self.published.extend(messages)


class Harness:
    def __init__(self, tmp_path: Path, **overrides: object) -> None:
        self.folder = tmp_path / "dags"
        self.folder.mkdir()
        self.settings = load_settings(
            env={},
            overrides={
                "dags_folder": str(self.folder),
                "dags_are_paused_at_creation": False,
                **overrides,
            },
        )
        self.engine = create_engine_for(f"sqlite:///{tmp_path / 'm.db'}")
        Base.metadata.create_all(self.engine)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.executor = CapturingExecutor()
        self.published = self.executor.published
        self.scheduler = Scheduler(
            settings=self.settings, session_factory=self.sessions, executor=self.executor
        )

    def dag_file(self, name: str, source: str) -> None:
        (self.folder / name).write_text(textwrap.dedent(source))
        DagProcessor(settings=self.settings, session_factory=self.sessions, folder=self.folder).run_once(NOW)

    def runs(self, dag_id: str) -> list[DagRun]:
        with self.sessions() as s:
            return list(
                s.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date))
            )

    def tis(self) -> dict[str, TaskInstance]:
        with self.sessions() as s:
            return {ti.task_id: ti for ti in s.scalars(select(TaskInstance))}

    def close(self) -> None:
        self.executor.close()
        self.engine.dispose()


@pytest.fixture
def harness(tmp_path: Path):
    h = Harness(tmp_path)
    yield h
    h.close()


DAILY = """
    from datetime import datetime
    from hareflow import DAG, task
    with DAG("daily", schedule="@daily", start_date=datetime(2026, 1, 1), catchup={catchup},
             max_active_runs={max_runs}):
        @task
        def only():
            return 1
        only()
"""


def test_catch_up_creates_one_run_per_finished_interval_and_never_twice(harness: Harness) -> None:
    harness.dag_file("daily.py", DAILY.format(catchup=True, max_runs=16))
    for _ in range(3):
        harness.scheduler.run_once(NOW)
    runs = harness.runs("daily")
    assert [r.logical_date.day for r in runs] == [1, 2, 3, 4]  # type: ignore[union-attr]
    assert all(r.data_interval_end - r.data_interval_start == timedelta(days=1) for r in runs)  # type: ignore[operator]


def test_without_catch_up_only_the_latest_interval_runs(harness: Harness) -> None:
    harness.dag_file("daily.py", DAILY.format(catchup=False, max_runs=16))
    harness.scheduler.run_once(NOW)
    assert [r.logical_date.day for r in harness.runs("daily")] == [4]  # type: ignore[union-attr]


def test_max_active_runs_holds_back_run_creation_and_starts(harness: Harness) -> None:
    harness.dag_file("daily.py", DAILY.format(catchup=True, max_runs=1))
    harness.scheduler.run_once(NOW)
    harness.scheduler.run_once(NOW)
    runs = harness.runs("daily")
    assert [(r.logical_date.day, r.state) for r in runs] == [(1, "running")]  # type: ignore[union-attr]
    assert len(harness.published) == 1


def test_a_chain_dispatches_only_ready_tasks_with_their_upstream_results(harness: Harness) -> None:
    harness.dag_file(
        "chain.py",
        """
        from datetime import datetime
        from hareflow import DAG, task
        with DAG("chain", start_date=datetime(2026, 1, 1)):
            @task
            def a():
                return [1, 2]
            @task
            def b(rows):
                return sum(rows)
            b(a())
        """,
    )
    from hareflow.common.runs import trigger_run

    with harness.sessions() as s, s.begin():
        trigger_run(s, "chain", now=NOW)
    report = harness.scheduler.run_once(NOW)
    assert (report.dispatched, [m.key.task_id for m in harness.published]) == (1, ["a"])
    first = harness.published[0]
    assert first.key.try_number == 1 and first.upstream_results == {}
    # the worker's success for "a", recorded as the results consumer would
    from hareflow.common.messages import ResultMessage
    from hareflow.scheduler.results import apply_results

    with harness.sessions() as s, s.begin():
        apply_results(
            s,
            [
                ResultMessage(
                    key=first.key,
                    outcome="success",
                    worker="w",
                    hostname="h",
                    pid=1,
                    at=NOW.timestamp(),
                    result_json="[1, 2]",
                )
            ],
            NOW,
        )
    harness.scheduler.run_once(NOW)
    second = harness.published[1]
    assert (second.key.task_id, second.upstream_results) == ("b", {"a": [1, 2]})


def _one_task_running_on(
    harness: Harness, worker: str, at: datetime, *, retries: int = 0, scheduler: Scheduler | None = None
) -> None:
    """DAG "one" (one task, ``retries``) triggered and dispatched at ``at`` by ``scheduler`` (default
    the harness's), its task running on ``worker``, whose last heartbeat is ``at``."""
    harness.dag_file(
        "one.py",
        f"""
        from datetime import datetime
        from hareflow import DAG, task
        with DAG("one", start_date=datetime(2026, 1, 1), default_args={{"retries": {retries}}}):
            @task
            def work():
                return 1
            work()
        """,
    )
    from hareflow.common.runs import trigger_run

    with harness.sessions() as s, s.begin():
        trigger_run(s, "one", now=at)
    (scheduler or harness.scheduler).run_once(at)
    number = worker.lstrip("w")
    with harness.sessions() as s, s.begin():
        s.add(
            Worker(
                name=worker,
                hostname=f"h{number}",
                pid=int(number),
                queues=["default"],
                concurrency=1,
                first_seen=at,
                last_heartbeat=at,
                state="active",
            )
        )
        ti = s.scalars(select(TaskInstance)).one()
        ti.state, ti.worker = "running", worker


def test_a_worker_that_stops_heartbeating_has_its_tasks_retried(harness: Harness) -> None:
    _one_task_running_on(harness, "w9", NOW, retries=1)
    quiet = NOW + timedelta(seconds=harness.settings.worker_timeout - 1)
    assert harness.scheduler.run_once(quiet).lost_workers == 0
    later = NOW + timedelta(seconds=harness.settings.worker_timeout + 1)
    report: LoopReport = harness.scheduler.run_once(later)
    assert report.lost_workers == 1
    ti = harness.tis()["work"]
    assert ti.state == "up_for_retry" and "w9 on h9 was lost" in (ti.error or "")
    with harness.sessions() as s:
        assert s.get(Worker, "w9").state == "lost"  # type: ignore[union-attr]


def test_workers_stopped_or_lost_past_the_retention_are_pruned_hourly(tmp_path: Path) -> None:
    h = Harness(tmp_path, worker_retention_days=2)
    try:
        with h.sessions() as s, s.begin():
            for name, state, age in [
                ("gone", "stopped", timedelta(days=3)),
                ("lost-long-ago", "lost", timedelta(days=2, hours=1)),
                ("recent", "stopped", timedelta(days=1)),
                ("quiet", "active", timedelta(days=5)),  # silent, not yet judged lost: kept
            ]:
                s.add(
                    Worker(
                        name=name,
                        hostname="h",
                        pid=1,
                        queues=["default"],
                        concurrency=1,
                        first_seen=NOW - age,
                        last_heartbeat=NOW - age,
                        state=state,
                    )
                )
        h.scheduler.prune_workers(NOW)
        with h.sessions() as s:
            assert sorted(s.scalars(select(Worker.name))) == ["quiet", "recent"]
            s.add(
                Worker(
                    name="gone2",
                    hostname="h",
                    pid=1,
                    queues=[],
                    concurrency=1,
                    first_seen=NOW - timedelta(days=9),
                    last_heartbeat=NOW - timedelta(days=9),
                    state="stopped",
                )
            )
            s.commit()
        h.scheduler.prune_workers(NOW + timedelta(minutes=30))  # once an hour
        with h.sessions() as s:
            assert s.get(Worker, "gone2") is not None
        h.scheduler.prune_workers(NOW + timedelta(hours=1))
        with h.sessions() as s:
            assert s.get(Worker, "gone2") is None
    finally:
        h.close()


def test_a_retention_of_zero_keeps_every_worker(tmp_path: Path) -> None:
    h = Harness(tmp_path, worker_retention_days=0)
    try:
        with h.sessions() as s, s.begin():
            s.add(
                Worker(
                    name="ancient",
                    hostname="h",
                    pid=1,
                    queues=[],
                    concurrency=1,
                    first_seen=NOW - timedelta(days=900),
                    last_heartbeat=NOW - timedelta(days=900),
                    state="stopped",
                )
            )
        h.scheduler.prune_workers(NOW)
        with h.sessions() as s:
            assert s.get(Worker, "ancient") is not None
    finally:
        h.close()


ONE_TASK = """
    from datetime import datetime
    from hareflow import DAG, task
    with DAG("one", start_date=datetime(2026, 1, 1)):
        @task
        def work():
            return 1
        work()
"""


class DurableCapturingExecutor(CapturingExecutor):
    """Captures like its parent, and vouches for what it confirmed as a broker does."""

    durable = True


class DyingExecutor(DurableCapturingExecutor):
    """An executor whose process dies while publishing: nothing reaches the broker, and the error
    is not one the scheduler retries (it never learns that the publish failed)."""

    def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        raise SystemError("the scheduler process died while publishing")


def _trigger_one(h: Harness) -> None:
    from hareflow.common.runs import trigger_run

    h.dag_file("one.py", ONE_TASK)
    with h.sessions() as s, s.begin():
        trigger_run(s, "one", now=NOW)


def _scheduler(h: Harness, executor: CapturingExecutor) -> Scheduler:
    return Scheduler(settings=h.settings, session_factory=h.sessions, executor=executor)


def test_a_confirmed_task_is_never_republished_however_long_it_waits(tmp_path: Path) -> None:
    h = Harness(tmp_path, queued_timeout=30.0)
    try:
        _trigger_one(h)
        h.scheduler.run_once(NOW)
        assert len(h.published) == 1
        assert h.tis()["work"].confirmed_at == NOW
        for later in (31, 600, 3600 * 24):
            assert h.scheduler.run_once(NOW + timedelta(seconds=later)).republished == 0
        # Another scheduler (a restart) agrees: the message is in a durable queue.
        other = _scheduler(h, DurableCapturingExecutor())
        assert other.run_once(NOW + timedelta(days=2)).republished == 0
        assert len(h.published) == 1 and other._executor.published == []  # type: ignore[attr-defined]
    finally:
        h.close()


def test_a_task_left_unpublished_by_a_dead_scheduler_is_republished_once_after_queued_timeout(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, queued_timeout=30.0)
    try:
        _trigger_one(h)
        dying = _scheduler(h, DyingExecutor())
        with pytest.raises(SystemError):
            dying.run_once(NOW)  # committed as queued, never published, never marked
        ti = h.tis()["work"]
        assert ti.state == "queued" and ti.confirmed_at is None
        survivor = _scheduler(h, DurableCapturingExecutor())
        published = survivor._executor.published  # type: ignore[attr-defined]
        assert survivor.run_once(NOW + timedelta(seconds=29)).republished == 0
        assert survivor.run_once(NOW + timedelta(seconds=31)).republished == 1
        assert [m.key.try_number for m in published] == [1]
        assert h.tis()["work"].confirmed_at == NOW + timedelta(seconds=31)
        # Re-published and confirmed: never again.
        assert survivor.run_once(NOW + timedelta(seconds=120)).republished == 0
        assert len(published) == 1
    finally:
        h.close()


def test_a_publish_the_broker_refused_is_retried_at_once_and_then_marked(tmp_path: Path) -> None:
    from hareflow.common.broker import BrokerUnavailable

    class Flaky(DurableCapturingExecutor):
        failures = 2  # the pass's publish, and the retry in the same iteration

        def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
            if self.failures:
                self.failures -= 1
                raise BrokerUnavailable("connection reset")
            super().publish_tasks(messages)

    h = Harness(tmp_path, queued_timeout=3600.0)
    try:
        _trigger_one(h)
        scheduler = _scheduler(h, Flaky())
        scheduler.run_once(NOW)
        assert h.tis()["work"].confirmed_at is None
        assert scheduler.run_once(NOW + timedelta(seconds=1)).republished == 1  # not an hour later
        assert h.tis()["work"].confirmed_at == NOW + timedelta(seconds=1)
        assert scheduler.run_once(NOW + timedelta(hours=2)).republished == 0
    finally:
        h.close()


def test_of_two_schedulers_claiming_the_same_unconfirmed_task_only_one_wins(harness: Harness) -> None:
    from hareflow.scheduler.dispatch import claim_for_republish

    _trigger_one(harness)
    with pytest.raises(SystemError):
        _scheduler(harness, DyingExecutor()).run_once(NOW)
    ti = harness.tis()["work"]
    seen = [(ti.id, ti.queued_at)]  # what both schedulers read
    later = NOW + timedelta(minutes=10)
    with harness.sessions() as s, s.begin():
        assert claim_for_republish(s, seen, later) == [ti.id]
    with harness.sessions() as s, s.begin():
        assert claim_for_republish(s, seen, later + timedelta(seconds=1)) == []
    assert harness.tis()["work"].queued_at == later
    # A confirmed row cannot be claimed at all.
    with harness.sessions() as s, s.begin():
        s.get(TaskInstance, ti.id).confirmed_at = later  # type: ignore[union-attr]
    with harness.sessions() as s, s.begin():
        assert claim_for_republish(s, [(ti.id, later)], later + timedelta(seconds=2)) == []


def test_two_schedulers_re_publish_a_task_a_dead_one_left_exactly_once(harness: Harness) -> None:
    _trigger_one(harness)
    with pytest.raises(SystemError):
        _scheduler(harness, DyingExecutor()).run_once(NOW)
    first, second = (
        _scheduler(harness, DurableCapturingExecutor()),
        _scheduler(harness, DurableCapturingExecutor()),
    )
    later = NOW + timedelta(seconds=harness.settings.queued_timeout + 1)
    reports = [first.run_once(later), second.run_once(later), first.run_once(later + timedelta(hours=1))]
    assert [r.republished for r in reports] == [1, 0, 0]


def test_a_new_try_starts_unconfirmed(harness: Harness) -> None:
    from hareflow.scheduler.dispatch import mark_confirmed

    _trigger_one(harness)
    harness.scheduler.run_once(NOW)
    ti = harness.tis()["work"]
    with harness.sessions() as s, s.begin():
        row = s.get(TaskInstance, ti.id)
        row.state, row.max_tries = "scheduled", 2  # type: ignore[union-attr]  # its retry is due
    harness.scheduler.run_once(NOW + timedelta(minutes=5))
    ti = harness.tis()["work"]
    assert (ti.state, ti.try_number) == ("queued", 2) and ti.confirmed_at == NOW + timedelta(minutes=5)
    # A late mark for the first try (its queued_at) does not mark the second.
    with harness.sessions() as s, s.begin():
        s.get(TaskInstance, ti.id).confirmed_at = None  # type: ignore[union-attr]
        assert mark_confirmed(s, [ti.id], NOW, NOW + timedelta(minutes=6)) == 0


def test_with_the_local_executor_a_new_process_republishes_what_an_earlier_one_left_queued(
    harness: Harness,
) -> None:
    _trigger_one(harness)
    harness.scheduler.run_once(NOW)  # confirmed into an in-process queue
    assert harness.tis()["work"].confirmed_at is not None
    restarted = _scheduler(harness, CapturingExecutor())  # not durable: that queue is gone
    assert restarted.run_once(NOW + timedelta(seconds=1)).republished == 1
    assert [m.key.try_number for m in restarted._executor.published] == [1]  # type: ignore[attr-defined]
    assert restarted.run_once(NOW + timedelta(hours=1)).republished == 0


def test_a_task_in_a_pool_that_does_not_exist_fails_with_a_clear_error(harness: Harness) -> None:
    harness.dag_file(
        "pooled.py",
        """
        from datetime import datetime
        from hareflow import DAG, task
        with DAG("pooled", start_date=datetime(2026, 1, 1)):
            @task(pool="warehouse")
            def work():
                return 1
            work()
        """,
    )
    from hareflow.common.runs import trigger_run

    with harness.sessions() as s, s.begin():
        trigger_run(s, "pooled", now=NOW)
    harness.scheduler.run_once(NOW)
    ti = harness.tis()["work"]
    assert ti.state == "failed" and "pool 'warehouse' does not exist" in (ti.error or "")
    assert harness.published == []


def test_paused_dags_get_no_new_runs(harness: Harness) -> None:
    harness.dag_file("daily.py", DAILY.format(catchup=True, max_runs=16))
    with harness.sessions() as s, s.begin():
        s.get(Dag, "daily").is_paused = True  # type: ignore[union-attr]
    harness.scheduler.run_once(NOW)
    assert harness.runs("daily") == []


def test_an_event_heard_in_process_does_not_wake_the_scheduler_again_when_broadcast(harness: Harness) -> None:
    from hareflow.common.messages import StateEvent

    def event(ti_id: int) -> StateEvent:
        return StateEvent(
            kind="task", dag_id="d", run_id="r", task_id=f"t{ti_id}", state="success", at=1.5, ti_id=ti_id
        )

    scheduler = harness.scheduler
    scheduler.on_events([event(1)])  # from the results consumer in this process
    assert scheduler._wake.is_set() and scheduler._take_changed() == {1}
    scheduler._wake.clear()
    scheduler.on_broadcast([event(1)])  # the same event, back from the events exchange
    assert not scheduler._wake.is_set() and scheduler._take_changed() == set()
    scheduler.on_broadcast([event(1), event(2)])  # another process's result, and a repeat
    assert scheduler._wake.is_set() and scheduler._take_changed() == {1, 2}
    # Events that arrived only by broadcast are not remembered: no copy of them will come back.
    assert scheduler._heard == {}


def test_after_a_restart_a_worker_is_judged_only_on_a_silence_the_scheduler_watched(harness: Harness) -> None:
    """Heartbeats sent while the control plane was down wait in the results queue: a scheduler that
    just started (or whose metastore just came back) must not take their worker for lost."""
    before_outage = NOW - timedelta(minutes=5)
    previous = Scheduler(
        settings=harness.settings, session_factory=harness.sessions, executor=harness.executor
    )
    _one_task_running_on(harness, "w7", before_outage, scheduler=previous)
    timeout = harness.settings.worker_timeout
    # The restarted scheduler's first passes: the heartbeat row is five minutes old.
    assert harness.scheduler.run_once(NOW).lost_workers == 0
    assert harness.scheduler.run_once(NOW + timedelta(seconds=timeout - 1)).lost_workers == 0
    assert harness.tis()["work"].state == "running"
    # The backlog drains: the worker's latest heartbeat lands, and it is alive after all.
    with harness.sessions() as s, s.begin():
        s.get(Worker, "w7").last_heartbeat = NOW + timedelta(seconds=2)  # type: ignore[union-attr]
    assert harness.scheduler.run_once(NOW + timedelta(seconds=timeout + 1)).lost_workers == 0
    # A silence watched for worker_timeout is a lost worker, as before.
    assert harness.scheduler.run_once(NOW + timedelta(seconds=timeout + 3)).lost_workers == 1


def test_a_file_whose_parse_crashes_keeps_its_source_and_one_import_error(harness: Harness) -> None:
    """The parse child sends no source when it dies; the processor reads the file's text itself, so
    the file has a source row (the lock that makes schedulers store one file in turn) and the web
    can show what failed."""
    from hareflow.common.db import DagCode, ImportError_

    source = "import os\nfrom hareflow import DAG\nos._exit(3)\n"
    for _ in range(2):  # parsed again: the error is replaced, not added
        (harness.folder / "crash.py").write_text(source + f"# {_}\n")
        DagProcessor(settings=harness.settings, session_factory=harness.sessions).run_once(NOW)
    with harness.sessions() as s:
        codes = s.scalars(select(DagCode)).all()
        errors = s.scalars(select(ImportError_)).all()
    assert [c.source for c in codes] == [source + "# 1\n"]
    assert len(errors) == 1 and "exited with code 3" in errors[0].message
