"""Expanding mapped tasks into their task instances, and gathering mapped tasks' results.

A mapped task starts as one placeholder task instance (map index -1, created with the others by
``_verify_integrity``). When its trigger rule is met, the scheduling pass expands it here, in the
pass's transaction: the length comes from the serialized expansion and the stored results of the
upstream tasks it maps over; the placeholder is deleted (a compare-and-set on its state ``none``
and try 0) and the N instances, map index 0..N-1, inserted in one batched statement. A zero-length
expansion skips the placeholder instead; one over ``max_map_length``, or over a value that is not a
list or dict, fails it with a message that says why.

A cleared mapped task expands again (``revision``): once the upstream tasks it maps over have run
again and succeeded, while every instance still waits, the new length decides. Instances past it
are removed (Airflow's way; trigger rules ignore removed instances), missing ones are created, and
instances an earlier expansion removed come back; an empty value skips the instances, an invalid
one fails them, as a first expansion would.

The output of a mapped task, for its downstream tasks, is the list of its instances' results in
map-index order (``gather_results``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hareflow.common.dag.mapping import ExpandSpec, ExpansionError, element, expansion_length, source_lists
from hareflow.common.dag.serialize import SerializedTask
from hareflow.common.db import TaskInstance, TaskResult
from hareflow.common.states import TaskState
from sqlalchemy import and_, delete, insert, select
from sqlalchemy.orm import Session

_TI = TaskInstance.__table__
#: Rows per INSERT statement: a thousand instances in one round trip, under every bind limit.
INSERT_CHUNK = 1000


def gather_results(
    session: Session, run_pk: int, task_ids: Sequence[str], mapped: Collection[str]
) -> dict[str, Any]:
    """Return values of ``task_ids`` in one run (each instance's latest try). A task in ``mapped``
    gives the list of its instances' values in map-index order (None where an instance returned
    nothing; ``[]`` when it expanded to no instance; an instance a later expansion removed is not
    part of it); another task its value, if it stored one."""
    if not task_ids:
        return {}
    rows = session.execute(
        select(TaskInstance.task_id, TaskInstance.map_index, TaskResult.value_json)
        .outerjoin(
            TaskResult,
            and_(TaskResult.ti_id == TaskInstance.id, TaskResult.try_number == TaskInstance.try_number),
        )
        .where(TaskInstance.run_pk == run_pk, TaskInstance.task_id.in_(sorted(set(task_ids))))
        .where((TaskInstance.map_index < 0) | (TaskInstance.state != TaskState.REMOVED))
    )
    out: dict[str, Any] = {}
    lists: dict[str, dict[int, Any]] = defaultdict(dict)
    for task_id, map_index, value in rows:
        if task_id in mapped:
            if map_index >= 0:
                lists[task_id][map_index] = None if value is None else json.loads(value)
        elif value is not None:
            out[task_id] = json.loads(value)
    for task_id in set(task_ids) & set(mapped):
        by_index = lists.get(task_id, {})
        out[task_id] = [by_index[i] for i in sorted(by_index)]
    return out


@dataclass(frozen=True)
class Plan:
    """What expanding one mapped task comes to: ``length`` instances, or an ``error``."""

    length: int = 0
    error: str | None = None


def plan(task: SerializedTask, results: Mapping[str, Any], max_map_length: int) -> Plan:
    """How many instances ``task`` expands to over ``results`` (task id -> value), within the limit."""
    spec = task.expand_spec
    assert spec is not None, f"task {task.task_id} is not mapped"
    try:
        length = expansion_length(spec, source_lists(spec, results))
    except ExpansionError as exc:
        return Plan(error=f"cannot expand task '{task.task_id}': {exc}")
    if length > max_map_length:
        return Plan(
            error=(
                f"task '{task.task_id}' expands to {length:,} instances, over max_map_length "
                f"({max_map_length:,}); map over fewer items or raise HAREFLOW_MAX_MAP_LENGTH"
            )
        )
    return Plan(length=length)


def new_instance_row(run: Any, task: SerializedTask, map_index: int, now: datetime) -> dict[str, Any]:
    """The columns of a task instance not yet run: a plain task's (``map_index`` -1) or one mapped
    instance's, with the task's queue, priority and pool."""
    return {
        "run_pk": run.id,
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "task_id": task.task_id,
        "map_index": map_index,
        "state": TaskState.NONE,
        "try_number": 0,
        "max_tries": task.retries + 1,
        "queue": task.queue,
        "priority": task.priority,
        "pool": task.pool,
        "pool_slots": task.pool_slots,
        "updated_at": now,
    }


def replace_placeholder(
    session: Session,
    *,
    placeholder_id: int,
    run: Any,
    task: SerializedTask,
    length: int,
    now: datetime,
) -> bool:
    """Delete the placeholder (only if it is still waiting on its first try) and insert ``length``
    instances in state ``none``; return False, inserting nothing, if the placeholder moved on."""
    deleted = session.execute(
        delete(_TI).where(
            _TI.c.id == placeholder_id,
            _TI.c.map_index == -1,
            _TI.c.state == TaskState.NONE,
            _TI.c.try_number == 0,
        )
    ).rowcount
    if deleted != 1:
        return False
    rows = [new_instance_row(run, task, i, now) for i in range(length)]
    for start in range(0, len(rows), INSERT_CHUNK):
        session.execute(insert(_TI), rows[start : start + INSERT_CHUNK])
    return True


class Elements:
    """Each mapped task instance's own keyword arguments, for the task messages of one run."""

    def __init__(self, tasks: Mapping[str, SerializedTask], results: Mapping[str, Any]) -> None:
        self._tasks = tasks
        self._results = results
        self._lists: dict[str, tuple[ExpandSpec, list[list[Any]]] | None] = {}

    def of(self, task_id: str, map_index: int) -> dict[str, Any] | None:
        """The element of instance ``map_index`` of ``task_id``; None for a task that is not mapped
        (or an instance past the end of its upstream's current output)."""
        task = self._tasks[task_id]
        if map_index < 0 or not task.is_mapped:
            return None
        if task_id not in self._lists:
            spec = task.expand_spec
            assert spec is not None
            try:
                self._lists[task_id] = (spec, source_lists(spec, self._results))
            except ExpansionError:
                self._lists[task_id] = None
        cached = self._lists[task_id]
        return None if cached is None else element(cached[0], cached[1], map_index)


@dataclass(frozen=True)
class Revision:
    """How a cleared mapped task's instances change for a new expansion length."""

    #: map indexes to create
    create: tuple[int, ...] = ()
    #: existing instances (map indexes) that wait again (removed by an earlier, shorter expansion)
    restore: tuple[int, ...] = ()
    #: waiting instances (map indexes) past the new length
    remove: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.create or self.restore or self.remove)


def revision(length: int, states: Mapping[int, str]) -> Revision:
    """What expanding again to ``length`` does to instances in ``states`` (map index -> state,
    each ``none`` or ``removed``). ``length`` 0 is not a revision: the caller skips the instances."""
    return Revision(
        create=tuple(i for i in range(length) if i not in states),
        restore=tuple(sorted(i for i, s in states.items() if i < length and s == TaskState.REMOVED)),
        remove=tuple(sorted(i for i, s in states.items() if i >= length and s == TaskState.NONE)),
    )
