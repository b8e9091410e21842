"""The health files that `hareflow health ROLE` reads: what makes a process healthy or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hareflow.common.health import HealthReporter, check, health_dir, progress_probe


def test_a_running_reporter_makes_its_role_healthy_and_removes_its_file_on_stop(tmp_path: Path) -> None:
    reporter = HealthReporter(tmp_path, "worker", lambda: {"ok": True, "slots": 4}).start()
    try:
        verdict = check(tmp_path, "worker", max_age=30)
        assert verdict.ok, verdict.message
        assert f"pid {os.getpid()}" in verdict.message
        assert verdict.processes[0]["slots"] == 4
        assert not check(tmp_path, "scheduler", max_age=30).ok  # another role has no report
    finally:
        reporter.stop()
    verdict = check(tmp_path, "worker", max_age=30)
    assert not verdict.ok
    assert "no running worker process" in verdict.message


def test_a_probe_that_says_not_ok_is_unhealthy_with_its_reason(tmp_path: Path) -> None:
    reporter = HealthReporter(tmp_path, "results", lambda: {"ok": False, "error": "metastore down"}).start()
    try:
        verdict = check(tmp_path, "results", max_age=30)
        assert not verdict.ok
        assert "metastore down" in verdict.message
    finally:
        reporter.stop()


def test_a_probe_that_raises_is_unhealthy(tmp_path: Path) -> None:
    def broken() -> dict:
        raise RuntimeError("boom")

    reporter = HealthReporter(tmp_path, "scheduler", broken).start()
    try:
        verdict = check(tmp_path, "scheduler", max_age=30)
        assert not verdict.ok and "probe failed: boom" in verdict.message
    finally:
        reporter.stop()


def test_a_report_older_than_max_age_is_unhealthy(tmp_path: Path) -> None:
    """A hung process stops refreshing its file: the check notices by the file's age."""
    health_dir(tmp_path).mkdir()
    record = {"role": "worker", "pid": os.getpid(), "at": time.time() - 120, "ok": True}
    (health_dir(tmp_path) / f"worker-{os.getpid()}.json").write_text(json.dumps(record))
    verdict = check(tmp_path, "worker", max_age=30)
    assert not verdict.ok
    assert "last report 120s ago" in verdict.message
    assert check(tmp_path, "worker", max_age=300).ok


def test_the_report_of_a_process_that_is_gone_is_removed(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    pid = int(gone.stdout)
    health_dir(tmp_path).mkdir()
    path = health_dir(tmp_path) / f"scheduler-{pid}.json"
    path.write_text(json.dumps({"role": "scheduler", "pid": pid, "at": time.time(), "ok": True}))
    assert not check(tmp_path, "scheduler", max_age=30).ok
    assert not path.exists()


def test_one_healthy_process_of_several_is_enough(tmp_path: Path) -> None:
    health_dir(tmp_path).mkdir()
    parent = os.getppid()
    stale = {"role": "worker", "pid": parent, "at": time.time() - 999, "ok": True}
    (health_dir(tmp_path) / f"worker-{parent}.json").write_text(json.dumps(stale))
    reporter = HealthReporter(tmp_path, "worker", lambda: {"ok": True}).start()
    try:
        verdict = check(tmp_path, "worker", max_age=30)
        assert verdict.ok and str(parent) not in verdict.message
        assert len(verdict.processes) == 2
    finally:
        reporter.stop()


def test_progress_probe_turns_unhealthy_when_progress_stops() -> None:
    last = [time.monotonic()]
    probe = progress_probe(lambda: last[0], 10.0, "scheduler pass")
    assert probe()["ok"] is True
    last[0] -= 11
    verdict = probe()
    assert verdict["ok"] is False and "no scheduler pass for 11s" in verdict["error"]


def test_an_unknown_role_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        HealthReporter(tmp_path, "webserver", lambda: {"ok": True})


class _Executor:
    """Enough of an executor for a worker's heartbeat: publishing works, the link may be down."""

    name = "stub"

    def __init__(self) -> None:
        self.connected = True
        self.published: list[object] = []

    def publish_results(self, messages: list[object], *, confirm: bool = True) -> None:
        self.published.extend(messages)

    def is_connected(self) -> bool:
        return self.connected


def test_a_worker_cut_off_from_the_broker_stops_counting_its_heartbeats_as_delivered(tmp_path: Path) -> None:
    from hareflow.worker.runtime import Worker

    from tests.conftest import fast_settings

    executor = _Executor()
    worker = Worker(executor=executor, settings=fast_settings(tmp_path), queues=["default"], concurrency=1)
    worker.last_heartbeat_sent = 0.0
    worker._heartbeat("active")
    delivered = worker.last_heartbeat_sent
    assert delivered > 0 and len(executor.published) == 1

    executor.connected = False  # the publish below goes nowhere, though it raises nothing
    worker._heartbeat("active")
    assert len(executor.published) == 2 and worker.last_heartbeat_sent == delivered
