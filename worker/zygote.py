"""The task-process server (a zygote): a warm process that forks one fresh process per task.

The worker starts one zygote (from the multiprocessing fork server, so it inherits none of the
worker's threads or broker connections). It imports hareflow and the DAG loader once, and imports
each DAG file the first time one of its tasks is asked for (again when the file changes), so a
task process starts with its DAG already built: a fork instead of an interpreter start-up and a
DAG file import. Every task runs in a process forked from it, which ends with its task: nothing a
task changes (environment, working directory, module globals, loaded modules) outlives it, and
every task of a file starts from the same state, the one its import left.

A DAG file whose import takes longer than ``preload_timeout`` is interrupted and left to each task
process to import on its own (the zygote does not try it again until the file changes): a slow or
hanging import must not hold up the tasks of other files.

Control protocol, one JSON object per record over a ``SOCK_SEQPACKET`` socket pair:
  worker -> zygote: ``{"op": "spawn", "token": T, "dag_file": F}`` with the task's pipe end attached
                    (``SCM_RIGHTS``); ``{"op": "kill", "token": T}``; end of file: stop
  zygote -> worker: ``{"op": "exit", "token": T, "status": S, "error": E}`` once per spawn,
                    after the task process is reaped (``status`` is the raw wait status, or
                    null with ``error`` when no process could be forked)

What a task leaves behind: every task process leads its own session and process group and is a
child subreaper (``PR_SET_CHILD_SUBREAPER``), so while it runs, descendants that detach themselves
(``setsid`` and a double fork) are re-parented to it instead of to init. The zygote is a subreaper
too. When a task process exits, however it exits, the zygote kills its process group while the
group id is still held by the unreaped process, and the task's remaining descendants (all of them
now children of the zygote) are killed as stragglers: any child of the zygote that is not a live
task process is one. Only a descendant that leaves this process tree by other means (handed to a
system service, a container runtime, ``at``) escapes; that needs cgroups, which a worker does not
require.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import logging
import os
import select
import signal
import socket
import sys
from typing import Any

from hareflow.common.dag.loader import add_dags_folder_to_path, load_dag_file_cached
from hareflow.worker.child import LOG_FORMAT, CurrentStderr, task_main

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
MAX_RECORD = 64 * 1024
log = logging.getLogger(__name__)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def prctl(option: int, value: int) -> None:
    """``prctl(2)`` on Linux; a no-op where there is none."""
    libc = _libc()
    if libc is not None and hasattr(libc, "prctl"):
        libc.prctl(option, value, 0, 0, 0)


def set_subreaper() -> None:
    """Make orphaned descendants of this process its children (Linux)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (a single-threaded process), from ``/proc``."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class _PreloadTimeout(BaseException):
    """Raised by SIGALRM in a DAG file import that ran over its budget (a BaseException, so the
    loader's own handler does not turn it into a cached import error)."""


def _alarm(signum: int, frame: object) -> None:
    raise _PreloadTimeout()


def zygote_main(control: socket.socket, dags_folder: str, preload_timeout: float = 10.0) -> None:
    """Serve spawn and kill requests until the worker's end of ``control`` closes."""
    os.setsid()  # a signal to the worker's process group does not reach here: the worker decides
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    set_subreaper()
    handler = logging.StreamHandler(CurrentStderr())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    add_dags_folder_to_path(dags_folder or None)  # helper modules beside the DAGs import
    _Zygote(control, dags_folder, preload_timeout).serve()


class _Zygote:
    def __init__(self, control: socket.socket, dags_folder: str, preload_timeout: float) -> None:
        self._control = control
        self._dags_folder = dags_folder
        self._preload_timeout = preload_timeout
        self._slow: dict[str, tuple[int, int]] = {}  # DAG files not to import here, at (mtime, size)
        self._tasks: dict[int, str] = {}  # pid of a live task process -> its token
        self._pid = os.getpid()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def serve(self) -> None:
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        while True:
            readable, _, _ = select.select([self._control, self._wake_r], [], [])
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                self._reap()
            if self._control in readable and not self._serve_one():
                self._stop()
                return

    def _serve_one(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self._control, MAX_RECORD, 4)
        except OSError:
            return False
        if not data:
            return False
        request: dict[str, Any] = json.loads(data)
        if request["op"] == "spawn":
            self._preload(request.get("dag_file") or "")
            self._spawn(request["token"], fds[0])
            for extra in fds[1:]:
                os.close(extra)
        elif request["op"] == "kill":
            for pid, token in list(self._tasks.items()):
                if token == request["token"]:
                    _kill_task(pid)
        return True

    def _preload(self, path: str) -> None:
        """Import ``path`` here (cached while unchanged) so that task processes inherit it built."""
        try:
            stat = os.stat(path)
        except OSError:
            return  # the task process reports it
        if self._slow.get(path) == (stat.st_mtime_ns, stat.st_size):
            return
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, self._preload_timeout)
        try:
            load_dag_file_cached(path)
        except _PreloadTimeout:
            log.warning(
                "importing %s took over %gs; its task processes will import it themselves",
                path,
                self._preload_timeout,
            )
            self._slow[path] = (stat.st_mtime_ns, stat.st_size)
        except Exception:  # noqa: BLE001 - never here: the loader returns errors; the task reports them
            log.exception("importing %s failed in the task-process server", path)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        gc.freeze()  # what is here now stays untouched by the collector: fewer copied pages per fork

    def _spawn(self, token: str, fd: int) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(fd)
            self._send({"op": "exit", "token": token, "status": None, "error": f"fork failed: {exc}"})
            return
        if pid == 0:  # the task process: never returns into this loop
            code = 70
            try:
                self._control.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                set_subreaper()
                # Killed with the zygote; the zygote itself ends every task when the worker goes.
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != self._pid:
                    os._exit(1)  # the zygote died before the line above took effect
                code = task_main(fd, token)
            finally:
                os._exit(code)
        os.close(fd)
        self._tasks[pid] = token

    def _reap(self) -> None:
        """Reap every exited child; for a task process, kill its group first and report it."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if info is None:
                break
            pid = info.si_pid
            token = self._tasks.pop(pid, None)
            if token is not None:
                # The unreaped process still holds its pid, so the group id cannot name anyone else.
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            if token is not None:
                self._send({"op": "exit", "token": token, "status": status, "error": None})
        self._kill_stragglers()

    def _kill_stragglers(self) -> None:
        """Children that are not live task processes were left behind by a task that ended."""
        for pid in children_of(self._pid):
            if pid not in self._tasks:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def _send(self, record: dict[str, Any]) -> None:
        try:
            self._control.send(json.dumps(record).encode())
        except OSError:
            pass  # the worker is gone; the control socket's end of file stops us next

    def _stop(self) -> None:
        """The worker is gone or stopping: kill every task and everything they left, then exit."""
        for pid in list(self._tasks):
            _kill_task(pid)
        while True:
            for pid in children_of(os.getpid()):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        sys.stdout.flush()


def _kill_task(pid: int) -> None:
    """Kill a live task process and its process group (the process itself may not lead it yet)."""
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        with contextlib.suppress(OSError):
            kill()
