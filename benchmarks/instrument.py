"""Light counters wrapped around engine methods, from the outside (the engine code is not edited).

``install()`` wraps a handful of methods of the scheduler, the results consumer and the worker with
timers, and replaces the scheduler's wake-up event with one that counts how each wait ended (woken by
an event, or by the ``scheduler_idle_wait`` timer). ``snapshot()`` / ``diff()`` give what happened in
a measured window. The overhead is two ``perf_counter`` calls per wrapped call.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_timers: dict[str, list[float]] = {}  # name -> [calls, total seconds, max seconds]
_counts: dict[str, float] = {}
_installed = False


def add(name: str, value: float = 1.0) -> None:
    with _lock:
        _counts[name] = _counts.get(name, 0.0) + value


def _record(name: str, elapsed: float) -> None:
    with _lock:
        t = _timers.setdefault(name, [0.0, 0.0, 0.0])
        t[0] += 1
        t[1] += elapsed
        if elapsed > t[2]:
            t[2] = elapsed


def _timed(cls: type, method: str, name: str, after: Callable[..., None] | None = None) -> None:
    original = getattr(cls, method)
    if getattr(original, "_bench_wrapped", False):
        return

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            result = original(*args, **kwargs)
        finally:
            _record(name, time.perf_counter() - t0)
        if after is not None:
            try:
                after(result, *args, **kwargs)
            except Exception:
                pass
        return result

    wrapper._bench_wrapped = True  # type: ignore[attr-defined]
    setattr(cls, method, wrapper)


class CountingEvent(threading.Event):
    """The scheduler's wake-up event: counts waits ended by a wake-up vs by the idle timer."""

    def wait(self, timeout: float | None = None) -> bool:
        woke = super().wait(timeout)
        add("scheduler.wait_woken_by_event" if woke else "scheduler.wait_timed_out")
        return woke


def install_scheduler() -> None:
    from hareflow.scheduler import loop, results

    sched = loop.Scheduler
    if not getattr(sched.__init__, "_bench_wrapped", False):
        original_init = sched.__init__

        @functools.wraps(original_init)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            if isinstance(getattr(self, "_wake", None), threading.Event):
                self._wake = CountingEvent()

        init._bench_wrapped = True  # type: ignore[attr-defined]
        sched.__init__ = init  # type: ignore[method-assign]

    def count_loaded(
        result: Any, self: Any, session: Any, runs: Any, dags: Any, sdags: Any, tis_by_run: Any, *rest: Any
    ) -> None:
        add("scheduler.tis_loaded", sum(len(v) for v in tis_by_run.values()))
        add("scheduler.tis_dispatched", len(result or ()))

    original_pass = getattr(loop, "schedule_pass", None)
    if original_pass is not None and not getattr(original_pass, "_bench_wrapped", False):

        @functools.wraps(original_pass)
        def schedule_pass(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            result = original_pass(*args, **kwargs)
            kind = "incremental, nothing to decide" if getattr(result, "incremental", False) else "full"
            _record(f"scheduler.schedule_pass ({kind})", time.perf_counter() - t0)
            return result

        schedule_pass._bench_wrapped = True  # type: ignore[attr-defined]
        loop.schedule_pass = schedule_pass

    def count_batch(result: Any, *args: Any, **kwargs: Any) -> None:
        if result:
            add("results.batches")
            add("results.messages", result)

    for method, name, after in [
        ("run_once", "scheduler.run_once", None),
        ("create_due_runs", "scheduler.create_due_runs", None),
        ("schedule_runs", "scheduler.schedule_runs", None),
        ("_schedule_in_transaction", "scheduler._schedule_in_transaction", None),
        ("_choose_dispatch", "scheduler._choose_dispatch", count_loaded),
        ("_publish", "scheduler._publish (build_messages + publish_tasks)", None),
        ("republish_stale", "scheduler.republish_stale", None),
        ("handle_lost_workers", "scheduler.handle_lost_workers", None),
    ]:
        if hasattr(sched, method):
            _timed(sched, method, name, after)

    def report_age(_result: Any, _self: Any, messages: Any) -> None:
        # How long after the worker finished a task its final result was committed.
        now = time.time()
        ages = [now - m.at for m in messages if getattr(m, "outcome", "running") != "running"]
        if ages:
            add("results.final_reports_committed", len(ages))
            add("results.final_report_age_at_commit_s", sum(ages))

    rc = results.ResultsConsumer
    for method, name, after in [
        ("run_once", "results.run_once", count_batch),
        ("_commit", "results._commit (apply_results + commit)", report_age),
    ]:
        if hasattr(rc, method):
            _timed(rc, method, name, after)


def install_events() -> None:
    """Count state events published (one broker message each on rabbitmq) and delivered to the scheduler."""
    from hareflow.common.broker.local import LocalExecutor
    from hareflow.common.broker.rabbitmq import RabbitMQExecutor
    from hareflow.scheduler import loop

    for cls in (LocalExecutor, RabbitMQExecutor):
        original = cls.publish_events
        if getattr(original, "_bench_wrapped", False):
            continue

        def publish_events(self: Any, events: Any, _original: Any = original) -> Any:
            add("events.published", len(events))
            add("events.publish_calls")
            return _original(self, events)

        publish_events._bench_wrapped = True  # type: ignore[attr-defined]
        cls.publish_events = publish_events  # type: ignore[method-assign]
    original_on = loop.Scheduler.on_events
    if not getattr(original_on, "_bench_wrapped", False):

        def on_events(self: Any, events: Any, _original: Any = original_on, **kwargs: Any) -> Any:
            add("events.delivered_to_scheduler", len(events))
            return _original(self, events, **kwargs)

        on_events._bench_wrapped = True  # type: ignore[attr-defined]
        loop.Scheduler.on_events = on_events  # type: ignore[method-assign]


def install_worker() -> None:
    from hareflow.worker import runtime

    w = runtime.Worker
    original_report = w._report
    if not getattr(original_report, "_bench_wrapped", False):

        @functools.wraps(original_report)
        def report(self: Any, key: Any, outcome: str, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original_report(self, key, outcome, *args, **kwargs)
            finally:
                kind = "running (unconfirmed)" if outcome == "running" else "final (confirmed)"
                _record(f"worker._report {kind}", time.perf_counter() - t0)

        report._bench_wrapped = True  # type: ignore[attr-defined]
        w._report = report  # type: ignore[method-assign]
    for method, name in [
        ("_handle", "worker._handle (whole task)"),
        ("_run_in_child", "worker._run_in_child"),
    ]:
        if hasattr(w, method):
            _timed(w, method, name)
    reporter = getattr(runtime, "_Reporter", None)
    if reporter is not None and hasattr(reporter, "_publish"):
        _timed(
            reporter,
            "_publish",
            "worker._Reporter._publish (publish, confirm, ack)",
            lambda _r, _self, batch: add("worker.reporter_results", len(batch)),
        )


def install() -> None:
    global _installed
    if _installed:
        return
    install_scheduler()
    install_worker()
    install_events()
    _installed = True


def snapshot() -> dict[str, Any]:
    with _lock:
        return {"timers": {k: list(v) for k, v in _timers.items()}, "counts": dict(_counts)}


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (calls, total, mx) in sorted(b["timers"].items()):
        c0, t0, _ = a["timers"].get(name, [0.0, 0.0, 0.0])
        calls, total = calls - c0, total - t0
        if calls:
            out[name] = {
                "calls": int(calls),
                "total_s": round(total, 3),
                "mean_ms": round(total / calls * 1000, 2),
                "max_ms_ever": round(mx * 1000, 1),
            }
    counts = {k: v - a["counts"].get(k, 0.0) for k, v in sorted(b["counts"].items())}
    out["counts"] = {k: int(v) if float(v).is_integer() else round(v, 3) for k, v in counts.items() if v}
    it = out.get("scheduler.run_once", {}).get("calls")
    if it and "scheduler.tis_loaded" in counts:
        out["counts"]["scheduler.tis_loaded_per_iteration"] = round(counts["scheduler.tis_loaded"] / it, 1)
    return out


def _thread_group() -> str:
    name = threading.current_thread().name
    return name.rsplit("-", 1)[0] + "-*" if "-slot-" in name else name


def watch_engine(engine: Any) -> None:
    """Count SQL statements, commits and pool checkouts (each checkout pings: pool_pre_ping)."""
    from sqlalchemy import event

    def on_execute(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool
    ) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        add("sql.statements")
        add(f"sql.{verb}")
        add(f"sql.statements_by_thread.{_thread_group()}")

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", lambda conn: add("sql.commits"))
    event.listen(engine.pool, "checkout", lambda *a: add("sql.pool_checkouts"))
    event.listen(engine.pool, "checkout", lambda *a: add(f"sql.pool_checkouts_by_thread.{_thread_group()}"))
