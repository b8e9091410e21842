"""The worker's relay for its tasks' connection and variable lookups.

A task process asks over its pipe (``("lookup", token, n, kind, name)``, see ``worker/child.py``).
The slot thread that supervises it hands the request here and goes on relaying logs; a relay
thread sends a ``lookup`` message stamped with the try's own key — taken from the task message,
never from the task, so a task cannot ask as another DAG — waits for the control plane's reply
(at most ``lookup_timeout``) and writes it back down the pipe. The task always gets an answer: a
reply, or one saying the control plane could not be reached in time.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hareflow.common.broker import Executor
from hareflow.common.broker.base import BrokerError
from hareflow.common.messages import LookupRequest, TaskKey

log = logging.getLogger(__name__)


class LookupRelay:
    def __init__(self, executor: Executor, timeout: float, threads: int) -> None:
        self._executor = executor
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="hareflow-lookup")

    def submit(self, proc: Any, key: TaskKey, number: int, kind: str, name: str) -> None:
        self._pool.submit(self._answer, proc, key, number, kind, name)

    def _answer(self, proc: Any, key: TaskKey, number: int, kind: str, name: str) -> None:
        reply = self.ask(key, kind, name)
        try:
            proc.send(("lookup_reply", proc.token, number, reply))
        except (OSError, ValueError):
            pass  # the task process is gone; nothing waits for this answer

    def ask(self, key: TaskKey, kind: str, name: str) -> dict[str, Any]:
        """The control plane's reply to one lookup, as a dict; never raises."""
        if kind not in ("connection", "variable", "task_state") or not isinstance(name, str):
            return {"ok": False, "code": "error", "error": f"bad lookup {kind!r} {name!r}"}
        body = LookupRequest(kind=kind, name=name, key=key).encode()
        try:
            raw = self._executor.lookup(body, self._timeout)
        except BrokerError as exc:
            log.warning("lookup of %s %r for %s: %s", kind, name, key.label(), exc)
            return {"ok": False, "code": "unavailable", "error": f"could not look up {kind} {name!r}: {exc}"}
        except Exception as exc:  # the relay thread must always answer the task
            log.exception("lookup of %s %r for %s failed", kind, name, key.label())
            return {"ok": False, "code": "error", "error": f"could not look up {kind} {name!r}: {exc}"}
        try:
            reply = json.loads(raw)
        except ValueError:
            return {"ok": False, "code": "error", "error": "the control plane sent a malformed reply"}
        return (
            reply if isinstance(reply, dict) else {"ok": False, "code": "error", "error": "malformed reply"}
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
