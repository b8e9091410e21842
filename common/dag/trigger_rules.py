"""Trigger rules: when a task may run, given the states of its upstream tasks.

``evaluate_trigger_rule`` is a pure function so the scheduler's dependency check can be tested with
tables and no database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
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
) -> TriggerDecision:
    """Decide what to do with a task whose upstream tasks are in ``upstream_states``.

    ``upstream_states`` is either a count per state (``{"success": 2, "running": 1}``), a mapping of
    upstream task id to state, or an iterable of states (one per upstream task). States other than
    success, failed, upstream_failed, skipped and removed are non-terminal; removed upstream tasks are
    ignored. Returns "run", "wait", "upstream_failed" or "skip".
    """
    rule = TriggerRule.parse(rule)
    counts = _count_states(upstream_states)
    counts.pop(REMOVED, None)
    total = sum(counts.values())
    if total == 0:
        return "run"
    success = counts[SUCCESS]
    failed = counts[FAILED] + counts[UPSTREAM_FAILED]
    skipped = counts[SKIPPED]
    pending = total - success - failed - skipped

    if rule is TriggerRule.ALL_SUCCESS:
        if failed:
            return "upstream_failed"
        if skipped:
            return "skip"
        return "wait" if pending else "run"
    if rule is TriggerRule.ALL_DONE:
        return "wait" if pending else "run"
    if rule is TriggerRule.ONE_SUCCESS:
        if success:
            return "run"
        if pending:
            return "wait"
        return "skip" if skipped == total else "upstream_failed"
    if rule is TriggerRule.ONE_FAILED:
        if failed:
            return "run"
        return "wait" if pending else "skip"
    if rule is TriggerRule.NONE_FAILED:
        if failed:
            return "upstream_failed"
        return "wait" if pending else "run"
    # ALL_FAILED
    if success or skipped:
        return "skip"
    return "wait" if pending else "run"
