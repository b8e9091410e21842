"""``hareflow dags backfill``, ``backfill-watch`` and ``backfill-cancel``: runs over a past date range,
followed with a live progress bar on a terminal and plain lines elsewhere."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import click

from hareflow.cli.common import (
    INTERRUPTED,
    UserError,
    get_settings,
    metastore,
    notify_scheduler,
    parse_date,
    user_mistakes,
    when,
)
from hareflow.cli.dags import dag_id_argument, dags

# -- backfills ----------------------------------------------------------------------------------


def _backfill_api() -> Any:
    try:
        import hareflow.common.backfill as api
    except ImportError:
        raise UserError(
            "backfills are not available in this installation (hareflow.common.backfill is missing)"
        ) from None
    return api


@dags.command("backfill")
@dag_id_argument
@click.option("--start", "start", required=True, help="First logical date to cover (ISO 8601).")
@click.option("--end", "end", required=True, help="Last logical date to cover, inclusive (ISO 8601).")
@click.option("--max-active-runs", default=1, show_default=True, type=click.IntRange(1), help="Runs at once.")
@click.option("--rerun-failed", is_flag=True, help="Also re-run the failed runs already in the range.")
@click.option("--dry-run", is_flag=True, help="Only print the runs it would create; change nothing.")
@click.option(
    "--wait", is_flag=True, help="Watch it with a live progress bar; exit 0 if every run succeeded."
)
def dags_backfill(
    dag_id: str, start: str, end: str, max_active_runs: int, rerun_failed: bool, dry_run: bool, wait: bool
) -> None:
    """Create one run of DAG_ID per schedule interval whose logical date lies in [--start, --end].

    Runs that already exist are never duplicated (with --rerun-failed, failed ones are cleared and
    run again); at most --max-active-runs run at once. The backfill is recorded, so the UI shows it.
    With --wait, a progress bar (or plain lines when not on a terminal) follows it; Ctrl-C stops
    watching only.

    \b
    Example:
      hareflow dags backfill daily_sales --start 2026-01-01 --end 2026-01-31 --max-active-runs 4 --wait
    """
    from hareflow.common.audit import cli_origin, cli_user

    settings = get_settings()
    start_at = parse_date(start, "--start")
    end_at = parse_date(end, "--end")
    assert start_at is not None and end_at is not None
    if start_at > end_at:
        raise UserError(f"--start {start} is after --end {end}")
    api = _backfill_api()
    with metastore(settings) as sessions:
        if dry_run:
            with user_mistakes(), sessions() as session:
                plan = api.plan_backfill(session, dag_id, start_at, end_at, rerun_failed=rerun_failed)
            _print_plan(plan, dry_run=True)
            return
        with user_mistakes(), sessions() as session, session.begin():
            backfill, plan = api.create_backfill(
                session,
                dag_id,
                start_at,
                end_at,
                max_active_runs=max_active_runs,
                rerun_failed=rerun_failed,
                created_by=cli_user(settings),
                origin=cli_origin(),
            )
            backfill_id = backfill.id
        notify_scheduler(settings, [{"kind": "dag", "dag_id": dag_id, "state": "backfill"}])
        click.echo(f"backfill {backfill_id} of {dag_id}: {_plan_summary(plan)}")
        if not plan.to_create and not plan.to_rerun:
            click.echo("nothing to run: every interval in the range already has a run")
            return
        if not wait:
            click.echo(f"watch it with `hareflow dags backfill-watch {backfill_id}`")
            return
        sys.exit(watch_backfill(sessions, backfill_id))


def _plan_summary(plan: Any) -> str:
    parts = [f"{len(plan.to_create)} run(s) to create"]
    if plan.to_rerun:
        parts.append(f"{len(plan.to_rerun)} failed run(s) to re-run")
    if plan.existing:
        parts.append(f"{len(plan.existing)} already exist (skipped)")
    return ", ".join(parts)


def _print_plan(plan: Any, *, dry_run: bool) -> None:
    click.echo(
        f"backfill of {plan.dag_id}{' (dry run, nothing changed)' if dry_run else ''}: {_plan_summary(plan)}"
    )
    for info in plan.to_create:
        click.echo(f"  create  {when(info.logical_date)}  (data interval to {when(info.data_interval_end)})")
    for run_id in plan.to_rerun:
        click.echo(f"  re-run  {run_id}")
    for run_id in plan.existing:
        click.echo(f"  skip    {run_id}  (exists)")


@dags.command("backfill-watch")
@click.argument("backfill_id", type=int)
def dags_backfill_watch(backfill_id: int) -> None:
    """Watch a backfill's progress again (after Ctrl-C, or from another terminal).

    Exits 0 when every run succeeded, 1 when some failed or it was cancelled.

    \b
    Example:
      hareflow dags backfill-watch 3
    """
    settings = get_settings()
    api = _backfill_api()
    with metastore(settings) as sessions:
        with user_mistakes(), sessions() as session:
            api.backfill_progress(session, backfill_id)  # an unknown id fails here, clearly
        sys.exit(watch_backfill(sessions, backfill_id))


@dags.command("backfill-cancel")
@click.argument("backfill_id", type=int)
def dags_backfill_cancel(backfill_id: int) -> None:
    """Cancel a backfill: its runs that have not started are removed; running ones finish.

    \b
    Example:
      hareflow dags backfill-cancel 3
    """
    from hareflow.common.audit import cli_origin, cli_user

    settings = get_settings()
    api = _backfill_api()
    with metastore(settings) as sessions:
        with user_mistakes(), sessions() as session, session.begin():
            cancelled = api.cancel_backfill(
                session, backfill_id, username=cli_user(settings), origin=cli_origin()
            )
            progress = api.backfill_progress(session, backfill_id)
        notify_scheduler(
            settings, [{"kind": "dag", "dag_id": progress.dag_id, "state": "backfill_cancelled"}]
        )
    click.echo(
        f"backfill {backfill_id} of {progress.dag_id} cancelled: "
        f"{cancelled} run(s) that had not started removed"
        + (f", {progress.running} running run(s) will finish" if progress.running else "")
    )


def _eta(done_now: int, done_first: int, elapsed: float, remaining: int) -> str:
    if remaining <= 0:
        return "0:00:00"
    finished_since = done_now - done_first
    if finished_since <= 0 or elapsed <= 0:
        return "--:--:--"
    seconds = math.ceil(remaining * elapsed / finished_since)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _progress_text(p: Any, eta: str) -> str:
    return (
        f"{p.success + p.failed}/{p.total} runs done, {p.running} running, {p.tasks_running} tasks running, "
        f"{p.failed} failed run(s), {p.tasks_failed} failed task(s), ETA {eta}"
    )


def watch_backfill(sessions: Any, backfill_id: int, *, interval: float = 0.5) -> int:
    """Follow a backfill until it ends: a live bar on a terminal, a line per change otherwise.

    Returns 0 if it succeeded, 1 if it failed or was cancelled, 130 after Ctrl-C (which stops only
    the watching and says how to resume or cancel).
    """
    api = _backfill_api()

    def read() -> Any:
        with sessions() as session:
            return api.backfill_progress(session, backfill_id)

    started = time.monotonic()
    progress = read()
    first_done = progress.success + progress.failed
    try:
        if sys.stdout.isatty() and progress.total > 0:
            progress = _watch_with_bar(read, progress, first_done, started, interval)
        else:
            progress = _watch_with_lines(read, progress, first_done, started, interval)
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped watching backfill {backfill_id}; its runs go on. "
            f"Resume watching: `hareflow dags backfill-watch {backfill_id}`. "
            f"Cancel the runs not started: `hareflow dags backfill-cancel {backfill_id}`.",
            err=True,
        )
        return INTERRUPTED
    took = time.monotonic() - started
    click.echo(
        f"backfill {backfill_id} of {progress.dag_id}: {progress.state} "
        f"({progress.success} succeeded, {progress.failed} failed of {progress.total} runs; "
        f"watched {took:.0f}s)"
    )
    return 0 if progress.state == "success" else 1


def _finished(p: Any) -> bool:
    return p.state != "running"


def _watch_with_lines(read: Any, p: Any, first_done: int, started: float, interval: float) -> Any:
    last = None
    while True:
        done = p.success + p.failed
        key = (done, p.running, p.tasks_running, p.failed, p.tasks_failed, p.total)
        if key != last:
            last = key
            eta = _eta(done, first_done, time.monotonic() - started, p.total - done)
            click.echo(f"backfill {p.backfill_id}: {_progress_text(p, eta)}")
        if _finished(p):
            return p
        time.sleep(interval)
        p = read()


def _watch_with_bar(read: Any, p: Any, first_done: int, started: float, interval: float) -> Any:
    def describe(item: Any) -> str | None:
        if item is None:
            return None
        done = item.success + item.failed
        eta = _eta(done, first_done, time.monotonic() - started, item.total - done)
        return f"{item.running} running, {item.tasks_running} tasks running, {item.failed} failed, ETA {eta}"

    with click.progressbar(
        length=p.total,
        label=f"backfill {p.backfill_id} of {p.dag_id}",
        show_eta=False,
        show_percent=False,
        show_pos=True,
        item_show_func=describe,
        width=30,
    ) as bar:
        while True:
            done = min(p.success + p.failed, p.total)
            bar.length = max(p.total, done)
            bar.update(max(0, done - bar.pos), p)
            if _finished(p):
                return p
            time.sleep(interval)
            p = read()
