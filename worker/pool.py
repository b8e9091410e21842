"""The worker's side of its task processes: one zygote, one fresh process per task.

:class:`TaskProcessPool` starts the zygote (``hareflow.worker.zygote``) from the multiprocessing
fork server, which preloads hareflow, so neither ever holds the worker's threads or broker
connection. Slots ask it for a :class:`TaskProcess` per task; a reader thread owns the zygote's
control socket and hands each exit record to the slot that waits for it. If the zygote dies it
is started again on the next spawn.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import threading
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

from hareflow.worker.zygote import zygote_main

log = logging.getLogger(__name__)
_tokens = itertools.count(1)


class TaskStartError(RuntimeError):
    """A task could not be handed to a task process; the reason is user-facing."""


def pool_context() -> BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        [
            "hareflow.worker.zygote",
            "hareflow.worker.child",
            "hareflow.common.dag",
            "hareflow.common.dag.loader",
        ]
    )
    return ctx


def describe_exit(status: int | None) -> str:
    """``exit code 1`` or ``killed by signal SIGKILL`` for a raw wait status."""
    if status is None:
        return "exit status unknown"
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = str(-code)
    return f"killed by signal {name}"


class _ZygoteClient:
    """One zygote process and the reader of its exit records."""

    def __init__(self, ctx: BaseContext, dags_folder: str, preload_timeout: float) -> None:
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = ctx.Process(  # type: ignore[attr-defined]
            target=zygote_main,
            args=(theirs, dags_folder, preload_timeout),
            name="hareflow-zygote",
            daemon=True,
        )
        self.process.start()
        theirs.close()
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._exits: dict[str, dict[str, Any]] = {}
        self._waiting: set[str] = set()
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="hareflow-zygote-reader", daemon=True)
        self._reader.start()

    def spawn(self, token: str, fd: int, dag_file: str) -> None:
        with self._cond:
            self._waiting.add(token)
        self._send({"op": "spawn", "token": token, "dag_file": dag_file}, [fd])

    def kill(self, token: str) -> None:
        self._send({"op": "kill", "token": token})

    def _send(self, record: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(record).encode()
        try:
            with self._send_lock:
                if fds:
                    socket.send_fds(self._sock, [data], fds)
                else:
                    self._sock.send(data)
        except OSError as exc:
            with self._cond:
                self.alive = False
                self._cond.notify_all()
            raise TaskStartError(f"the task-process server is gone ({exc})") from None

    def wait_exit(self, token: str, timeout: float) -> dict[str, Any] | None:
        """The exit record of ``token``'s process, or None if it has not exited within ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: token in self._exits or not self.alive, timeout)
            record = self._exits.pop(token, None)
            if record is not None or not self.alive:
                self._waiting.discard(token)
            return record

    def has_exited(self, token: str) -> bool:
        with self._cond:
            return token in self._exits

    def forget(self, token: str) -> None:
        with self._cond:
            self._waiting.discard(token)
            self._exits.pop(token, None)

    def _read(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            record = json.loads(data)
            with self._cond:
                if record.get("token") in self._waiting:
                    self._exits[record["token"]] = record
                    self._cond.notify_all()
        with self._cond:
            self.alive = False
            self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Close the control socket: the zygote kills what is left and exits."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        self._reader.join(timeout)
        self._sock.close()


class TaskProcessPool:
    """Hands out one fresh :class:`TaskProcess` per task; thread-safe.

    With ``spares`` > 0 it keeps that many task processes forked ahead, each for the DAG file of a
    task that just started (the next task is most often from the same file): a task then finds
    its process already waiting, and the fork is off its path. A spare has run nothing; one forked
    before its file changed imports the new version itself.
    """

    def __init__(
        self,
        ctx: BaseContext | None = None,
        *,
        dags_folder: str = "",
        preload_timeout: float = 10.0,
        spares: int = 0,
    ) -> None:
        self._ctx = ctx or pool_context()
        self._dags_folder = dags_folder
        self._preload_timeout = preload_timeout
        self._max_spares = spares
        self._lock = threading.Lock()
        self._zygote: _ZygoteClient | None = None
        self._live: dict[str, TaskProcess] = {}
        self._spares: collections.deque[TaskProcess] = collections.deque()

    def start(self) -> None:
        self._current()

    def _current(self) -> _ZygoteClient:
        with self._lock:
            if self._zygote is None or not self._zygote.alive:
                if self._zygote is not None:
                    log.warning("the task-process server died; starting a new one")
                    self._zygote.close()
                self._zygote = _ZygoteClient(self._ctx, self._dags_folder, self._preload_timeout)
            return self._zygote

    def _spawn(self, dag_file: str) -> TaskProcess:
        token = f"{os.getpid()}-{next(_tokens)}"
        ours, theirs = multiprocessing.Pipe(duplex=True)
        zygote = self._current()
        try:
            try:
                zygote.spawn(token, theirs.fileno(), dag_file)
            except TaskStartError:  # it died just now: once more with a new one
                zygote = self._current()
                zygote.spawn(token, theirs.fileno(), dag_file)
        except TaskStartError:
            ours.close()
            raise
        finally:
            theirs.close()
        proc = TaskProcess(token, ours, zygote, dag_file)
        with self._lock:
            self._live[token] = proc
        return proc

    def _take_spare(self, dag_file: str) -> TaskProcess | None:
        with self._lock:
            for proc in list(self._spares):
                usable = proc.usable() and proc._zygote is self._zygote
                if usable and proc.dag_file != dag_file:
                    continue
                self._spares.remove(proc)
                if usable:
                    return proc
                self._live.pop(proc.token, None)
                proc.discard()
        return None

    def _replenish(self, dag_file: str) -> None:
        if self._max_spares <= 0:
            return
        with self._lock:
            evicted = self._spares.popleft() if len(self._spares) >= self._max_spares else None
            if evicted is not None:
                self._live.pop(evicted.token, None)
        if evicted is not None:
            evicted.discard()
        try:
            spare = self._spawn(dag_file)
        except TaskStartError as exc:
            log.warning("could not fork a spare task process: %s", exc)
            return
        with self._lock:
            self._spares.append(spare)

    def start_task(self, request_for: Any, dag_file: str = "") -> TaskProcess:
        """Hand a task process its request (``request_for(token)``, pickled before any process
        is used: a request that cannot be pickled fails here)."""
        proc = self._take_spare(dag_file)
        if proc is None:
            proc = self._spawn(dag_file)
        try:
            blob = pickle.dumps(request_for(proc.token), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # e.g. RecursionError: a conf nested too deep to pickle
            self.finished(proc)
            proc.discard()
            raise TaskStartError(
                f"the task could not be handed to a task process: {type(exc).__name__}: {exc}"
            ) from None
        try:
            proc.conn.send_bytes(blob)
        except OSError:
            pass  # it died at once: its exit record says how
        self._replenish(dag_file)
        return proc

    def finished(self, proc: TaskProcess) -> None:
        with self._lock:
            self._live.pop(proc.token, None)

    def kill_all(self) -> None:
        with self._lock:
            live = list(self._live.values())
        for proc in live:
            proc.kill()

    def close(self) -> None:
        with self._lock:
            zygote, self._zygote = self._zygote, None
            spares = list(self._spares)
            self._spares.clear()
        for proc in spares:
            proc.close()
        if zygote is not None:
            zygote.close()


class TaskProcess:
    """The worker's end of one task process: its pipe, its token, its fate."""

    def __init__(self, token: str, conn: Connection, zygote: _ZygoteClient, dag_file: str = "") -> None:
        self.token = token
        self.conn = conn
        self.dag_file = dag_file
        self.pid: int | None = None
        self.extras: dict[str, Any] = {}  # the optional result fields the task sent
        self.rendered_json: str | None = None  # the try's rendered template fields, once sent
        self._zygote = zygote
        self._send_lock = threading.Lock()

    def send(self, record: object) -> None:
        """Send a record to the task process (from any thread: lookup replies come from relay threads)."""
        with self._send_lock:
            self.conn.send(record)

    def usable(self) -> bool:
        """An unused spare that has not died on its own."""
        return self._zygote.alive and not self._zygote.has_exited(self.token)

    def discard(self) -> None:
        """Kill an unused process and stop listening for it."""
        with contextlib.suppress(TaskStartError):
            self._zygote.kill(self.token)
        self.forget()
        self.close()

    def kill(self) -> None:
        """Kill the task process and its process group (the zygote then kills any stragglers)."""
        try:
            self._zygote.kill(self.token)
        except TaskStartError:
            if self.pid is not None:  # the zygote is gone: the task process is ours to kill
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, signal.SIGKILL)

    def wait_exit(self, timeout: float = 10.0) -> str:
        """Wait for the process to be reaped; describe how it ended."""
        record = self._zygote.wait_exit(self.token, timeout)
        if record is None:
            if not self._zygote.alive:
                return "exit status unknown: the task-process server died"
            self._zygote.forget(self.token)
            return f"exit status unknown after {timeout:g}s"
        if record.get("error"):
            return str(record["error"])
        return describe_exit(record.get("status"))

    def forget(self) -> None:
        """Stop waiting for this process's exit record (it said it is done)."""
        self._zygote.forget(self.token)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
