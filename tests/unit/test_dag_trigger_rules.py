"""Trigger rules and retry delays, as tables."""

from __future__ import annotations

import pytest
from hareflow.common.dag import TriggerRule, evaluate_trigger_rule, retry_delay_seconds

S, F, U, K, R = "success", "failed", "upstream_failed", "skipped", "removed"
RUNNING, QUEUED, NONE, RETRY = "running", "queued", "none", "up_for_retry"

TABLE = [
    # rule, upstream states, decision
    ("all_success", [], "run"),
    ("all_success", [S, S], "run"),
    ("all_success", [S, RUNNING], "wait"),
    ("all_success", [S, RETRY], "wait"),
    ("all_success", [S, F], "upstream_failed"),
    ("all_success", [RUNNING, F], "upstream_failed"),
    ("all_success", [S, U], "upstream_failed"),
    ("all_success", [S, K], "skip"),
    ("all_success", [K, F], "upstream_failed"),
    ("all_success", [S, R], "run"),
    ("all_done", [], "run"),
    ("all_done", [S, F, U, K], "run"),
    ("all_done", [S, QUEUED], "wait"),
    ("all_done", [F, RETRY], "wait"),
    ("one_success", [RUNNING, S], "run"),
    ("one_success", [F, S], "run"),
    ("one_success", [RUNNING, F], "wait"),
    ("one_success", [F, U], "upstream_failed"),
    ("one_success", [F, K], "upstream_failed"),
    ("one_success", [K, K], "skip"),
    ("one_failed", [RUNNING, F], "run"),
    ("one_failed", [NONE, U], "run"),
    ("one_failed", [S, RUNNING], "wait"),
    ("one_failed", [S, K], "skip"),
    ("one_failed", [S, S], "skip"),
    ("none_failed", [S, K], "run"),
    ("none_failed", [K, K], "run"),
    ("none_failed", [S, RUNNING], "wait"),
    ("none_failed", [S, F], "upstream_failed"),
    ("none_failed", [RUNNING, U], "upstream_failed"),
    ("all_failed", [F, U], "run"),
    ("all_failed", [F, RUNNING], "wait"),
    ("all_failed", [F, S], "skip"),
    ("all_failed", [F, K], "skip"),
    ("all_failed", [RUNNING, S], "skip"),
    ("all_failed", [R], "run"),
    ("always", [], "run"),
    ("always", [RUNNING, NONE], "run"),
    ("always", [F, U, K], "run"),
    ("none_skipped", [S, F, U], "run"),
    ("none_skipped", [S, RUNNING], "wait"),
    ("none_skipped", [S, K], "skip"),
    ("none_skipped", [RUNNING, K], "skip"),
    ("all_skipped", [K, K], "run"),
    ("all_skipped", [K, RUNNING], "wait"),
    ("all_skipped", [K, S], "skip"),
    ("all_skipped", [K, F], "skip"),
    ("all_skipped", [RUNNING, U], "skip"),
    ("one_done", [S, RUNNING], "run"),
    ("one_done", [F, RUNNING], "run"),
    ("one_done", [U, RUNNING], "wait"),
    ("one_done", [K, NONE], "wait"),
    ("one_done", [U, K], "skip"),
    ("one_done", [K, K], "skip"),
    ("none_failed_min_one_success", [S, K], "run"),
    ("none_failed_min_one_success", [S, S], "run"),
    ("none_failed_min_one_success", [K, K], "skip"),
    ("none_failed_min_one_success", [S, RUNNING], "wait"),
    ("none_failed_min_one_success", [K, RUNNING], "wait"),
    ("none_failed_min_one_success", [S, F], "upstream_failed"),
    ("none_failed_min_one_success", [RUNNING, U], "upstream_failed"),
    ("none_failed_min_one_success", [K, R], "skip"),
    ("all_done_setup_success", [S, F], "run"),  # with no setup named, it is all_done
    ("all_done_setup_success", [S, RUNNING], "wait"),
]


@pytest.mark.parametrize(("rule", "states", "expected"), TABLE)
def test_trigger_rule_table(rule: str, states: list[str], expected: str) -> None:
    assert evaluate_trigger_rule(rule, states) == expected
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    assert evaluate_trigger_rule(TriggerRule(rule), counts) == expected
    by_task = {f"t{i}": state for i, state in enumerate(states)}
    assert evaluate_trigger_rule(rule, by_task) == expected


def test_every_rule_is_covered_by_the_table() -> None:
    assert {row[0] for row in TABLE} == {r.value for r in TriggerRule}


SETUP_TABLE = [
    # upstream states (setups included), setup states, decision
    ([S, F], [S], "run"),  # the work failed: the teardown still runs
    ([S, U], [S], "run"),
    ([S, RUNNING], [S], "wait"),
    ([RUNNING, NONE], [RUNNING], "wait"),
    ([F, U], [F], "upstream_failed"),  # no setup succeeded: nothing to tear down
    ([K, K], [K], "skip"),
    ([S, F, K], [S, K], "run"),  # one setup of two succeeded
    ([S, F], [], "run"),  # a teardown without setups is all_done
]


@pytest.mark.parametrize(("states", "setups", "expected"), SETUP_TABLE)
def test_all_done_setup_success_runs_a_teardown_once_a_setup_succeeded_and_everything_is_done(
    states: list[str], setups: list[str], expected: str
) -> None:
    assert evaluate_trigger_rule("all_done_setup_success", states, setups) == expected


def test_every_airflow_trigger_rule_name_is_accepted() -> None:
    airflow_names = {
        "all_success", "all_failed", "all_done", "all_done_setup_success", "one_success", "one_failed",
        "one_done", "none_failed", "none_failed_min_one_success", "none_skipped", "all_skipped", "always",
    }  # fmt: skip
    assert {rule.value for rule in TriggerRule} == airflow_names


def test_unknown_rule_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown trigger rule 'maybe'; valid rules are: all_success"):
        evaluate_trigger_rule("maybe", [])


def test_zero_counts_do_not_count_as_upstream_tasks() -> None:
    assert evaluate_trigger_rule("all_success", {"success": 2, "failed": 0, "running": 0}) == "run"


@pytest.mark.parametrize(
    ("delay", "try_number", "exponential", "max_delay", "expected"),
    [
        (30.0, 1, False, None, 30.0),
        (30.0, 5, False, None, 30.0),
        (30.0, 5, False, 10.0, 10.0),
        (30.0, 1, True, None, 30.0),
        (30.0, 2, True, None, 60.0),
        (30.0, 4, True, None, 240.0),
        (30.0, 4, True, 100.0, 100.0),
        (1.0, 5000, True, 3600.0, 3600.0),
        (0.0, 3, True, None, 0.0),
        (10.0, 0, True, None, 10.0),
    ],
)
def test_retry_delay_table(
    delay: float, try_number: int, exponential: bool, max_delay: float | None, expected: float
) -> None:
    assert retry_delay_seconds(delay, try_number, exponential, max_delay) == expected
