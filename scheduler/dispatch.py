"""Turning queued task instances into task messages (everything a worker needs, no DB access), and
the two writes around publishing them: the mark that the broker confirmed a message, and the claim
that lets one scheduler, and only one, re-publish a message that was never confirmed."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from hareflow.common.assets import RUN_TYPE as ASSET_RUN_TYPE
from hareflow.common.assets import triggering_events
from hareflow.common.dag.context import resolve_params
from hareflow.common.db import DagRun, TaskInstance, TaskResult
from hareflow.common.messages import TaskKey, TaskMessage
from hareflow.common.states import TaskState
from hareflow.scheduler.expansion import Elements, gather_results
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def upstream_results(session: Session, run_pk: int, task_ids: Sequence[str]) -> dict[str, Any]:
    """Return values of ``task_ids`` in one run (their latest successful try)."""
    if not task_ids:
        return {}
    rows = session.execute(
        select(TaskInstance.task_id, TaskResult.value_json)
        .join(
            TaskResult,
            and_(TaskResult.ti_id == TaskInstance.id, TaskResult.try_number == TaskInstance.try_number),
        )
        .where(TaskInstance.run_pk == run_pk, TaskInstance.task_id.in_(task_ids))
    )
    return {task_id: json.loads(value) for task_id, value in rows}


def _reads(task: Any) -> tuple[str, ...]:
    """The upstream tasks whose results a task's messages need: its inputs, and what it maps over."""
    spec = task.expand_spec
    return task.input_tasks if spec is None else (*task.input_tasks, *spec.task_ids)


def build_messages(
    session: Session,
    tis: Sequence[TaskInstance],
    runs: Mapping[int, DagRun],
    serialized: Mapping[str, Any],
) -> list[TaskMessage]:
    """One message per task instance; ``serialized`` maps dag_id -> SerializedDag."""
    by_run: dict[int, list[TaskInstance]] = defaultdict(list)
    for ti in tis:
        by_run[ti.run_pk].append(ti)
    messages = []
    now = time.time()
    # The events that started asset-triggered runs travel in their messages: workers have no DB.
    triggering = triggering_events(session, [pk for pk in by_run if runs[pk].run_type == ASSET_RUN_TYPE])
    for run_pk, run_tis in by_run.items():
        run = runs[run_pk]
        sdag = serialized[run.dag_id]
        tasks = {t.task_id: t for t in sdag.tasks}
        needed = sorted({u for ti in run_tis if ti.task_id in tasks for u in _reads(tasks[ti.task_id])})
        mapped = {t.task_id for t in sdag.tasks if t.is_mapped}
        # A mapped upstream's output is the list of its instances' results, in map-index order.
        results = (
            gather_results(session, run_pk, needed, mapped)
            if mapped
            else upstream_results(session, run_pk, needed)
        )
        elements = Elements(tasks, results)
        params = resolve_params(sdag.params, run.conf)
        for ti in run_tis:
            task = tasks[ti.task_id]
            messages.append(
                TaskMessage(
                    key=TaskKey(
                        ti_id=ti.id,
                        dag_id=ti.dag_id,
                        run_id=ti.run_id,
                        task_id=ti.task_id,
                        map_index=ti.map_index,
                        try_number=ti.try_number,
                    ),
                    max_tries=ti.max_tries,
                    dag_file=sdag.fileloc,
                    queue=ti.queue,
                    execution_timeout=task.execution_timeout,
                    logical_date=_iso(run.logical_date),
                    data_interval_start=_iso(run.data_interval_start),
                    data_interval_end=_iso(run.data_interval_end),
                    conf=dict(run.conf or {}),
                    params=params,
                    upstream_results={u: results[u] for u in task.input_tasks if u in results},
                    published_at=now,
                    expand_args=elements.of(ti.task_id, ti.map_index),
                    reschedules=ti.reschedules or 0,
                    first_poke_at=ti.first_poke_at.timestamp() if ti.first_poke_at is not None else None,
                    triggering_asset_events=(
                        triggering.get(run_pk, {}) if run.run_type == ASSET_RUN_TYPE else None
                    ),
                )
            )
    return messages


# -- confirmed publishes and re-publishing ---------------------------------------------------------------

#: Ids per ``IN (...)`` list: well under every database's bind-parameter limit.
CHUNK = 1000


def mark_confirmed(session: Session, ids: Sequence[int], queued_at: datetime, now: datetime) -> int:
    """Record that the broker confirmed the messages of these task instances, queued at
    ``queued_at``: one ``UPDATE`` per thousand ids. A row queued again since (a new try, another
    scheduler's re-publish) has another ``queued_at`` and keeps its own mark. A row a worker has
    already started (or finished) is marked too: the mark belongs to the try, whatever its state.
    Returns how many rows were marked."""
    marked = 0
    for start in range(0, len(ids), CHUNK):
        marked += session.execute(
            update(TaskInstance)
            .where(
                TaskInstance.id.in_(ids[start : start + CHUNK]),
                TaskInstance.queued_at == queued_at,
                TaskInstance.confirmed_at.is_(None),
            )
            .values(confirmed_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
    return marked


def claim_for_republish(
    session: Session, rows: Iterable[tuple[int, datetime | None]], now: datetime
) -> list[int]:
    """Claim task instances to re-publish: a compare-and-set per row on the ``queued_at`` it was
    read with, so that of several schedulers that found the same unconfirmed row, exactly one
    re-publishes it. Returns the ids this caller won (their ``queued_at`` is now ``now``)."""
    won = []
    for ti_id, queued_at in rows:
        same_queued_at = (
            TaskInstance.queued_at.is_(None) if queued_at is None else TaskInstance.queued_at == queued_at
        )
        claimed = session.execute(
            update(TaskInstance)
            .where(
                TaskInstance.id == ti_id,
                same_queued_at,
                TaskInstance.state == TaskState.QUEUED,
                TaskInstance.confirmed_at.is_(None),
            )
            .values(queued_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed == 1:
            won.append(ti_id)
    return won
