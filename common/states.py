"""Run and task-instance states, and the rules for moving between them.

Transitions only move forward within one try: a result for an older try, or a second result for a
try that is already finished, changes nothing. That is what makes broker redelivery safe.

``TASK_TRANSITIONS`` and ``RUN_TRANSITIONS`` are the one table of who may move a state from where:
every write of ``task_instance.state`` and ``dag_run.state`` is a compare-and-set on the allowed
previous states of its transition (and, for a task instance, on the try number it read), made by
``hareflow.common.db.cas``. A write that finds the row moved on since it was read changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    UP_FOR_RESCHEDULE = "up_for_reschedule"  # a sensor between two pokes: holds no slot
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
#: States that count against max_active_tasks and pool slots (a sensor ``up_for_reschedule``
#: holds neither: it returned its slot until its next poke, as in Airflow).
TASK_OCCUPYING = frozenset({TaskState.QUEUED, TaskState.RUNNING})


@dataclass(frozen=True)
class Rule:
    """A transition's allowed previous states (``sources``) and the states it may write."""

    sources: frozenset[str]
    targets: frozenset[str]


class TaskTransition(StrEnum):
    """Every way a task instance's state is written, named after what makes it."""

    REPORT_RUNNING = "report_running"  # results consumer: a worker started the try
    REPORT_FINAL = "report_final"  # results consumer: the try ended (success, failed, up_for_retry,
    # skipped: the task skipped itself)
    REPORT_RESCHEDULE = "report_reschedule"  # results consumer: a sensor's poke found nothing yet and
    # returned its slot until ``next_retry_at`` (same try; ``reschedules`` + 1)
    SCHEDULE = "schedule"  # scheduler: trigger rule met, or the retry delay passed
    RETRY_DELAY = "retry_delay"  # scheduler: records when an up_for_retry try may run again
    QUEUE = "queue"  # scheduler: dispatched, as a new try (try number + 1)
    REQUEUE_RESCHEDULED = "requeue_rescheduled"  # scheduler: a sensor's next poke is due: dispatched
    # again with the same try number (a new delivery of that try, numbered by ``reschedules``)
    UPSTREAM_FAILED = "upstream_failed"  # scheduler: trigger rule can no longer be met
    SKIP = "skip"  # scheduler: trigger rule says skip
    SKIP_DOWNSTREAM = "skip_downstream"  # results consumer: a branch or short-circuit upstream skipped it
    REMOVE = "remove"  # scheduler: the task left the DAG
    FAIL_UNSCHEDULABLE = "fail_unschedulable"  # scheduler: it names a pool that does not exist
    FAIL_EXPANSION = "fail_expansion"  # scheduler: a mapped task cannot expand (too long, not a list)
    WORKER_LOST = "worker_lost"  # scheduler: the worker running it stopped heartbeating
    CLEAR = "clear"  # operator (or a backfill re-running failed runs): run it again
    MARK = "mark"  # operator: set success or failed by hand
    RUN_TIMEOUT = "run_timeout"  # scheduler: the run passed its dagrun_timeout (as Airflow: skipped)
    REEXPAND = "reexpand"  # scheduler: a cleared mapped task expands again over a longer upstream
    # value: an instance removed by an earlier, shorter expansion waits again


_UNFINISHED = frozenset(TaskState) - TASK_FINISHED
#: States an operator may clear: every finished one but ``removed``, ``up_for_retry`` and
#: ``up_for_reschedule`` (neither holds a worker).
TASK_CLEARABLE = frozenset(
    TASK_FINISHED - {TaskState.REMOVED} | {TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RESCHEDULE}
)
_ENDED = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.UP_FOR_RETRY, TaskState.SKIPPED})

TASK_TRANSITIONS: dict[TaskTransition, Rule] = {
    TaskTransition.REPORT_RUNNING: Rule(TASK_DISPATCHED, frozenset({TaskState.RUNNING})),
    TaskTransition.REPORT_FINAL: Rule(TASK_DISPATCHED, _ENDED),
    TaskTransition.REPORT_RESCHEDULE: Rule(TASK_DISPATCHED, frozenset({TaskState.UP_FOR_RESCHEDULE})),
    TaskTransition.SCHEDULE: Rule(
        frozenset({TaskState.NONE, TaskState.UP_FOR_RETRY}), frozenset({TaskState.SCHEDULED})
    ),
    TaskTransition.RETRY_DELAY: Rule(
        frozenset({TaskState.UP_FOR_RETRY}), frozenset({TaskState.UP_FOR_RETRY})
    ),
    TaskTransition.QUEUE: Rule(frozenset({TaskState.SCHEDULED}), frozenset({TaskState.QUEUED})),
    TaskTransition.REQUEUE_RESCHEDULED: Rule(
        frozenset({TaskState.UP_FOR_RESCHEDULE}), frozenset({TaskState.QUEUED})
    ),
    TaskTransition.UPSTREAM_FAILED: Rule(frozenset({TaskState.NONE}), frozenset({TaskState.UPSTREAM_FAILED})),
    TaskTransition.SKIP: Rule(frozenset({TaskState.NONE}), frozenset({TaskState.SKIPPED})),
    # Only a task instance nobody has decided on yet: one already scheduled, queued or running
    # (a trigger rule such as ``always`` let it go) is left to finish.
    TaskTransition.SKIP_DOWNSTREAM: Rule(frozenset({TaskState.NONE}), frozenset({TaskState.SKIPPED})),
    TaskTransition.REMOVE: Rule(_UNFINISHED, frozenset({TaskState.REMOVED})),
    TaskTransition.FAIL_UNSCHEDULABLE: Rule(frozenset({TaskState.SCHEDULED}), frozenset({TaskState.FAILED})),
    TaskTransition.FAIL_EXPANSION: Rule(frozenset({TaskState.NONE}), frozenset({TaskState.FAILED})),
    TaskTransition.WORKER_LOST: Rule(
        frozenset({TaskState.RUNNING}), frozenset({TaskState.FAILED, TaskState.UP_FOR_RETRY})
    ),
    TaskTransition.CLEAR: Rule(TASK_CLEARABLE, frozenset({TaskState.NONE})),
    # The operator's word wins over whatever the task instance was doing, for the try they saw.
    TaskTransition.MARK: Rule(frozenset(TaskState), frozenset({TaskState.SUCCESS, TaskState.FAILED})),
    TaskTransition.RUN_TIMEOUT: Rule(_UNFINISHED, frozenset({TaskState.SKIPPED})),
    TaskTransition.REEXPAND: Rule(frozenset({TaskState.REMOVED}), frozenset({TaskState.NONE})),
}


class RunTransition(StrEnum):
    """Every way a run's state is written."""

    START = "start"  # scheduler: within max_active_runs
    FINISH = "finish"  # scheduler: every task instance finished (re-checked in the same UPDATE)
    REQUEUE = "requeue"  # operator clear or mark, a backfill re-running a failed run


RUN_TRANSITIONS: dict[RunTransition, Rule] = {
    RunTransition.START: Rule(frozenset({RunState.QUEUED}), frozenset({RunState.RUNNING})),
    RunTransition.FINISH: Rule(frozenset({RunState.RUNNING}), RUN_FINISHED),
    RunTransition.REQUEUE: Rule(RUN_FINISHED, frozenset({RunState.QUEUED})),
}


class WorkerOutcome(StrEnum):
    """What a worker reports about one try."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    UP_FOR_RESCHEDULE = "up_for_reschedule"  # a sensor in reschedule mode: poke again at reschedule_at


def accepts_report(
    current: TaskState,
    current_try: int,
    reported: WorkerOutcome,
    reported_try: int,
    *,
    current_reschedules: int = 0,
    reported_reschedules: int = 0,
) -> bool:
    """Whether a worker's report for ``reported_try`` may change a task instance.

    Reports for another try are stale, and so are reports for another delivery of a rescheduled
    try (``reschedules``: how many times the try had been rescheduled when it was dispatched). A
    ``running`` report is accepted while the try is queued or running (a redelivered message may
    start it again elsewhere). A final report (``up_for_reschedule`` included) is accepted while the
    try is queued or running, once: a duplicate finds the instance already finished or waiting.
    """
    if reported_try != current_try or reported_reschedules != current_reschedules:
        return False
    transition = {
        WorkerOutcome.RUNNING: TaskTransition.REPORT_RUNNING,
        WorkerOutcome.UP_FOR_RESCHEDULE: TaskTransition.REPORT_RESCHEDULE,
    }.get(reported, TaskTransition.REPORT_FINAL)
    return current in TASK_TRANSITIONS[transition].sources


def outcome_state(
    outcome: WorkerOutcome, try_number: int, max_tries: int, *, no_retry: bool = False
) -> TaskState:
    """The state a final report leads to: failures with tries left become ``up_for_retry``, unless
    the task asked for no retry (``FailTask``)."""
    if outcome is WorkerOutcome.SUCCESS:
        return TaskState.SUCCESS
    if outcome is WorkerOutcome.RUNNING:
        return TaskState.RUNNING
    if outcome is WorkerOutcome.SKIPPED:
        return TaskState.SKIPPED
    if outcome is WorkerOutcome.UP_FOR_RESCHEDULE:
        return TaskState.UP_FOR_RESCHEDULE
    return TaskState.UP_FOR_RETRY if try_number < max_tries and not no_retry else TaskState.FAILED
