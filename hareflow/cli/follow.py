"""``hareflow dags trigger --wait``: print each task instance's state as it changes, until the run ends.

With the RabbitMQ executor the command follows the state events every results consumer and
scheduler broadcasts (the ones the web UI streams), so what it costs grows with the events of its
run, not with the run's width times its duration: the run is read in full once after subscribing
(nothing that happened before is missed), once more when the run ends, and every
``FULL_READ_EVERY`` seconds in between, because events are best effort (a relay may drop some under
load). Without a broker to listen to (the local executor lives inside ``hareflow standalone``) it
reads the run every ``POLL_EVERY`` seconds, as before.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy import select

from hareflow.common.db import DagRun, TaskInstance
from hareflow.common.messages import StateEvent
from hareflow.common.states import RUN_FINISHED

log = logging.getLogger(__name__)

#: Seconds between full reads of the run while events are followed (the safety net).
FULL_READ_EVERY = 5.0
#: Seconds between reads of the run when there is no broker to follow.
POLL_EVERY = 0.2
#: States whose first line of error is printed with them.
_WITH_ERROR = ("failed", "up_for_retry")

#: (task id, map index) -> (state, try number) as last printed.
Seen = dict[tuple[str, int], tuple[str, int]]


class RunGone(Exception):
    """The run was deleted while it was followed."""


class RunWatch:
    """What has been printed of one run, and the reads that bring it up to date."""

    def __init__(self, sessions: Any, run_pk: int, echo: Callable[[str], None] = click.echo) -> None:
        self.sessions = sessions
        self.run_pk = run_pk
        self.echo = echo
        self.seen: Seen = {}
        self.run_id = "?"
        self.dag_id = "?"

    def read_all(self) -> str:
        """Read the whole run, print what changed since the last print; the run's state."""
        ti = TaskInstance.__table__.c
        with self.sessions() as session:
            run = session.execute(
                select(DagRun.run_id, DagRun.dag_id, DagRun.state).where(DagRun.id == self.run_pk)
            ).first()
            if run is None:
                raise RunGone()
            self.run_id, self.dag_id = run.run_id, run.dag_id
            rows = session.execute(
                select(ti.id, ti.task_id, ti.map_index, ti.state, ti.try_number)
                .where(ti.run_pk == self.run_pk)
                .order_by(ti.id)
            ).all()
            changed = [r for r in rows if self.seen.get((r.task_id, r.map_index)) != (r.state, r.try_number)]
            errors = self._errors(session, [r.id for r in changed if r.state in _WITH_ERROR])
        for r in changed:
            self._print(r.task_id, r.map_index, r.state, r.try_number, errors.get(r.id))
        return str(run.state)

    def apply(self, event: StateEvent) -> None:
        """Print a task event of this run that changes what was printed (reading its error if it
        has one); an earlier try's late event changes nothing."""
        key = (event.task_id or "", event.map_index)
        before = self.seen.get(key)
        if before == (event.state, event.try_number) or (before and event.try_number < before[1]):
            return
        error = None
        if event.state in _WITH_ERROR:
            with self.sessions() as session:
                error = session.scalar(
                    select(TaskInstance.error).where(
                        TaskInstance.run_pk == self.run_pk,
                        TaskInstance.task_id == key[0],
                        TaskInstance.map_index == key[1],
                    )
                )
        self._print(key[0], key[1], event.state, event.try_number, error)

    def _errors(self, session: Any, ti_ids: list[int]) -> dict[int, str | None]:
        if not ti_ids:
            return {}
        rows = session.execute(select(TaskInstance.id, TaskInstance.error).where(TaskInstance.id.in_(ti_ids)))
        return {ti_id: error for ti_id, error in rows}

    def _print(self, task_id: str, map_index: int, state: str, try_number: int, error: str | None) -> None:
        self.seen[(task_id, map_index)] = (state, try_number)
        name = task_id if map_index < 0 else f"{task_id}[{map_index}]"
        extra = f" (try {try_number})" if try_number > 1 else ""
        err = f": {error.splitlines()[0]}" if error and state in _WITH_ERROR else ""
        self.echo(f"{time.strftime('%H:%M:%S')}  {name:<24} {state}{extra}{err}")


def follow_run(
    settings: Any, sessions: Any, run_pk: int, dag_id: str, run_id: str, timeout: float | None
) -> int:
    """Follow one run until it ends: 0 when it succeeded, 1 when it failed, was deleted or the
    ``timeout`` (seconds) passed first. KeyboardInterrupt propagates (the caller says the run goes on)."""
    watch = RunWatch(sessions, run_pk)
    deadline = time.monotonic() + timeout if timeout else None
    events, executor = _subscribe(settings, dag_id, run_id)
    try:
        state = watch.read_all()
        last_full = time.monotonic()
        while state not in RUN_FINISHED:
            if deadline is not None and time.monotonic() > deadline:
                click.echo("gave up waiting (--timeout); the run goes on")
                return 1
            if events is None:
                time.sleep(POLL_EVERY)
                state = watch.read_all()
                continue
            wait = FULL_READ_EVERY - (time.monotonic() - last_full)
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            try:
                event = events.get(timeout=max(0.0, wait))
            except queue.Empty:
                event = None
            if event is not None and event.kind == "task":
                watch.apply(event)
                continue
            if event is None or event.state in RUN_FINISHED:
                state = watch.read_all()  # the safety net, or the run's end: everything printed
                last_full = time.monotonic()
        click.echo(f"run {watch.run_id}: {state}")
        return 0 if state == "success" else 1
    except RunGone:
        click.echo("the run was deleted")
        return 1
    finally:
        if executor is not None:
            executor.close()


def _subscribe(settings: Any, dag_id: str, run_id: str) -> tuple[queue.Queue[StateEvent] | None, Any]:
    """A queue that receives the run's state events from now on (and the executor delivering
    them), or (None, None) where there is no broker to follow or it cannot be reached: then the
    run is read every POLL_EVERY seconds."""
    if settings.effective_executor != "rabbitmq":
        return None, None
    from hareflow.common.broker import make_executor

    executor = make_executor(settings, connection_name="hareflow-cli-follow")
    try:
        executor.start(timeout=5)  # type: ignore[call-arg]
        events: queue.Queue[StateEvent] = queue.Queue()

        def mine(event: StateEvent) -> None:
            if event.run_id == run_id and event.dag_id == dag_id:
                events.put(event)

        executor.subscribe_events(mine)
    except Exception:  # noqa: BLE001 - following still works, by reading the run
        log.debug("cannot follow the run's events; reading it every %s s", POLL_EVERY, exc_info=True)
        executor.close()
        return None, None
    return events, executor
