"""Backfills: one run per schedule interval in a date range, recorded so the UI can show it.

A backfill never duplicates a run: an interval that already has a run (scheduled or from an earlier
backfill) is left alone, or, with ``rerun_failed``, its failed task instances are cleared and the
run goes through the normal path again. Backfill runs count against the backfill's own
``max_active_runs``, not the DAG's, and proceed while the DAG is paused (they were asked for
explicitly). The scheduler marks the backfill finished once none of its runs is active.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hareflow.common.audit import audit
from hareflow.common.dag.schedule import DagRunInfo, runs_between
from hareflow.common.dag_versions import run_version
from hareflow.common.db import Backfill, Dag, DagRun, TaskInstance, cas
from hareflow.common.runs import RunError, schedule_args
from hareflow.common.states import RUN_ACTIVE, RunState, RunTransition, TaskState, TaskTransition
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session


class BackfillError(RunError):
    """A user mistake: unknown DAG or backfill, no schedule, start after end, already finished."""


@dataclass(frozen=True)
class BackfillPlan:
    dag_id: str
    to_create: list[DagRunInfo]
    to_rerun: list[str]  # run ids whose failed task instances will be cleared
    existing: list[str]  # run ids left alone

    @property
    def total(self) -> int:
        return len(self.to_create) + len(self.to_rerun)


@dataclass(frozen=True)
class BackfillProgress:
    backfill_id: int
    dag_id: str
    state: str
    total: int
    queued: int
    running: int
    success: int
    failed: int
    tasks_running: int
    tasks_failed: int
    started_at: datetime
    completed_at: datetime | None

    @property
    def done(self) -> int:
        return self.success + self.failed


def plan_backfill(
    session: Session, dag_id: str, start: datetime, end: datetime, *, rerun_failed: bool = False
) -> BackfillPlan:
    """What a backfill of ``[start, end]`` (logical dates) would do; changes nothing."""
    dag = session.get(Dag, dag_id)
    if dag is None or not dag.is_active:
        raise BackfillError(f"no DAG named {dag_id!r} (see `hareflow dags list`)")
    if start > end:
        raise BackfillError(f"the start {start.isoformat()} is after the end {end.isoformat()}")
    args = schedule_args(dag)
    if args["schedule"] is None:
        raise BackfillError(f"DAG {dag_id!r} has no schedule, so it has no intervals to backfill")
    try:
        intervals = runs_between(
            schedule=args["schedule"],
            timezone=args["timezone"],
            start=start,
            end=end,
            start_date=args["start_date"],
            end_date=args["end_date"],
        )
    except ValueError as exc:
        raise BackfillError(str(exc)) from None
    existing_runs = (
        {
            run.interval_key: run
            for run in session.scalars(
                select(DagRun).where(
                    DagRun.dag_id == dag_id, DagRun.interval_key.in_([i.logical_date for i in intervals])
                )
            )
        }
        if intervals
        else {}
    )
    to_create, to_rerun, existing = [], [], []
    for info in intervals:
        run = existing_runs.get(info.logical_date)
        if run is None:
            to_create.append(info)
        elif rerun_failed and run.state == RunState.FAILED:
            to_rerun.append(run.run_id)
        else:
            existing.append(run.run_id)
    return BackfillPlan(dag_id=dag_id, to_create=to_create, to_rerun=to_rerun, existing=existing)


def create_backfill(
    session: Session,
    dag_id: str,
    start: datetime,
    end: datetime,
    *,
    max_active_runs: int = 1,
    rerun_failed: bool = False,
    created_by: str | None = None,
    origin: str | None = None,
    now: datetime | None = None,
) -> tuple[Backfill, BackfillPlan]:
    """Record a backfill and queue its runs (audited as ``created_by`` from ``origin``). An empty
    plan is recorded as already finished."""
    now = now or datetime.now(UTC)
    if max_active_runs < 1:
        raise BackfillError("--max-active-runs must be at least 1")
    plan = plan_backfill(session, dag_id, start, end, rerun_failed=rerun_failed)
    dag = session.get(Dag, dag_id)
    assert dag is not None
    backfill = Backfill(
        dag_id=dag_id,
        from_date=start,
        to_date=end,
        max_active_runs=max_active_runs,
        rerun_failed=rerun_failed,
        state="running" if plan.total else "success",
        created_by=created_by,
        created_at=now,
        completed_at=None if plan.total else now,
    )
    session.add(backfill)
    session.flush()
    for info in plan.to_create:
        session.add(
            DagRun(
                dag_id=dag_id,
                run_id=f"backfill__{info.logical_date.isoformat()}",
                run_type="backfill",
                state=RunState.QUEUED,
                logical_date=info.logical_date,
                interval_key=info.logical_date,
                data_interval_start=info.data_interval_start,
                data_interval_end=info.data_interval_end,
                conf={},
                backfill_id=backfill.id,
                triggered_by=created_by,
                queued_at=now,
                **run_version(dag),
            )
        )
    if plan.to_rerun:
        _rerun_failed(session, dag, plan.to_rerun, backfill.id, now)
    session.flush()
    audit(
        session,
        "backfill",
        username=created_by,
        dag_id=dag_id,
        details={
            "backfill_id": backfill.id,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "runs_created": len(plan.to_create),
            "runs_rerun": len(plan.to_rerun),
        },
        origin=origin,
        now=now,
    )
    return backfill, plan


def _rerun_failed(session: Session, dag: Dag, run_ids: list[str], backfill_id: int, now: datetime) -> None:
    """Put the failed runs back to ``queued`` and clear their failed task instances (each write a
    compare-and-set; a run a clear requeued meanwhile is left as it is)."""
    retries = {t["task_id"]: int(t.get("retries") or 0) for t in dag.serialized.get("tasks", [])}
    query = select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id.in_(run_ids)).order_by(DagRun.id)
    if session.get_bind().dialect.name != "sqlite":
        query = query.with_for_update()
    for run in session.scalars(query.execution_options(populate_existing=True)).all():
        requeue = {"state": RunState.QUEUED, "end_date": None, "queued_at": now, "backfill_id": backfill_id}
        if not cas.set_run_state(session, run, RunTransition.REQUEUE, **requeue):
            continue
        failed = session.execute(
            select(TaskInstance.id, TaskInstance.task_id, TaskInstance.try_number).where(
                TaskInstance.run_pk == run.id,
                TaskInstance.state.in_((TaskState.FAILED, TaskState.UPSTREAM_FAILED)),
            )
        ).tuples()
        rows = [
            (
                ti_id,
                try_number,
                {
                    "state": TaskState.NONE,
                    "max_tries": try_number + retries.get(task_id, 0) + 1,
                    "end_date": None,
                    "next_retry_at": None,
                    "error": None,
                    "updated_at": now,
                },
            )
            for ti_id, task_id, try_number in failed
        ]
        cas.set_each_task_state(session, TaskTransition.CLEAR, rows)


def cancel_backfill(
    session: Session,
    backfill_id: int,
    *,
    username: str | None = None,
    origin: str | None = None,
    now: datetime | None = None,
) -> int:
    """Cancel the backfill's runs that have not started; runs already going are left to finish.
    Audited as ``username`` from ``origin``."""
    now = now or datetime.now(UTC)
    backfill = session.get(Backfill, backfill_id)
    if backfill is None:
        raise BackfillError(f"no backfill with id {backfill_id}")
    if backfill.state != "running":
        raise BackfillError(f"backfill {backfill_id} is already {backfill.state}")
    result = session.execute(
        delete(DagRun)
        .where(
            DagRun.backfill_id == backfill_id, DagRun.state == RunState.QUEUED, DagRun.start_date.is_(None)
        )
        .execution_options(synchronize_session=False)
    )
    backfill.state = "cancelled"
    backfill.completed_at = now
    dropped = int(result.rowcount or 0)
    audit(
        session,
        "backfill_cancel",
        username=username,
        dag_id=backfill.dag_id,
        details={"backfill_id": backfill_id, "runs_dropped": dropped},
        origin=origin,
        now=now,
    )
    return dropped


def backfill_progress(session: Session, backfill_id: int) -> BackfillProgress:
    backfill = session.get(Backfill, backfill_id)
    if backfill is None:
        raise BackfillError(f"no backfill with id {backfill_id}")
    counts = dict(
        session.execute(
            select(DagRun.state, func.count()).where(DagRun.backfill_id == backfill_id).group_by(DagRun.state)
        )
        .tuples()
        .all()
    )
    run_ids = select(DagRun.id).where(DagRun.backfill_id == backfill_id).scalar_subquery()
    ti_counts = dict(
        session.execute(
            select(TaskInstance.state, func.count())
            .where(TaskInstance.run_pk.in_(run_ids))
            .group_by(TaskInstance.state)
        )
        .tuples()
        .all()
    )
    return BackfillProgress(
        backfill_id=backfill.id,
        dag_id=backfill.dag_id,
        state=backfill.state,
        total=sum(counts.values()),
        queued=counts.get(RunState.QUEUED, 0),
        running=counts.get(RunState.RUNNING, 0),
        success=counts.get(RunState.SUCCESS, 0),
        failed=counts.get(RunState.FAILED, 0),
        tasks_running=ti_counts.get(TaskState.RUNNING, 0) + ti_counts.get(TaskState.QUEUED, 0),
        tasks_failed=ti_counts.get(TaskState.FAILED, 0),
        started_at=backfill.created_at,
        completed_at=backfill.completed_at,
    )


def finish_backfills(session: Session, now: datetime) -> list[Backfill]:
    """Mark running backfills with no active run left as success or failed (scheduler housekeeping)."""
    finished = []
    for backfill in session.scalars(select(Backfill).where(Backfill.state == "running")):
        states = dict(
            session.execute(
                select(DagRun.state, func.count())
                .where(DagRun.backfill_id == backfill.id)
                .group_by(DagRun.state)
            )
            .tuples()
            .all()
        )
        if any(states.get(s, 0) for s in RUN_ACTIVE):
            continue
        backfill.state = "failed" if states.get(RunState.FAILED, 0) else "success"
        backfill.completed_at = now
        finished.append(backfill)
    return finished
