"""``hareflow dags backfill`` and its watch and cancel commands, against a running system on PostgreSQL.

The live progress is checked as users see it: plain lines through a pipe, a redrawn bar on a
pseudo-terminal, and Ctrl-C (SIGINT to the real process) stopping only the watching.
"""

from __future__ import annotations

import getpass
import os
import pty
import signal
import socket
import subprocess
from collections.abc import Iterator
from datetime import datetime

import pytest
from hareflow.common.db import Backfill, DagRun
from sqlalchemy import select

from tests.integration.conftest import wait_until
from tests.integration.test_cli import CliSystem, assert_user_error, cli_system, run_hareflow, start_hareflow

DAGS = """
    import time
    from datetime import datetime
    from pathlib import Path

    from hareflow import DAG, task

    MARKERS = Path("@MARKERS@")

    with DAG("bf_daily", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False):
        @task
        def extract(ctx):
            time.sleep(0.2)
            return ctx.logical_date.day

        @task
        def load(day):
            if day in (3, 13) and not (MARKERS / f"day{day}.ok").exists():
                raise RuntimeError(f"the files for day {day} are missing")
            return day * 10

        load(extract())

    with DAG("bf_slow", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False):
        @task
        def crawl():
            time.sleep(1.0)

        crawl()

    with DAG("bf_bar", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False):
        @task
        def quick():
            time.sleep(0.3)

        quick()

    with DAG("bf_manual", schedule=None):
        @task
        def only_by_hand():
            pass

        only_by_hand()
"""


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliSystem]:
    yield from cli_system(
        tmp_path_factory, {"backfill_dags.py": DAGS}, wait_for=["bf_daily", "bf_slow", "bf_bar", "bf_manual"]
    )


def backfill_runs(hf: CliSystem, dag_id: str) -> list[DagRun]:
    with hf.cluster.sessions() as session:
        return list(
            session.scalars(
                select(DagRun)
                .where(DagRun.dag_id == dag_id, DagRun.run_type == "backfill")
                .order_by(DagRun.logical_date)
            )
        )


def backfill_row(hf: CliSystem, backfill_id: int) -> Backfill:
    with hf.cluster.sessions() as session:
        row = session.get(Backfill, backfill_id)
        assert row is not None
        return row


def most_at_once(runs: list[DagRun]) -> int:
    """The largest number of runs that were running at the same moment."""
    edges = sorted(
        [(r.start_date, 1) for r in runs] + [(r.end_date, -1) for r in runs], key=lambda e: (e[0], e[1])
    )
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def test_a_dry_run_lists_the_runs_it_would_create_and_changes_nothing(hf: CliSystem) -> None:
    result = hf.ok(
        "dags", "backfill", "bf_daily", "--start", "2026-02-01", "--end", "2026-02-03", "--dry-run"
    )

    assert "dry run, nothing changed" in result.stdout
    assert "3 run(s) to create" in result.stdout
    assert [line.split()[1] for line in result.stdout.splitlines() if line.startswith("  create")] == [
        "2026-02-01",
        "2026-02-02",
        "2026-02-03",
    ]
    assert [r for r in backfill_runs(hf, "bf_daily") if r.logical_date.month == 2] == []


def test_a_backfill_with_wait_runs_one_run_per_day_within_max_active_runs_and_exits_one_on_a_failure(
    hf: CliSystem,
) -> None:
    done = run_hareflow(
        hf.env, "dags", "backfill", "bf_daily", "--start", "2026-01-01", "--end", "2026-01-06",
        "--max-active-runs", "2", "--wait",
    )  # fmt: skip

    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("backfill ") and lines[0].endswith("of bf_daily: 6 run(s) to create")
    progress = [line for line in lines if "runs done" in line]
    assert progress[0].split(": ", 1)[1].startswith("0/6 runs done")
    assert progress[-1].split(": ", 1)[1].startswith("6/6 runs done")
    assert "\r" not in done.stdout  # plain lines when the output is not a terminal
    assert "failed (5 succeeded, 1 failed of 6 runs" in lines[-1]
    runs = [r for r in backfill_runs(hf, "bf_daily") if r.logical_date.day <= 6]
    assert [r.logical_date.day for r in runs] == [1, 2, 3, 4, 5, 6]
    assert [r.state for r in runs].count("failed") == 1
    assert most_at_once(runs) <= 2
    backfill_id = int(lines[0].split()[1])
    row = backfill_row(hf, backfill_id)
    assert (row.state, row.created_by, row.max_active_runs) == ("failed", getpass.getuser(), 2)
    assert {r.backfill_id for r in runs} == {backfill_id}


def test_backfilling_the_same_range_again_creates_nothing_and_rerun_failed_reruns_the_failed_day(
    hf: CliSystem,
) -> None:
    span = ["--start", "2026-01-11", "--end", "2026-01-14"]
    first = hf.invoke("dags", "backfill", "bf_daily", *span, "--wait")
    before = [(r.id, r.run_id) for r in backfill_runs(hf, "bf_daily") if r.logical_date.day >= 11]

    again = hf.ok("dags", "backfill", "bf_daily", *span)
    (hf.markers / "day13.ok").touch()
    rerun = hf.invoke("dags", "backfill", "bf_daily", *span, "--rerun-failed", "--wait")

    assert first.exit_code == 1 and "failed (3 succeeded, 1 failed of 4 runs" in first.stdout
    assert "0 run(s) to create" in again.stdout and "4 already exist (skipped)" in again.stdout
    assert rerun.exit_code == 0, rerun.output
    assert "1 failed run(s) to re-run" in rerun.stdout and "3 already exist" in rerun.stdout
    assert "success (1 succeeded, 0 failed of 1 runs" in rerun.stdout
    runs = [r for r in backfill_runs(hf, "bf_daily") if r.logical_date.day >= 11]
    assert [(r.id, r.run_id) for r in runs] == before  # never a duplicate
    assert [r.state for r in runs] == ["success"] * 4


def test_backfill_mistakes_exit_two_with_one_line(hf: CliSystem) -> None:
    def backfill(dag_id: str, start: str, end: str) -> object:
        return hf.invoke("dags", "backfill", dag_id, "--start", start, "--end", end)

    assert_user_error(
        backfill("bf_daily", "2026-01-31", "2026-01-01"), "--start 2026-01-31 is after --end 2026-01-01"
    )
    assert_user_error(
        backfill("bf_daily", "first of may", "2026-01-01"), "--start 'first of may' is not a date"
    )
    assert_user_error(backfill("nope", "2026-01-01", "2026-01-02"), "no DAG named 'nope'")
    assert_user_error(backfill("bf_manual", "2026-01-01", "2026-01-02"), "has no schedule")
    assert_user_error(hf.invoke("dags", "backfill-watch", "9999"), "no backfill with id 9999")
    assert_user_error(hf.invoke("dags", "backfill-cancel", "9999"), "no backfill with id 9999")


def test_ctrl_c_stops_watching_says_how_to_resume_or_cancel_and_cancel_removes_runs_not_started(
    hf: CliSystem,
) -> None:
    proc = start_hareflow(
        hf.env, "dags", "backfill", "bf_slow", "--start", "2026-01-01", "--end", "2026-01-08", "--wait",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    header = proc.stdout.readline()
    backfill_id = int(header.split()[1])
    assert "runs done" in proc.stdout.readline()  # watching has begun

    proc.send_signal(signal.SIGINT)
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=30)

    assert proc.returncode == 130, out + err
    assert f"`hareflow dags backfill-watch {backfill_id}`" in err
    assert f"`hareflow dags backfill-cancel {backfill_id}`" in err
    assert "Traceback" not in err
    assert backfill_row(hf, backfill_id).state == "running"  # only the watching stopped

    wait_until(
        lambda: any(r.state == "running" for r in backfill_runs(hf, "bf_slow")), message="a run started"
    )
    cancelled = hf.ok("dags", "backfill-cancel", str(backfill_id))
    watched = hf.invoke("dags", "backfill-watch", str(backfill_id))
    twice = hf.invoke("dags", "backfill-cancel", str(backfill_id))

    removed = int(cancelled.stdout.split("cancelled: ")[1].split()[0])
    runs = backfill_runs(hf, "bf_slow")
    assert removed >= 1 and len(runs) == 8 - removed
    assert all(r.start_date is not None for r in runs)  # what is left had started
    assert backfill_row(hf, backfill_id).state == "cancelled"
    assert watched.exit_code == 1 and f"backfill {backfill_id} of bf_slow: cancelled" in watched.stdout
    assert_user_error(twice, "already cancelled")
    started = [a for a in hf.audit("backfill", "bf_slow") if a.details["backfill_id"] == backfill_id]
    [stopped] = [a for a in hf.audit("backfill_cancel", "bf_slow") if a.details["backfill_id"] == backfill_id]
    assert [(a.username, a.details["runs_created"], a.details["origin"]) for a in started] == [
        (getpass.getuser(), 8, f"cli@{socket.gethostname()}")
    ]
    assert (stopped.username, stopped.details["runs_dropped"]) == (getpass.getuser(), removed)


def test_on_a_terminal_backfill_wait_draws_a_live_progress_bar(hf: CliSystem) -> None:
    from tests.integration.test_cli import clean_env, hareflow_command

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*hareflow_command(), "dags", "backfill", "bf_bar", "--start", "2026-01-01", "--end", "2026-01-04",
         "--max-active-runs", "2", "--wait"],
        env=clean_env({**hf.env, "COLUMNS": "160"}),
        stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    proc.wait(timeout=30)
    text = screen.decode(errors="replace")

    assert proc.returncode == 0, text
    redraws = [part for part in text.split("\r") if "backfill" in part and "[" in part]
    assert len(redraws) >= 2  # the bar is redrawn in place, not printed line after line
    assert "[##############################]  4/4" in text
    assert "running" in redraws[-1] and "ETA" in redraws[-1]
    assert "success (4 succeeded, 0 failed of 4 runs" in text
    assert datetime(2026, 1, 4) in [r.logical_date.replace(tzinfo=None) for r in backfill_runs(hf, "bf_bar")]
