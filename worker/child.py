"""What runs inside a task process: load the task from its DAG file, run it, report over a pipe.

Each task runs in a process of its own, forked from the zygote (``hareflow.worker.zygote``) and
given one end of a fresh duplex ``multiprocessing`` pipe. Protocol over that pipe (Python objects
between two local processes, never the wire); every record names the request's token, and the
worker discards (and logs) a record naming another one:
  task process -> worker: ``("started", token, pid)``
  worker -> task process: ``("run", token, task_message_dict, max_result_bytes)``
  task process -> worker: ``("lookup", token, n, kind, name)`` when the task asks for a connection
                          or variable; the worker answers ``("lookup_reply", token, n, reply)``
                          (``reply`` holds the ``lookup_reply`` message's fields) and the task
                          waits for that answer (see ``hareflow.worker.lookups``)
  task process -> worker: ``("log", token, text)`` any number of times, ``("rendered", token,
                          json)`` once its template fields are rendered (tasks having some), then,
                          for a try that decided more than its outcome, ``("extras", token, {...})``
                          (the result message's optional fields: ``no_retry``, ``skip_task_ids``,
                          ``skip_reason``; ``reschedule_at`` and ``first_poke_at`` for a sensor
                          rescheduling itself), then ``("done", token, outcome, result_json, error)``

Every text that leaves the process (log, error, rendered fields) is first masked: secret values
the task has looked up read ``***`` (``hareflow.common.secrets.masking``).

The process leads its own session and process group; it exits right after ``done``, and the zygote
then kills whatever it started (see the zygote's docstring). It dies with the zygote
(``PR_SET_PDEATHSIG``), and the zygote ends every task when the worker's end of its control socket
closes, so a task never runs on as an orphan of a dead worker.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import traceback
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from hareflow.common.secrets.masking import masker

LOG_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
log = logging.getLogger(__name__)


class _PipeWriter(io.TextIOBase):
    """A text stream whose writes become ``("log", token, text)`` records to the worker."""

    def __init__(self, conn: Connection, token: str) -> None:
        self._conn = conn
        self._token = token

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._conn.send(("log", self._token, masker.redact(text)))
        return len(text)

    def flush(self) -> None:
        pass


class CurrentStderr(io.TextIOBase):
    """Logging handlers write wherever sys.stderr points now, i.e. to the pipe while a task runs."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return sys.stderr.write(text)


def task_main(fd: int, token: str) -> int:
    """Body of one task process: announce itself, run the one task it is sent, report, return."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when tasks stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    conn = Connection(fd)
    try:
        conn.send(("started", token, os.getpid()))
        request = conn.recv()
    except (EOFError, OSError):
        return 1
    if not (isinstance(request, tuple) and len(request) == 4 and request[:2] == ("run", token)):
        log.error("task process %s: unexpected request %.200r", token, request)
        return 1
    _, _, payload, max_result_bytes = request
    outcome, result_json, error = run_task(payload, max_result_bytes, conn, token)
    try:
        conn.send(("done", token, outcome, result_json, error))
    except (BrokenPipeError, OSError):
        return 1
    return 0


class TaskTimeout(Exception):
    """Raised inside a task process when its try runs past ``execution_timeout``."""


def timeout_text(seconds: float) -> str:
    return f"Task exceeded its execution_timeout of {seconds:g}s and was killed"


def _on_alarm(signum: int, frame: Any) -> None:
    raise TaskTimeout(_alarm_text)


_alarm_text = ""


def _arm_timeout(payload: dict[str, Any]) -> None:
    """Interrupt the task itself when its execution_timeout passes, so its callbacks still run.

    SIGALRM is the task process's own: it raises ``TaskTimeout`` in the main thread at the next
    bytecode. Code stuck in C without returning to Python does not see it; the worker's kill,
    ``task_timeout_grace`` seconds later, ends such a task.
    """
    global _alarm_text
    value = payload.get("execution_timeout")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return
    _alarm_text = timeout_text(float(value))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(value))


def _disarm_timeout() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


def run_task(
    payload: dict[str, Any],
    max_result_bytes: int,
    conn: Connection,
    token: str = "",
    loaded: Any = None,
    resolver: Any = None,
) -> tuple[str, str | None, str | None]:
    """Run one try (see :func:`_run_task`), its connection and variable lookups going to
    ``resolver`` (default: to the worker over ``conn``), its error text and return value masked."""
    from hareflow.common.secrets.client import RemoteResolver, set_resolver

    previous = set_resolver(resolver if resolver is not None else RemoteResolver(pipe_ask(conn, token)))
    try:
        outcome, result_json, error = _run_task(payload, max_result_bytes, conn, token, loaded)
    finally:
        set_resolver(previous)
    # The return value too: it is stored and shown like a log (a BashTask's is its last output line).
    # Downstream tasks that need the secret look the connection up themselves.
    if result_json:
        result_json = masker.redact(result_json)
    return outcome, result_json, masker.redact(error) if error else error


def pipe_ask(conn: Connection, token: str) -> Any:
    """The task side of a lookup: ask the worker over the pipe and wait for its answer (the
    worker always answers, within its ``lookup_timeout``; a closed pipe means it is gone)."""
    import itertools
    import threading

    from hareflow.common.secrets.errors import LookupUnavailable

    lock = threading.Lock()
    numbers = itertools.count(1)

    def ask(kind: str, name: str) -> dict[str, Any]:
        with lock:
            n = next(numbers)
            try:
                conn.send(("lookup", token, n, kind, name))
                while True:
                    item = conn.recv()
                    if isinstance(item, tuple) and len(item) == 4 and item[:3] == ("lookup_reply", token, n):
                        return item[3] if isinstance(item[3], dict) else {"ok": False, "error": "bad reply"}
            except (EOFError, OSError):
                raise LookupUnavailable(f"the worker went away while looking up {kind} {name!r}") from None

    return ask


def _run_task(
    payload: dict[str, Any], max_result_bytes: int, conn: Connection, token: str = "", loaded: Any = None
) -> tuple[str, str | None, str | None]:
    """Run one try; return ``(outcome, result_json, error)``. Never raises.

    A task raising ``SkipTask`` ends ``skipped`` (the message is the reason); one raising
    ``FailTask`` fails with no retry; a branch or short-circuit success names the downstream tasks
    it skips, and a success of a task with outlets names the asset events to record (with the
    ``extra`` the task set). Those extras are sent as one ``extras`` record first.

    ``loaded`` is the task object when the caller has it already (``dags test`` runs a DAG it has
    built); otherwise the task is loaded from the message's DAG file.
    """
    from hareflow.common.dag import encode_result
    from hareflow.common.dag.assets import outlet_payload
    from hareflow.common.dag.branching import downstream_skips
    from hareflow.common.dag.callbacks import call_callback
    from hareflow.common.dag.context import context_from_message
    from hareflow.common.dag.exceptions import FailTask, RescheduleTask, SkipTask
    from hareflow.common.dag.loader import get_task
    from hareflow.common.dag.templating import rendered_json, rendered_task

    key = payload["key"]
    writer = _PipeWriter(conn, token)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = writer  # type: ignore[assignment]
    ctx = None
    task = None
    try:
        _arm_timeout(payload)
        task = loaded if loaded is not None else get_task(payload["dag_file"], key["dag_id"], key["task_id"])
        ctx = context_from_message(payload)
        task, rendered = rendered_task(task, ctx)
        if rendered:
            conn.send(("rendered", token, masker.redact(rendered_json(rendered))))
        value = task.execute(ctx)
        _disarm_timeout()
        decision = downstream_skips(task, value)
        result_json = encode_result(value, max_result_bytes, task_id=key["task_id"])
        outlet_events = outlet_payload(getattr(task, "outlets", ()), ctx.outlet_events)
    except RescheduleTask as exc:
        # A sensor's poke found nothing and it returns its slot: not a failure, no callback.
        _disarm_timeout()
        when = datetime.fromtimestamp(exc.reschedule_at, UTC).isoformat(timespec="milliseconds")
        print(f"Rescheduling: the sensor pokes again at {when}", file=sys.stderr)
        _send_extras(conn, token, {"reschedule_at": exc.reschedule_at, "first_poke_at": exc.first_poke_at})
        sys.stdout, sys.stderr = saved
        return "up_for_reschedule", None, None
    except SkipTask as exc:
        _disarm_timeout()
        reason = str(exc) or "the task skipped itself"
        print(f"Skipping the task: {reason}", file=sys.stderr)
        sys.stdout, sys.stderr = saved
        return "skipped", None, reason
    except BaseException as exc:  # noqa: BLE001 - a task may raise anything, even SystemExit
        _disarm_timeout()
        if isinstance(exc, TaskTimeout):
            error = str(exc)
            print(f"\n{error}\n", end="", file=sys.stderr)
        else:
            error = _describe(exc)
            print(user_traceback(exc), end="", file=sys.stderr)
        no_retry = isinstance(exc, FailTask)
        if no_retry:
            print("FailTask: no further retry", file=sys.stderr)
            _send_extras(conn, token, {"no_retry": True})
        if task is not None and ctx is not None:
            retrying = key["try_number"] < payload["max_tries"] and not no_retry
            name = "on_retry_callback" if retrying else "on_failure_callback"
            call_callback(getattr(task, name, None), ctx, exc, name)
        sys.stdout, sys.stderr = saved
        return "failed", None, error
    extras: dict[str, Any] = {}
    if decision is not None:
        print(f"{decision.reason}; skipping: {', '.join(decision.task_ids)}", file=sys.stderr)
        extras.update(skip_task_ids=list(decision.task_ids), skip_reason=decision.reason)
    if outlet_events:
        extras["outlet_events"] = outlet_events
    if extras:
        _send_extras(conn, token, extras)
    call_callback(getattr(task, "on_success_callback", None), ctx, None, "on_success_callback")
    sys.stdout, sys.stderr = saved
    return "success", result_json, None


def _send_extras(conn: Connection, token: str, extras: dict[str, Any]) -> None:
    try:
        conn.send(("extras", token, extras))
    except (BrokenPipeError, OSError):
        pass  # the worker is gone; the done record fails the same way


_INTERNAL_DIRS = tuple(
    str(Path(p).resolve()) + os.sep
    for p in (Path(__file__).parent, Path(__file__).parent.parent / "common" / "dag")
)


def user_traceback(exc: BaseException) -> str:
    """The traceback a task's author needs: their frames, without hareflow's own plumbing."""
    te = traceback.TracebackException.from_exception(exc)
    frames = [f for f in te.stack if not str(Path(f.filename).resolve()).startswith(_INTERNAL_DIRS)]
    te.stack = traceback.StackSummary.from_list(frames)
    return "".join(te.format())


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 4000 else text[:4000] + "..."
