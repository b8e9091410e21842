"""``depends_on_past``: a task instance waits until the same task succeeded (or was skipped) in the
DAG's previous run by logical date, whatever that run's type. A run with no previous run, or whose
previous run has no instance of the task, is free, as in Airflow.

The pure rule is ``blocked_by_past``; ``past_blockers`` feeds it from the metastore with one query
per run that has such tasks, so DAGs without ``depends_on_past`` cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hareflow.common.dag.serialize import SerializedDag
from hareflow.common.db import DagRun, TaskInstance
from hareflow.common.states import TaskState
from sqlalchemy import select
from sqlalchemy.orm import Session

#: The states of the previous run's task instance that let this run's instance go ahead.
PAST_OK = frozenset({TaskState.SUCCESS, TaskState.SKIPPED})


def blocked_by_past(task_ids: Iterable[str], previous: Mapping[str, str]) -> set[str]:
    """The ``task_ids`` (those with depends_on_past) whose previous instance did not succeed or skip."""
    return {t for t in task_ids if t in previous and previous[t] not in PAST_OK}


def past_blockers(
    session: Session, runs: Iterable[DagRun], sdags: Mapping[str, SerializedDag]
) -> dict[int, set[str]]:
    """Run id (pk) -> task ids that must wait for the previous run; runs without any are left out."""
    blocked: dict[int, set[str]] = {}
    for run in runs:
        sdag = sdags.get(run.dag_id)
        if sdag is None or run.logical_date is None:
            continue
        waiting = [t.task_id for t in sdag.tasks if t.depends_on_past]
        if not waiting:
            continue
        previous = session.scalar(
            select(DagRun.id)
            .where(DagRun.dag_id == run.dag_id, DagRun.logical_date < run.logical_date)
            .order_by(DagRun.logical_date.desc(), DagRun.id.desc())
            .limit(1)
        )
        if previous is None:
            continue
        states = dict(
            session.execute(
                select(TaskInstance.task_id, TaskInstance.state).where(
                    TaskInstance.run_pk == previous, TaskInstance.task_id.in_(waiting)
                )
            )
            .tuples()
            .all()
        )
        held = blocked_by_past(waiting, states)
        if held:
            blocked[run.id] = held
    return blocked
