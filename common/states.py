"""Run and task-instance states, and the rules for moving between them.

Transitions only move forward within one try: a result for an older try, or a second result for a
try that is already finished, changes nothing. That is what makes broker redelivery safe.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


class TaskState(StrEnum):
    NONE = "none"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UP_FOR_RETRY = "up_for_retry"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    REMOVED = "removed"


RUN_ACTIVE = frozenset({RunState.QUEUED, RunState.RUNNING})
RUN_FINISHED = frozenset({RunState.SUCCESS, RunState.FAILED})

#: States a task instance never leaves on its own (an operator may clear it).
TASK_FINISHED = frozenset(
    {TaskState.SUCCESS, TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.SKIPPED, TaskState.REMOVED}
)
#: States in which a worker may hold the task.
TASK_DISPATCHED = frozenset({TaskState.QUEUED, TaskState.RUNNING})
#: States that count against max_active_tasks and pool slots.
TASK_OCCUPYING = frozenset({TaskState.QUEUED, TaskState.RUNNING})


class WorkerOutcome(StrEnum):
    """What a worker reports about one try."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


def accepts_report(current: TaskState, current_try: int, reported: WorkerOutcome, reported_try: int) -> bool:
    """Whether a worker's report for ``reported_try`` may change a task instance.

    Reports for another try are stale. A ``running`` report is accepted while the try is queued or
    running (a redelivered message may start it again elsewhere). A final report is accepted while
    the try is queued or running, once: a duplicate finds the instance already finished.
    """
    if reported_try != current_try:
        return False
    if current not in TASK_DISPATCHED:
        return False
    return True


def outcome_state(outcome: WorkerOutcome, try_number: int, max_tries: int) -> TaskState:
    """The state a final report leads to: failures with tries left become ``up_for_retry``."""
    if outcome is WorkerOutcome.SUCCESS:
        return TaskState.SUCCESS
    if outcome is WorkerOutcome.RUNNING:
        return TaskState.RUNNING
    return TaskState.UP_FOR_RETRY if try_number < max_tries else TaskState.FAILED
