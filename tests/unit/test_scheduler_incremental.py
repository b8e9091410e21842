"""The incremental scheduling pass stops early only when a full pass would decide nothing."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from hareflow.common.db import TaskInstance
from hareflow.common.runs import trigger_run
from hareflow.scheduler.scheduling import PassResult, RowCache, schedule_pass
from sqlalchemy import select, update

from tests.unit.test_scheduler_loop import NOW, Harness

# A fan-out with a fan-in for every trigger rule, a retried task and a chain behind the fan-in.
SHAPES = """
    from datetime import datetime
    from hareflow import DAG, task

    @task
    def noop():
        return 1

    with DAG("shapes", start_date=datetime(2026, 1, 1), max_active_tasks=3):
        start = noop.override(task_id="start")()
        flaky = noop.override(task_id="flaky", retries=2, retry_delay=30)()
        middles = [noop.override(task_id=f"m{i}")() for i in range(4)]
        rules = ("all_success", "all_done", "one_success", "one_failed", "none_failed", "all_failed")
        fan_ins = [noop.override(task_id=f"in_{rule}", trigger_rule=rule)() for rule in rules]
        last = noop.override(task_id="last")()
        start >> flaky
        for m in middles:
            start >> m
            for fan_in in fan_ins:
                m >> fan_in
        fan_ins[0] >> last
"""

STATES = ["none", "queued", "running", "success", "failed", "up_for_retry", "skipped", "upstream_failed"]


@pytest.fixture
def harness(tmp_path: Path):
    h = Harness(tmp_path)
    yield h
    h.close()


def _decided(result: PassResult) -> tuple[int, int, int]:
    return len(result.messages), len(result.events), result.runs_finished


def _pass(harness: Harness, *, cache: RowCache | None, changed: set[int] | None, commit: bool) -> PassResult:
    with harness.sessions() as session:
        session.begin()
        result = schedule_pass(session, NOW, harness.scheduler._serialized_dag, cache=cache, changed=changed)
        if commit:
            session.commit()
        else:
            session.rollback()
    return result


def _db_rows(harness: Harness) -> dict[int, tuple[str, int, object]]:
    with harness.sessions() as s:
        return {ti.id: (ti.state, ti.try_number, ti.next_retry_at) for ti in s.scalars(select(TaskInstance))}


@pytest.mark.parametrize("seed", range(12))
def test_an_incremental_pass_stops_early_only_when_a_full_pass_decides_nothing(
    harness: Harness, seed: int
) -> None:
    rng = random.Random(seed)
    harness.dag_file("shapes.py", SHAPES)
    with harness.sessions() as s, s.begin():
        trigger_run(s, "shapes", now=NOW)
    cache = RowCache()
    _pass(harness, cache=cache, changed=None, commit=True)  # starts the run, creates its tasks
    ids = list(_db_rows(harness))
    early = full = 0
    for _ in range(40):
        # Someone else (the results consumer, an operator) changes a few task instances and
        # names them in state events; now and then the change is announced twice or not at all.
        changed: set[int] = set()
        for ti_id in rng.sample(ids, rng.randint(0, 3)):
            state = rng.choice(STATES)
            values: dict[str, object] = {"state": state, "updated_at": NOW}
            if state == "up_for_retry":
                values["next_retry_at"] = NOW + timedelta(seconds=rng.choice([-5, 30]))
                values["end_date"] = NOW
            with harness.sessions() as s, s.begin():
                s.execute(update(TaskInstance).where(TaskInstance.id == ti_id).values(**values))
            changed.add(ti_id)
        # What a full pass would decide on the same rows (rolled back: it only looks).
        expected = _pass(harness, cache=None, changed=None, commit=False)
        result = _pass(harness, cache=cache, changed=changed, commit=True)
        if result.incremental:
            early += 1
            assert _decided(expected) == (0, 0, 0)
            assert _decided(result) == (0, 0, 0)
        else:
            full += 1
            assert _decided(result) == _decided(expected)
        # The cache holds the metastore's rows, or nothing for a run it cannot vouch for.
        db = _db_rows(harness)
        for _, rows in cache.runs.values():
            for ti_id, row in rows.items():
                assert (row.state, row.try_number, row.next_retry_at) == db[ti_id]
    assert full > 0 and early > 0, (full, early)


WIDE = """
    from datetime import datetime
    from hareflow import DAG, task

    @task
    def noop():
        return 1

    with DAG("wide", start_date=datetime(2026, 1, 1), max_active_tasks=100):
        middles = [noop.override(task_id=f"m{i}")() for i in range(20)]
        end = noop.override(task_id="end")()
        for m in middles:
            m >> end
"""


def test_a_fan_in_waiting_for_its_tasks_is_checked_on_the_changed_rows_only(harness: Harness) -> None:
    harness.dag_file("wide.py", WIDE)
    with harness.sessions() as s, s.begin():
        trigger_run(s, "wide", now=NOW)
    cache = RowCache()
    assert len(_pass(harness, cache=cache, changed=set(), commit=True).messages) == 20
    assert not cache.runs  # that pass wrote: nothing cached
    # The next pass reads everything, decides nothing and fills the cache.
    assert not _pass(harness, cache=cache, changed=set(), commit=True).incremental
    ids = {task_id: ti_id for ti_id, task_id in _task_ids(harness)}
    for i in range(19):
        _set(harness, ids[f"m{i}"], "success")
        assert _pass(harness, cache=cache, changed={ids[f"m{i}"]}, commit=True).incremental
    _set(harness, ids["m19"], "success")
    result = _pass(harness, cache=cache, changed={ids["m19"]}, commit=True)
    assert (result.incremental, [m.key.task_id for m in result.messages]) == (False, ["end"])


def test_a_change_nobody_announced_is_read_by_the_next_full_pass(harness: Harness) -> None:
    harness.dag_file("wide.py", WIDE)
    with harness.sessions() as s, s.begin():
        trigger_run(s, "wide", now=NOW)
    cache = RowCache()
    _pass(harness, cache=cache, changed=set(), commit=True)
    _pass(harness, cache=cache, changed=set(), commit=True)
    with harness.sessions() as s, s.begin():
        s.execute(update(TaskInstance).where(TaskInstance.task_id.like("m%")).values(state="success"))
    # Unannounced, the incremental check cannot see it; the timer's full pass does.
    assert _pass(harness, cache=cache, changed=set(), commit=True).incremental
    result = _pass(harness, cache=cache, changed=None, commit=True)
    assert [m.key.task_id for m in result.messages] == ["end"]


def _task_ids(harness: Harness) -> list[tuple[int, str]]:
    with harness.sessions() as s:
        return [(i, t) for i, t in s.execute(select(TaskInstance.id, TaskInstance.task_id)).tuples()]


def _set(harness: Harness, ti_id: int, state: str) -> None:
    with harness.sessions() as s, s.begin():
        s.execute(update(TaskInstance).where(TaskInstance.id == ti_id).values(state=state))
