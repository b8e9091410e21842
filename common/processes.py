"""Process-tree helpers shared by the warm forking servers (the worker's zygote, the DAG parse server).

Linux only where it matters (``prctl``, ``/proc``); elsewhere they do nothing or find nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import select
import signal
import socket
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
MAX_RECORD = 64 * 1024


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


def kill_tree_leader(pid: int) -> None:
    """Kill a live forked child and its process group (the child itself may not lead it yet)."""
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        with contextlib.suppress(OSError):
            kill()


class ForkServer:
    """A warm single-threaded process that forks one short-lived child per request.

    Records are JSON objects over a ``SOCK_SEQPACKET`` socket: ``{"op": "spawn", "token": T, ...}``
    with file descriptors attached (``SCM_RIGHTS``) forks a child running :meth:`child_main`;
    ``{"op": "kill", "token": T}`` kills that child's process group; end of file stops the server,
    killing every child. Once per spawn the server answers ``{"op": "exit", "token": T, "status":
    S, "error": E}`` after the child is reaped (``status`` is the raw wait status, or null with
    ``error`` when no process could be forked).

    Every child leads its own session and process group and is a child subreaper; the server is
    a subreaper too. When a child exits, however it exits, the server kills its process group while
    the group id is still held by the unreaped process, and any other child of the server (a
    descendant the child left behind, re-parented here) is killed as a straggler."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._children: dict[int, str] = {}  # pid of a live child -> its token
        self._pid = os.getpid()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def prepare(self, request: dict[str, Any]) -> None:
        """Run in the server before a child is forked for ``request`` (default: nothing)."""

    def child_main(self, request: dict[str, Any], fds: list[int]) -> int:
        """Run in the forked child; its return value is the child's exit status."""
        raise NotImplementedError

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
            self.prepare(request)
            self._spawn(request, fds)
        elif request["op"] == "kill":
            for pid, token in list(self._children.items()):
                if token == request["token"]:
                    kill_tree_leader(pid)
        return True

    def _spawn(self, request: dict[str, Any], fds: list[int]) -> None:
        token = request["token"]
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            self._send({"op": "exit", "token": token, "status": None, "error": f"fork failed: {exc}"})
            return
        if pid == 0:  # the child: never returns into this loop
            code = 70
            try:
                self._control.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                set_subreaper()
                # Killed with the server; the server itself ends every child when its owner goes.
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != self._pid:
                    os._exit(1)  # the server died before the line above took effect
                code = self.child_main(request, fds)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        self._children[pid] = token

    def _reap(self) -> None:
        """Reap every exited child; for a live child, kill its group first and report it."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if info is None:
                break
            pid = info.si_pid
            token = self._children.pop(pid, None)
            if token is not None:
                # The unreaped process still holds its pid, so the group id cannot name anyone else.
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            if token is not None:
                self._send({"op": "exit", "token": token, "status": status, "error": None})
        self._kill_stragglers()

    def _kill_stragglers(self) -> None:
        """Children that are not live children were left behind by a child that ended."""
        for pid in children_of(self._pid):
            if pid not in self._children:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def _send(self, record: dict[str, Any]) -> None:
        try:
            self._control.send(json.dumps(record).encode())
        except OSError:
            pass  # the owner is gone; the control socket's end of file stops us next

    def _stop(self) -> None:
        """The owner is gone or stopping: kill every child and everything they left, then exit."""
        for pid in list(self._children):
            kill_tree_leader(pid)
        while True:
            for pid in children_of(os.getpid()):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        sys.stdout.flush()
