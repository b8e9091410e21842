"""A pool of long-lived child processes, one per concurrency slot.

Children are forked from a fork server that preloads hareflow, so a task starts in an interpreter
that is already warm (no fresh interpreter per task) and a child killed on timeout is replaced in
milliseconds. One slot thread owns one child at a time; nothing else touches its pipe.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from multiprocessing.context import BaseContext
from typing import Any

from hareflow.worker.child import child_main

log = logging.getLogger(__name__)


def pool_context() -> BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["hareflow.worker.child", "hareflow.common.dag", "hareflow.common.dag.loader"])
    return ctx


class ChildProcess:
    """One pool child and the parent's end of its pipe."""

    def __init__(self, ctx: BaseContext) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=child_main, args=(child_conn,), daemon=True)  # type: ignore[attr-defined]
        self.process.start()
        child_conn.close()

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def send(self, request: Any) -> None:
        self.conn.send(request)

    def kill(self) -> None:
        """Kill the child and everything it started (it leads its own process group)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()

    def alive(self) -> bool:
        return self.process.is_alive()
