"""Expansion of mapped tasks by the scheduler, one iteration at a time: instances, their elements in
the task messages, the results list downstream, zero-length and over-long expansions, retries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import DagRun, TaskInstance
from hareflow.common.messages import ResultMessage, TaskMessage, decode
from hareflow.common.runs import trigger_run
from hareflow.scheduler.decisions import TIView, evaluate_run, run_outcome
from hareflow.scheduler.expansion import Revision, revision
from hareflow.scheduler.results import apply_results
from prometheus_client import REGISTRY
from sqlalchemy import select

from tests.unit.test_scheduler_loop import NOW, Harness

HEAD = """
from datetime import datetime
from hareflow import DAG, task
"""


@pytest.fixture
def harness(tmp_path: Path):
    h = Harness(tmp_path)
    yield h
    h.close()


def _start(harness: Harness, body: str, dag_id: str = "m") -> None:
    harness.dag_file("m.py", HEAD + body)
    with harness.sessions() as s, s.begin():
        trigger_run(s, dag_id, now=NOW)
    harness.scheduler.run_once(NOW)


def _report(harness: Harness, message: TaskMessage, outcome: str, value: Any = None) -> None:
    result = ResultMessage(
        key=message.key,
        outcome=outcome,
        worker="w",
        hostname="h",
        pid=1,
        at=NOW.timestamp(),
        result_json=json.dumps(value) if outcome == "success" else None,
        error="boom" if outcome == "failed" else None,
    )
    with harness.sessions() as s, s.begin():
        apply_results(s, [result], NOW)


def _instances(harness: Harness, task_id: str) -> list[TaskInstance]:
    with harness.sessions() as s:
        return list(
            s.scalars(
                select(TaskInstance).where(TaskInstance.task_id == task_id).order_by(TaskInstance.map_index)
            )
        )


def _published(harness: Harness, task_id: str) -> list[TaskMessage]:
    return sorted((m for m in harness.published if m.key.task_id == task_id), key=lambda m: m.key.map_index)


def _run_state(harness: Harness) -> str:
    with harness.sessions() as s:
        return s.scalars(select(DagRun.state)).one()


def _counter(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_literal_expansion_replaces_the_placeholder_and_sends_each_instance_its_element(
    harness: Harness,
) -> None:
    created = _counter("hareflow_scheduler_mapped_instances_created_total")
    expanded = _counter("hareflow_scheduler_mapped_expansions_total", {"outcome": "expanded"})
    _start(
        harness,
        """
with DAG("m", start_date=datetime(2026, 1, 1)):
    @task
    def add(x, y):
        return x + y
    add.partial(y=10).expand(x=[1, 2, 3])
""",
    )
    tis = _instances(harness, "add")
    assert [ti.map_index for ti in tis] == [0, 1, 2]
    assert {ti.state for ti in tis} == {"queued"}
    messages = _published(harness, "add")
    assert [(m.key.map_index, m.expand_args) for m in messages] == [
        (0, {"x": 1}),
        (1, {"x": 2}),
        (2, {"x": 3}),
    ]
    assert all(m.upstream_results == {} for m in messages)
    wire = decode(messages[0].encode())
    assert isinstance(wire, TaskMessage) and wire.expand_args == {"x": 1}
    assert json.loads(messages[0].encode())["v"] == 2
    assert _counter("hareflow_scheduler_mapped_instances_created_total") == created + 3
    assert _counter("hareflow_scheduler_mapped_expansions_total", {"outcome": "expanded"}) == expanded + 1


def test_an_upstream_output_is_expanded_and_the_downstream_gets_the_results_in_map_index_order(
    harness: Harness,
) -> None:
    _start(
        harness,
        """
with DAG("m", start_date=datetime(2026, 1, 1)):
    @task
    def numbers():
        return [1, 2, 3]
    @task
    def double(x):
        return 2 * x
    @task
    def total(values):
        return sum(values)
    total(double.expand(x=numbers()))
""",
    )
    assert [ti.map_index for ti in _instances(harness, "double")] == [-1]  # waits for numbers
    _report(harness, _published(harness, "numbers")[0], "success", [1, 2, 3])
    harness.scheduler.run_once(NOW)
    doubles = _published(harness, "double")
    assert [m.expand_args for m in doubles] == [{"x": 1}, {"x": 2}, {"x": 3}]
    for m in reversed(doubles):  # finishing out of order changes nothing about the order downstream
        _report(harness, m, "success", 2 * m.expand_args["x"])  # type: ignore[index]
    harness.scheduler.run_once(NOW)
    (total,) = _published(harness, "total")
    assert total.upstream_results == {"double": [2, 4, 6]} and total.expand_args is None
    _report(harness, total, "success", 12)
    harness.scheduler.run_once(NOW)
    assert _run_state(harness) == "success"


def test_mapping_over_a_mapped_task_makes_one_instance_per_upstream_instance(harness: Harness) -> None:
    _start(
        harness,
        """
with DAG("m", start_date=datetime(2026, 1, 1)):
    @task
    def first(x):
        return x * 10
    @task
    def second(y, z):
        return y + z
    second.partial(z=1).expand(y=first.expand(x={"a": 1, "b": 2}))
""",
    )
    firsts = _published(harness, "first")
    assert [m.expand_args for m in firsts] == [{"x": ["a", 1]}, {"x": ["b", 2]}]
    for m, value in zip(firsts, [10, 20], strict=True):
        _report(harness, m, "success", value)
    harness.scheduler.run_once(NOW)
    assert [m.expand_args for m in _published(harness, "second")] == [{"y": 10}, {"y": 20}]


def test_a_zero_length_expansion_skips_the_task_and_its_downstream(harness: Harness) -> None:
    _start(
        harness,
        """
with DAG("m", start_date=datetime(2026, 1, 1)):
    @task
    def numbers():
        return []
    @task
    def double(x):
        return 2 * x
    @task
    def total(values):
        return sum(values)
    @task(trigger_rule="all_done")
    def report(values):
        return values
    doubled = double.expand(x=numbers())
    total(doubled)
    report(doubled)
""",
    )
    _report(harness, _published(harness, "numbers")[0], "success", [])
    harness.scheduler.run_once(NOW)
    harness.scheduler.run_once(NOW)
    assert [(ti.map_index, ti.state) for ti in _instances(harness, "double")] == [(-1, "skipped")]
    assert _instances(harness, "total")[0].state == "skipped"
    (report,) = _published(harness, "report")
    assert report.upstream_results == {"double": []}


def test_an_expansion_past_max_map_length_fails_the_task_naming_the_length_and_the_setting(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, max_map_length=2)
    try:
        _start(
            harness,
            """
with DAG("m", start_date=datetime(2026, 1, 1)):
    @task
    def one(x):
        return x
    @task
    def after(values):
        return values
    after(one.expand(x=[1, 2, 3]))
""",
        )
        harness.scheduler.run_once(NOW)
        (ti,) = _instances(harness, "one")
        assert (ti.map_index, ti.state) == (-1, "failed")
        assert "expands to 3 instances, over max_map_length (2)" in (ti.error or "")
        assert _instances(harness, "after")[0].state == "upstream_failed"
        assert _run_state(harness) == "failed"
        assert not _published(harness, "one")
    finally:
        harness.close()


def test_mapping_over_a_value_that_is_not_a_list_fails_the_task_saying_so(harness: Harness) -> None:
    _start(
        harness,
        """
with DAG("m", start_date=datetime(2026, 1, 1)):
    @task
    def name():
        return "abc"
    @task
    def one(x):
        return x
    one.expand(x=name())
""",
    )
    _report(harness, _published(harness, "name")[0], "success", "abc")
    harness.scheduler.run_once(NOW)
    (ti,) = _instances(harness, "one")
    assert ti.state == "failed"
    assert "result of task 'name', which is str, not a list or dict" in (ti.error or "")


def test_each_mapped_instance_retries_on_its_own(harness: Harness) -> None:
    _start(
        harness,
        """
with DAG("m", start_date=datetime(2026, 1, 1)):
    @task(retries=1, retry_delay=0)
    def one(x):
        return x
    one.expand(x=[1, 2])
""",
    )
    first, second = _published(harness, "one")
    _report(harness, first, "success", 1)
    _report(harness, second, "failed")
    assert [ti.state for ti in _instances(harness, "one")] == ["success", "up_for_retry"]
    harness.scheduler.run_once(NOW)
    retried = [m for m in _published(harness, "one") if m.key.try_number == 2]
    assert [(m.key.map_index, m.expand_args) for m in retried] == [(1, {"x": 2})]
    assert _run_state(harness) == "running"
    _report(harness, retried[0], "success", 2)
    harness.scheduler.run_once(NOW)
    assert _run_state(harness) == "success"


# -- the pure decisions over a mapped task's instances ---------------------------------------------------


@dataclass(frozen=True)
class Spec:
    task_id: str
    upstream: tuple[str, ...] = ()
    trigger_rule: str = "all_success"
    retry_delay: float = 0.0
    retry_exponential_backoff: bool = False
    max_retry_delay: float | None = None
    is_mapped: bool = False


MAPPED_THEN_TWO = [
    Spec("m", is_mapped=True),
    Spec("strict", ("m",)),
    Spec("lenient", ("m",), trigger_rule="one_success"),
]


def test_a_placeholder_whose_rule_is_met_is_expanded_not_scheduled() -> None:
    decision = evaluate_run(MAPPED_THEN_TWO, {t.task_id: TIView("none") for t in MAPPED_THEN_TWO}, NOW)

    assert (decision.expand, decision.schedule, decision.run_state) == (["m"], [], None)


@pytest.mark.parametrize(
    ("instance_states", "strict", "lenient"),
    [
        (["success", "success"], "schedule", "schedule"),
        (["success", "failed"], "upstream_failed", "schedule"),
        (["success", "running"], None, "schedule"),
        (["skipped", "skipped"], "skip", "skip"),
    ],
)
def test_downstream_trigger_rules_count_every_instance_of_a_mapped_task(
    instance_states: list[str], strict: str | None, lenient: str | None
) -> None:
    instances = {"m": {i: TIView(s, 1) for i, s in enumerate(instance_states)}}
    decision = evaluate_run(
        MAPPED_THEN_TWO, {"strict": TIView("none"), "lenient": TIView("none")}, NOW, instances
    )

    def verdict(task_id: str) -> str | None:
        for name in ("schedule", "upstream_failed", "skip"):
            if task_id in getattr(decision, name):
                return name
        return None

    assert (verdict("strict"), verdict("lenient")) == (strict, lenient)


def test_instances_are_scheduled_and_retried_one_by_one_and_a_failed_one_fails_a_mapped_leaf() -> None:
    tasks = [Spec("m", is_mapped=True)]
    waiting = {"m": {0: TIView("none"), 1: TIView("up_for_retry", 1, NOW), 2: TIView("success", 1)}}
    finished = {"m": {0: TIView("success", 1), 1: TIView("failed", 2)}}

    decision = evaluate_run(tasks, {}, NOW, waiting)

    assert decision.schedule_instances == [("m", 0), ("m", 1)] and decision.schedule == []
    assert evaluate_run(tasks, {}, NOW, finished).run_state == "failed"
    assert run_outcome(tasks, {"m": ["success", "skipped"]}) == "success"
    assert run_outcome(tasks, {"m": ["success", "running"]}) is None


@pytest.mark.parametrize(
    ("length", "states", "expected"),
    [
        (3, {0: "none", 1: "none", 2: "none"}, Revision()),
        (5, {0: "none", 1: "none", 2: "none"}, Revision(create=(3, 4))),
        (1, {0: "none", 1: "none", 2: "none"}, Revision(remove=(1, 2))),
        (3, {0: "none", 1: "removed", 2: "removed", 3: "removed"}, Revision(restore=(1, 2))),
        (4, {0: "none", 1: "removed"}, Revision(create=(2, 3), restore=(1,))),
    ],
)
def test_a_cleared_mapped_task_is_revised_to_its_new_length(
    length: int, states: dict[int, str], expected: Revision
) -> None:
    assert revision(length, states) == expected
    assert bool(revision(length, states)) is bool(expected.create or expected.restore or expected.remove)
