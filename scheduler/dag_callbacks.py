"""DAG-level callbacks: once a run has finished, its DAG's ``on_success_callback`` or
``on_failure_callback`` runs in a child interpreter on the scheduler's host
(``hareflow.common.dag.callback_child``), never in the scheduler's own process, bounded by
``dag_file_processor_timeout``, on a small thread pool so the loop never waits for it.

A callback runs after the commit that finished the run, at most once: a scheduler that stops
between that commit and the callback's end does not run it again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hareflow.common.dag.serialize import SerializedDag
from hareflow.common.db import DagRun

log = logging.getLogger(__name__)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def callback_request(
    run: DagRun, sdag: SerializedDag, state: str, reason: str | None
) -> dict[str, Any] | None:
    """What the child needs to call the callback for ``run`` ending in ``state``; None if the DAG has none."""
    kind = "success" if state == "success" else "failure"
    if kind not in sdag.callbacks:
        return None
    return {
        "dag_id": run.dag_id,
        "kind": kind,
        "reason": reason or ("success" if kind == "success" else "task_failure"),
        "run_id": run.run_id,
        "logical_date": _iso(run.logical_date),
        "data_interval_start": _iso(run.data_interval_start),
        "data_interval_end": _iso(run.data_interval_end),
        "conf": run.conf or {},
        "fileloc": sdag.fileloc,
    }


def run_callback_child(
    request: dict[str, Any], dags_folder: str | None, timeout: float, env: Mapping[str, str] | None = None
) -> tuple[int | None, str]:
    """Run one callback in a child; return its exit code (None: timed out and killed) and its output.
    ``env`` is added to this process's environment (the scheduler's settings, so a notifier in the
    callback reads connections from the same metastore with the same key)."""
    command = [sys.executable, "-P", "-m", "hareflow.common.dag.callback_child", request["fileloc"]]
    if dags_folder:
        command.append(dags_folder)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=err,
            stderr=err,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(request).encode())
            proc.stdin.close()
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever the callback started goes too
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        err.seek(0)
        return code, err.read().decode("utf-8", "replace")


class DagCallbacks:
    """Runs DAG callbacks in the background, two at a time."""

    def __init__(
        self, *, dags_folder: str | None, timeout: float, env: Mapping[str, str] | None = None
    ) -> None:
        self._dags_folder = dags_folder
        self._timeout = timeout
        self._env = dict(env or {})
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dag-callback")

    def submit(self, request: dict[str, Any]) -> None:
        self._pool.submit(self._run, request)

    def _run(self, request: dict[str, Any]) -> None:
        what = f"on_{request['kind']}_callback of {request['dag_id']} (run {request['run_id']})"
        try:
            code, output = run_callback_child(request, self._dags_folder, self._timeout, self._env)
        except Exception:
            log.exception("could not run %s", what)
            return
        if code is None:
            log.warning("%s took longer than %gs and was stopped:\n%s", what, self._timeout, output)
        elif code != 0 or "raised:" in output:
            log.warning("%s failed (exit %s):\n%s", what, code, output)
        else:
            log.info("%s ran%s", what, f":\n{output}" if output.strip() else "")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
