"""The DAG processor's side of the parse server (``common.dag.parse_server``).

One server process per processor, started on the first parse: a fresh ``python -P`` interpreter
(the scheduler's threads, connections and modules are not inherited) that has imported hareflow
once and forks a child per file. A server that died is started again on the next parse, at most
once every ``RESTART_AFTER`` seconds; meanwhile, and for a parse that was running when it died,
:meth:`WarmParser.parse` returns None and the caller parses in a fresh interpreter instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RESTART_AFTER = 1.0
#: Imported by the server before its first fork: what every DAG file imports.
WARM_MODULES = ("hareflow",)
MAX_RECORD = 64 * 1024


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    lost: bool = False  # the server ended before answering
    server: socket.socket | None = None


class WarmChild:
    """A parse child forked by the server, waited on like a ``subprocess.Popen``."""

    def __init__(self, parser: WarmParser, token: str, pending: _Pending) -> None:
        self._parser, self.token, self._pending = parser, token, pending

    def wait(self, timeout: float | None = None) -> int:
        if not self._pending.done.wait(timeout):
            raise subprocess.TimeoutExpired("parse child", timeout or 0.0)
        if self._pending.lost or self._pending.status is None:
            return -1
        return os.waitstatus_to_exitcode(self._pending.status)

    @property
    def lost(self) -> bool:
        return self._pending.lost

    def kill(self) -> None:
        """Kill the child's process group and wait until the server has reaped it."""
        self._parser.kill(self.token)
        self._pending.done.wait(10.0)


class WarmParser:
    """Thread-safe: any number of parses share the one server. Dropping the parser (or
    :meth:`close`) stops its server."""

    def __init__(self) -> None:
        self._state = _State()
        weakref.finalize(self, self._state.close)

    @property
    def pid(self) -> int | None:
        """The running server's pid (None: not running)."""
        state = self._state
        with state.lock:
            return state.proc.pid if state.sock is not None and state.proc is not None else None

    def spawn(self, path: str, dags_folder: str | None, out: int, err: int) -> WarmChild | None:
        """Fork a child parsing ``path`` with its stdout and stderr on ``out`` and ``err``; None if
        the server is down (the caller then parses in a fresh interpreter)."""
        state = self._state
        token = uuid.uuid4().hex
        record = json.dumps({"op": "spawn", "token": token, "file": path, "folder": dags_folder or ""})
        with state.lock:
            sock = state.ensure()
            if sock is None:
                return None
            pending = state.pending[token] = _Pending(server=sock)
            try:
                socket.send_fds(sock, [record.encode()], [out, err])
            except OSError:
                del state.pending[token]
                return None
        return WarmChild(self, token, pending)

    def kill(self, token: str) -> None:
        state = self._state
        with state.lock:
            if state.sock is not None:
                try:
                    state.sock.send(json.dumps({"op": "kill", "token": token}).encode())
                except OSError:
                    pass

    def close(self) -> None:
        """Stop the server: its end of file makes it kill every child it has and exit."""
        self._state.close()


class _State:
    """What the parser and its reading thread share (the thread never holds the parser itself, so
    a parser nobody holds any more is finalized, which stops its server)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.pending: dict[str, _Pending] = {}
        self.last_start = -RESTART_AFTER
        self.closed = False

    def close(self) -> None:
        with self.lock:
            self.closed = True
            proc, sock = self.proc, self.sock
            self.sock = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if proc is not None:
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def ensure(self) -> socket.socket | None:
        """The server's socket, starting the server if it is down and may be (under the lock)."""
        if self.sock is not None or self.closed:
            return self.sock
        if time.monotonic() - self.last_start < RESTART_AFTER:
            return None
        self.last_start = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [sys.executable, "-P", "-m", "hareflow.common.dag.parse_server", str(theirs.fileno())]
        command += WARM_MODULES
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, pass_fds=[theirs.fileno()], start_new_session=True
            )
        except OSError:
            log.exception("could not start the DAG parse server; parsing in fresh interpreters")
            ours.close()
            return None
        finally:
            theirs.close()
        self.proc, self.sock = proc, ours
        threading.Thread(
            target=self.read, args=(proc, ours), name="hareflow-parse-server", daemon=True
        ).start()
        log.info("DAG parse server started (pid %s)", proc.pid)
        return ours

    def read(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        """Resolve each exit record; at end of file, every parse still waiting is lost."""
        while True:
            try:
                data = sock.recv(MAX_RECORD)
            except OSError:
                data = b""
            if not data:
                break
            record: dict[str, Any] = json.loads(data)
            with self.lock:
                pending = self.pending.pop(record.get("token", ""), None)
            if pending is not None:
                pending.status = record.get("status")
                pending.lost = pending.status is None
                pending.done.set()
        with self.lock:
            if self.sock is sock:
                self.sock = None
            lost = [self.pending.pop(t) for t, p in list(self.pending.items()) if p.server is sock]
        for pending in lost:
            pending.lost = True
            pending.done.set()
        sock.close()
        code = proc.wait()
        if not self.closed:
            log.warning("the DAG parse server exited (code %s); it is started again on the next parse", code)
