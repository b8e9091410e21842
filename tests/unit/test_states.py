import pytest
from hareflow.common.states import TaskState, WorkerOutcome, accepts_report, outcome_state

S, R, F = WorkerOutcome.SUCCESS, WorkerOutcome.RUNNING, WorkerOutcome.FAILED


@pytest.mark.parametrize(
    ("state", "current_try", "reported", "reported_try", "accepted"),
    [
        (TaskState.QUEUED, 1, R, 1, True),
        (TaskState.QUEUED, 1, S, 1, True),  # success overtook its running report
        (TaskState.RUNNING, 1, S, 1, True),
        (TaskState.RUNNING, 1, R, 1, True),  # redelivered and restarted elsewhere
        (TaskState.SUCCESS, 1, S, 1, False),  # duplicate final report
        (TaskState.SUCCESS, 1, F, 1, False),
        (TaskState.SUCCESS, 1, R, 1, False),  # late running report
        (TaskState.RUNNING, 2, S, 1, False),  # report for an older try
        (TaskState.QUEUED, 1, S, 2, False),  # report for a try not yet dispatched
        (TaskState.UP_FOR_RETRY, 1, F, 1, False),
        (TaskState.SCHEDULED, 1, R, 1, False),
        (TaskState.REMOVED, 1, S, 1, False),
    ],
)
def test_reports_only_move_a_try_forward(
    state: TaskState, current_try: int, reported: WorkerOutcome, reported_try: int, accepted: bool
) -> None:
    assert accepts_report(state, current_try, reported, reported_try) is accepted


@pytest.mark.parametrize(
    ("outcome", "try_number", "max_tries", "expected"),
    [
        (S, 1, 1, TaskState.SUCCESS),
        (F, 1, 1, TaskState.FAILED),
        (F, 1, 3, TaskState.UP_FOR_RETRY),
        (F, 2, 3, TaskState.UP_FOR_RETRY),
        (F, 3, 3, TaskState.FAILED),
    ],
)
def test_failures_with_tries_left_become_up_for_retry(
    outcome: WorkerOutcome, try_number: int, max_tries: int, expected: TaskState
) -> None:
    assert outcome_state(outcome, try_number, max_tries) is expected
