"""Liveness of the long-running processes, for `hareflow health ROLE` and container healthchecks.

Each scheduler, results consumer and worker keeps a small JSON file fresh under
``<home>/health/<role>-<pid>.json``: a reporter thread asks the process's probe every few seconds
whether it is making progress (the scheduler finished a pass, the results consumer finished a
cycle, the worker's heartbeat reached the broker) and writes the verdict. The health command reads
those files, so it needs neither the database nor the broker and answers in milliseconds. A process
that hangs stops refreshing its file; one that cannot do its work writes ``"ok": false`` with the
reason.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROLES = ("scheduler", "results", "worker")

#: A probe returns {"ok": bool, ...details}; it must be cheap and must not block.
Probe = Callable[[], dict[str, Any]]


def health_dir(home: Path) -> Path:
    return home / "health"


class HealthReporter:
    """Writes one process's health file every ``interval`` seconds until stopped."""

    def __init__(self, home: Path, role: str, probe: Probe, *, interval: float = 5.0) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        self.path = health_dir(home) / f"{role}-{os.getpid()}.json"
        self.role = role
        self._probe = probe
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HealthReporter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("health file disabled: cannot create %s: %s", self.path.parent, exc)
            return self
        self.write()
        self._thread = threading.Thread(target=self._loop, name=f"hareflow-health-{self.role}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def write(self) -> None:
        try:
            verdict = dict(self._probe())
        except Exception as exc:  # noqa: BLE001 - a failing probe is itself the verdict
            verdict = {"ok": False, "error": f"probe failed: {exc}"}
        verdict.setdefault("ok", False)
        record = {"role": self.role, "pid": os.getpid(), "at": time.time(), **verdict}
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(record, default=str))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot write health file %s: %s", self.path, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.write()


def progress_probe(last_progress: Callable[[], float], limit: float, what: str) -> Probe:
    """A probe that is healthy while ``last_progress()`` (a monotonic time) is under ``limit`` old."""

    def probe() -> dict[str, Any]:
        age = time.monotonic() - last_progress()
        if age <= limit:
            return {"ok": True, "progress_age": round(age, 3)}
        return {"ok": False, "progress_age": round(age, 3), "error": f"no {what} for {age:.0f}s"}

    return probe


@dataclass
class Verdict:
    ok: bool
    message: str
    processes: list[dict[str, Any]] = field(default_factory=list)


def check(home: Path, role: str, *, max_age: float) -> Verdict:
    """Healthy when at least one live ``role`` process wrote ``ok`` within ``max_age`` seconds.

    Files of processes that are gone (their pid no longer exists) are removed.
    """
    now = time.time()
    seen: list[dict[str, Any]] = []
    for path in sorted(health_dir(home).glob(f"{role}-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid = int(record.get("pid", 0))
        if not _pid_alive(pid):
            path.unlink(missing_ok=True)
            continue
        record["age"] = round(now - float(record.get("at", 0)), 3)
        seen.append(record)
    if not seen:
        return Verdict(False, f"no running {role} process reports under {health_dir(home)}")
    healthy = [r for r in seen if r.get("ok") and r["age"] <= max_age]
    if healthy:
        pids = ", ".join(str(r["pid"]) for r in healthy)
        return Verdict(True, f"{role} healthy (pid {pids})", seen)
    reasons = "; ".join(
        f"pid {r['pid']}: "
        + (f"last report {r['age']:.0f}s ago" if r["age"] > max_age else str(r.get("error", "not ok")))
        for r in seen
    )
    return Verdict(False, f"{role} unhealthy: {reasons}", seen)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
