"""State events built from metastore rows, the one way every component describes a change."""

from __future__ import annotations

import time

from hareflow.common.db import DagRun, TaskInstance
from hareflow.common.messages import StateEvent


def task_event(ti: TaskInstance, *, kind: str = "task", try_number: int | None = None) -> StateEvent:
    return StateEvent(
        kind=kind,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=ti.map_index,
        try_number=ti.try_number if try_number is None else try_number,
        ti_id=ti.id,
        state=ti.state,
        at=time.time(),
    )


def run_event(run: DagRun) -> StateEvent:
    return StateEvent(kind="run", dag_id=run.dag_id, run_id=run.run_id, state=run.state, at=time.time())
