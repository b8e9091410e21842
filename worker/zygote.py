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

import gc
import logging
import os
import signal
import socket
from typing import Any

from hareflow.common.dag.loader import add_dags_folder_to_path, load_dag_file_cached
from hareflow.common.processes import ForkServer, set_subreaper
from hareflow.worker.child import LOG_FORMAT, CurrentStderr, task_main

log = logging.getLogger(__name__)


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


class _Zygote(ForkServer):
    def __init__(self, control: socket.socket, dags_folder: str, preload_timeout: float) -> None:
        super().__init__(control)
        self._dags_folder = dags_folder
        self._preload_timeout = preload_timeout
        self._slow: dict[str, tuple[int, int]] = {}  # DAG files not to import here, at (mtime, size)

    def prepare(self, request: dict[str, Any]) -> None:
        self._preload(request.get("dag_file") or "")

    def child_main(self, request: dict[str, Any], fds: list[int]) -> int:
        for extra in fds[1:]:
            os.close(extra)
        return task_main(fds[0], request["token"])

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
