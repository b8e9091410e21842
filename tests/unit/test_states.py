from pathlib import Path

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


def test_every_transition_writes_only_its_targets_and_few_leave_a_finished_state() -> None:
    """Only clear, mark and re-expansion move a task instance out of a finished state."""
    from hareflow.common.states import TASK_FINISHED, TASK_TRANSITIONS, TaskState, TaskTransition

    assert set(TASK_TRANSITIONS) == set(TaskTransition)
    for transition, rule in TASK_TRANSITIONS.items():
        assert rule.targets and rule.sources, transition
        if transition not in (TaskTransition.CLEAR, TaskTransition.MARK, TaskTransition.REEXPAND):
            assert not rule.sources & TASK_FINISHED, transition
    # A cleared mapped task expanding again brings back only instances an earlier expansion removed.
    assert TASK_TRANSITIONS[TaskTransition.REEXPAND].sources == {TaskState.REMOVED}


def test_a_write_its_transition_does_not_allow_is_refused_before_it_reaches_the_database(
    tmp_path: Path,
) -> None:
    from hareflow.common.db import Base, create_engine_for, make_session_factory
    from hareflow.common.db.cas import set_task_states
    from hareflow.common.states import TaskTransition

    engine = create_engine_for(f"sqlite:///{tmp_path / 'm.db'}")
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as s, s.begin():
        with pytest.raises(ValueError, match="transition report_running writes .*'running'.*not 'success'"):
            set_task_states(s, TaskTransition.REPORT_RUNNING, [(1, 1)], {"state": "success"})
    engine.dispose()
