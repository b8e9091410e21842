"""Trigger rules: when a task may run, given the states of its upstream tasks.

``evaluate_trigger_rule`` is a pure function so the scheduler's dependency check can be tested with
tables and no database. The rules and their verdicts are Airflow's (``TriggerRuleDep``): "failed"
below means failed or upstream_failed, except for ``one_done``, which counts only tasks that ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

TriggerDecision = Literal["run", "wait", "upstream_failed", "skip"]

SUCCESS = "success"
FAILED = "failed"
UPSTREAM_FAILED = "upstream_failed"
SKIPPED = "skipped"
REMOVED = "removed"


class TriggerRule(StrEnum):
    """The condition on upstream states that lets a task run."""

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"
    ALL_FAILED = "all_failed"
    ALWAYS = "always"
    NONE_SKIPPED = "none_skipped"
    ALL_SKIPPED = "all_skipped"
    ONE_DONE = "one_done"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    #: a teardown's rule: every upstream done and, if it has setups, at least one of them succeeded
    ALL_DONE_SETUP_SUCCESS = "all_done_setup_success"

    @classmethod
    def parse(cls, value: TriggerRule | str) -> TriggerRule:
        """Return the rule named ``value``; raise ValueError listing the valid names otherwise."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(r.value for r in cls)
            raise ValueError(f"unknown trigger rule {value!r}; valid rules are: {valid}") from None


def _count_states(upstream_states: Mapping[str, int] | Mapping[str, str] | Iterable[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    if isinstance(upstream_states, Mapping):
        values = list(upstream_states.values())
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            for state, count in upstream_states.items():
                counts[str(state)] += int(count)
            return counts
        upstream_states = [str(v) for v in values]
    for state in upstream_states:
        counts[state] += 1
    return counts


def evaluate_trigger_rule(
    rule: TriggerRule | str,
    upstream_states: Mapping[str, int] | Mapping[str, str] | Iterable[str],
    setup_states: Iterable[str] = (),
) -> TriggerDecision:
    """Decide what to do with a task whose upstream tasks are in ``upstream_states``.

    ``upstream_states`` is either a count per state (``{"success": 2, "running": 1}``), a mapping of
    upstream task id to state, or an iterable of states (one per upstream task). States other than
    success, failed, upstream_failed, skipped and removed are non-terminal; removed upstream tasks are
    ignored. ``setup_states`` are the states of the upstream setup tasks (also counted in
    ``upstream_states``), read by ``all_done_setup_success`` only. Returns "run", "wait",
    "upstream_failed" or "skip".
    """
    rule = TriggerRule.parse(rule)
    counts = _count_states(upstream_states)
    counts.pop(REMOVED, None)
    total = sum(counts.values())
    if rule is TriggerRule.ALWAYS or total == 0:
        return "run"
    tally = _Tally(
        success=counts[SUCCESS],
        ran_failed=counts[FAILED],
        failed=counts[FAILED] + counts[UPSTREAM_FAILED],
        skipped=counts[SKIPPED],
        total=total,
    )
    if rule is TriggerRule.ALL_DONE_SETUP_SUCCESS:
        return _all_done_setup_success(tally, [s for s in setup_states if s != REMOVED])
    return _RULES[rule](tally)


@dataclass(frozen=True)
class _Tally:
    """Upstream counts: ``failed`` includes upstream_failed, ``ran_failed`` does not."""

    success: int
    ran_failed: int
    failed: int
    skipped: int
    total: int

    @property
    def pending(self) -> int:
        return self.total - self.success - self.failed - self.skipped


def _all_success(t: _Tally) -> TriggerDecision:
    if t.failed:
        return "upstream_failed"
    if t.skipped:
        return "skip"
    return "wait" if t.pending else "run"


def _all_done(t: _Tally) -> TriggerDecision:
    return "wait" if t.pending else "run"


def _one_success(t: _Tally) -> TriggerDecision:
    if t.success:
        return "run"
    if t.pending:
        return "wait"
    return "skip" if t.skipped == t.total else "upstream_failed"


def _one_failed(t: _Tally) -> TriggerDecision:
    if t.failed:
        return "run"
    return "wait" if t.pending else "skip"


def _none_failed(t: _Tally) -> TriggerDecision:
    if t.failed:
        return "upstream_failed"
    return "wait" if t.pending else "run"


def _all_failed(t: _Tally) -> TriggerDecision:
    if t.success or t.skipped:
        return "skip"
    return "wait" if t.pending else "run"


def _none_skipped(t: _Tally) -> TriggerDecision:
    if t.skipped:
        return "skip"
    return "wait" if t.pending else "run"


def _all_skipped(t: _Tally) -> TriggerDecision:
    if t.success or t.failed:
        return "skip"
    return "wait" if t.pending else "run"


def _one_done(t: _Tally) -> TriggerDecision:
    # Airflow counts only tasks that ran: upstream_failed and skipped are done but do not count.
    if t.success or t.ran_failed:
        return "run"
    return "wait" if t.pending else "skip"


def _none_failed_min_one_success(t: _Tally) -> TriggerDecision:
    if t.failed:
        return "upstream_failed"
    if t.pending:
        return "wait"
    return "skip" if t.skipped == t.total else "run"


def _all_done_setup_success(t: _Tally, setups: list[str]) -> TriggerDecision:
    if t.pending:
        return "wait"
    if not setups:
        return "run"
    if all(s == SKIPPED for s in setups):
        return "skip"
    return "run" if any(s == SUCCESS for s in setups) else "upstream_failed"


_RULES: dict[TriggerRule, Callable[[_Tally], TriggerDecision]] = {
    TriggerRule.ALL_SUCCESS: _all_success,
    TriggerRule.ALL_DONE: _all_done,
    TriggerRule.ONE_SUCCESS: _one_success,
    TriggerRule.ONE_FAILED: _one_failed,
    TriggerRule.NONE_FAILED: _none_failed,
    TriggerRule.ALL_FAILED: _all_failed,
    TriggerRule.NONE_SKIPPED: _none_skipped,
    TriggerRule.ALL_SKIPPED: _all_skipped,
    TriggerRule.ONE_DONE: _one_done,
    TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: _none_failed_min_one_success,
}
