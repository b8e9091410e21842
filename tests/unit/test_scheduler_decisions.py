from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hareflow.common.states import RunState
from hareflow.scheduler.decisions import (
    Candidate,
    Occupant,
    TIView,
    evaluate_run,
    retry_time,
    run_outcome,
    select_dispatch,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class T:
    task_id: str
    upstream: tuple[str, ...] = ()
    trigger_rule: str = "all_success"
    retry_delay: float = 10.0
    retry_exponential_backoff: bool = False
    max_retry_delay: float | None = None


CHAIN = [T("a"), T("b", ("a",)), T("c", ("b",))]


def views(**states: str) -> dict[str, TIView]:
    return {k: TIView(v) for k, v in states.items()}


@pytest.mark.parametrize(
    ("states", "schedule", "upstream_failed", "skip", "run_state"),
    [
        ({"a": "none", "b": "none", "c": "none"}, ["a"], [], [], None),
        ({"a": "success", "b": "none", "c": "none"}, ["b"], [], [], None),
        ({"a": "running", "b": "none", "c": "none"}, [], [], [], None),
        # a failure cascades down the whole chain in one evaluation
        ({"a": "failed", "b": "none", "c": "none"}, [], ["b", "c"], [], RunState.FAILED),
        ({"a": "skipped", "b": "none", "c": "none"}, [], [], ["b", "c"], RunState.SUCCESS),
        ({"a": "success", "b": "success", "c": "success"}, [], [], [], RunState.SUCCESS),
    ],
)
def test_a_chain_advances_one_step_at_a_time(
    states: dict[str, str],
    schedule: list[str],
    upstream_failed: list[str],
    skip: list[str],
    run_state: RunState | None,
) -> None:
    d = evaluate_run(CHAIN, views(**states), NOW)
    assert (d.schedule, d.upstream_failed, d.skip, d.run_state) == (
        schedule,
        upstream_failed,
        skip,
        run_state,
    )


def test_a_cleanup_leaf_with_all_done_decides_the_run_like_airflow() -> None:
    tasks = [T("work"), T("cleanup", ("work",), trigger_rule="all_done")]
    d = evaluate_run(tasks, views(work="failed", cleanup="none"), NOW)
    assert d.schedule == ["cleanup"]
    assert run_outcome(tasks, {"work": "failed", "cleanup": "success"}) is RunState.SUCCESS
    assert run_outcome(tasks, {"work": "failed", "cleanup": "failed"}) is RunState.FAILED


def test_a_retry_waits_for_its_delay_then_is_scheduled() -> None:
    ended = NOW - timedelta(seconds=5)
    tasks = [T("a", retry_delay=10.0)]
    waiting = evaluate_run(tasks, {"a": TIView("up_for_retry", 1, ended)}, NOW)
    assert waiting.schedule == [] and waiting.retry_at == {"a": ended + timedelta(seconds=10)}
    assert waiting.run_state is None
    due = evaluate_run(tasks, {"a": TIView("up_for_retry", 1, ended)}, NOW + timedelta(seconds=6))
    assert due.schedule == ["a"]


def test_exponential_backoff_grows_with_the_try_number_up_to_the_cap() -> None:
    task = T("a", retry_delay=2.0, retry_exponential_backoff=True, max_retry_delay=10.0)
    delays = [
        (retry_time(task, TIView("up_for_retry", n, NOW), NOW) - NOW).total_seconds() for n in (1, 2, 3, 4)
    ]
    assert delays == [2.0, 4.0, 8.0, 10.0]


def cand(ti_id: int, dag: str = "d", priority: int = 1, pool: str | None = None, slots: int = 1) -> Candidate:
    return Candidate(
        ti_id=ti_id, dag_id=dag, priority=priority, order=(0, ti_id), pool=pool, pool_slots=slots
    )


def test_dispatch_takes_highest_priority_first_within_max_active_tasks() -> None:
    chosen = select_dispatch(
        [cand(1, priority=1), cand(2, priority=5), cand(3, priority=3)],
        [Occupant("d", None, 1, "running")],
        max_active_tasks={"d": 3},
        pool_slots={},
    )
    assert [c.ti_id for c in chosen] == [2, 3]


def test_dispatch_respects_pool_slots_across_dags() -> None:
    chosen = select_dispatch(
        [
            cand(1, "x", pool="db", slots=1),
            cand(2, "y", pool="db", slots=1),
            cand(3, "y", pool="db", slots=2),
        ],
        [Occupant("z", "db", 1, "queued")],
        max_active_tasks={"x": 16, "y": 16},
        pool_slots={"db": 2},
    )
    assert [c.ti_id for c in chosen] == [1]


def test_dispatch_ignores_finished_occupants_and_unknown_pools() -> None:
    chosen = select_dispatch(
        [cand(1, pool="missing"), cand(2)],
        [Occupant("d", None, 1, "success")] * 5,
        max_active_tasks={"d": 1},
        pool_slots={},
    )
    assert [c.ti_id for c in chosen] == [2]
