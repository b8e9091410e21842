"""End-to-end scenarios on a whole hareflow system (``hareflow.cluster.Cluster``) in this process.

One ``BenchSystem`` = one temporary database + one broker prefix + one Cluster (scheduler with DAG
processing and the results consumer, plus the workers) with the chosen executor. It is warmed up
(DAG parsed, worker heartbeat recorded, every pool child has loaded the DAG file) before anything is
measured; then each measured run is triggered the way ``hareflow dags trigger`` does it (a manual run
row, then a ``run`` state event so a scheduler wakes at once) and timed from the metastore's own
timestamps.
"""

from __future__ import annotations

import logging
import statistics
import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks import env

log = logging.getLogger("benchmarks")

CHAIN_DAG = "bench_chain40"
CHAIN_LENGTH = 40
FANOUT_DAG = "bench_fanout"
WARMUP_DAG = "bench_warmup"


def dag_source(width: int, warmup_width: int) -> str:
    """One DAG file with all three DAGs, so warming the pool children up loads it for every DAG."""
    return textwrap.dedent(
        f'''\
        """Written by benchmarks/flow.py: no-op tasks only."""
        from datetime import datetime

        from hareflow import DAG, task

        START = datetime(2026, 1, 1)


        @task
        def noop():
            return None


        # Every DAG lifts max_active_tasks to its width: the benchmark measures the engine, not the cap.
        with DAG("{CHAIN_DAG}", schedule=None, start_date=START, max_active_runs=1, max_active_tasks=64):
            prev = None
            for i in range({CHAIN_LENGTH}):
                t = noop.override(task_id=f"t{{i:02d}}")()
                if prev is not None:
                    prev >> t
                prev = t

        with DAG("{FANOUT_DAG}", schedule=None, start_date=START, max_active_runs=1,
                 max_active_tasks={width + 2}):
            first = noop.override(task_id="start")()
            last = noop.override(task_id="end")()
            middle = [noop.override(task_id=f"m{{i:05d}}")() for i in range({width})]
            first >> middle
            middle >> last

        with DAG("{WARMUP_DAG}", schedule=None, start_date=START, max_active_runs=1,
                 max_active_tasks={warmup_width + 2}):
            first = noop.override(task_id="start")()
            last = noop.override(task_id="end")()
            middle = [noop.override(task_id=f"m{{i:04d}}")() for i in range({warmup_width})]
            first >> middle
            middle >> last
        '''
    )


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100)."""
    if not values:
        return float("nan")
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def dist_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000.0 for v in values_s]
    return {
        "p50": round(percentile(ms, 50), 2),
        "p90": round(percentile(ms, 90), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2) if ms else float("nan"),
        "mean": round(statistics.fmean(ms), 2) if ms else float("nan"),
        "n": len(ms),
    }


def _secs(a: datetime | None, b: datetime | None) -> float:
    if a is None or b is None:
        return float("nan")
    return (b - a).total_seconds()


@dataclass
class SystemConfig:
    executor: str  # local | rabbitmq
    database: str  # postgres | sqlite
    queue_type: str  # classic | quorum
    concurrency: int
    workers: int
    width: int
    prefix: str
    db_name: str
    workdir: Path
    idle_wait: float = 1.0
    worker_mode: str = (
        "thread"  # thread: workers inside the Cluster; process: `hareflow worker`-like processes
    )


class BenchSystem:
    def __init__(self, cfg: SystemConfig) -> None:
        self.cfg = cfg
        self.cluster: Any = None
        self.notifier: Any = None
        self.cpu: env.CpuMeter | None = None
        self._db_created = False
        self.worker_procs: list[tuple[Any, Path]] = []  # (Popen, stats file)
        self._settings: Any = None

    # -- lifecycle -------------------------------------------------------------------------------

    def settings(self) -> Any:
        from hareflow.common.config import load_settings

        cfg = self.cfg
        dags = cfg.workdir / "dags"
        dags.mkdir(parents=True, exist_ok=True)
        warmup_width = max(4 * cfg.concurrency * cfg.workers, 16)
        (dags / "bench_dags.py").write_text(dag_source(cfg.width, warmup_width))
        overrides: dict[str, object] = {
            "home": str(cfg.workdir / "home"),
            "database_url": env.database_url(cfg.database, cfg.db_name, cfg.workdir),
            "executor": cfg.executor,
            "dags_folder": str(dags),
            "dags_are_paused_at_creation": False,  # the benchmark DAGs run as soon as they are parsed
            "broker_prefix": cfg.prefix,
            "queue_type": cfg.queue_type,
            "worker_concurrency": cfg.concurrency,
            "scheduler_idle_wait": cfg.idle_wait,  # the default, 1 s: events must do the waking
            "log_level": "WARNING",
        }
        if cfg.executor == "rabbitmq":
            overrides["broker_url"] = env.AMQP_URL
        return load_settings(env={}, overrides=overrides)

    def start(self) -> None:
        from benchmarks import instrument
        from hareflow.cluster import Cluster, WorkerSpec

        instrument.install()
        settings = self._settings = self.settings()
        env.create_database(self.cfg.database, self.cfg.db_name)
        self._db_created = True
        specs = [
            WorkerSpec(concurrency=self.cfg.concurrency, name=f"bench-w{i}") for i in range(self.cfg.workers)
        ]
        in_process = self.cfg.worker_mode == "thread"
        self.cluster = Cluster(settings, workers=specs if in_process else ())
        self.cluster.migrate()
        instrument.watch_engine(self.cluster.engine)
        t0 = time.monotonic()
        self.cluster.start()
        if not in_process:
            self._start_worker_processes()
        if self.cfg.executor == "rabbitmq":
            # ``hareflow dags trigger`` wakes the scheduler over the events exchange; Cluster.trigger
            # only does that for the local executor, so the benchmark publishes the event itself.
            from hareflow.common.broker import make_executor

            self.notifier = make_executor(settings, connection_name="hareflow-bench")
            self.notifier.start()
        self._name_threads()
        for dag_id in (CHAIN_DAG, FANOUT_DAG, WARMUP_DAG):
            self.cluster.wait_for_dag(dag_id, timeout=120)
        self._wait_for_workers(timeout=60)
        log.info("system up in %.1fs (%s, %s)", time.monotonic() - t0, self.cfg.executor, self.cfg.database)
        self.cpu = env.CpuMeter(self.cfg.db_name if self.cfg.database == "postgres" else None)

    def _start_worker_processes(self) -> None:
        import subprocess
        import sys

        if self.cfg.executor != "rabbitmq":
            raise ValueError("separate worker processes need the rabbitmq executor")
        child_env = env.worker_environment(
            self._settings, HAREFLOW_WORKER_CONCURRENCY=str(self.cfg.concurrency)
        )
        for i in range(self.cfg.workers):
            stats = self.cfg.workdir / f"worker{i}.stats.json"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.worker_proc",
                    "--name",
                    f"bench-w{i}",
                    "--concurrency",
                    str(self.cfg.concurrency),
                    "--stats",
                    str(stats),
                ],
                env=child_env,
                cwd=str(Path(__file__).resolve().parents[1]),
            )
            self.worker_procs.append((proc, stats))

    def worker_stats(self) -> list[dict[str, Any]]:
        """Counters of the separate worker processes (asked for with SIGUSR1)."""
        import json
        import os
        import signal

        out = []
        for proc, stats in self.worker_procs:
            before = stats.stat().st_mtime_ns if stats.exists() else 0
            os.kill(proc.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if stats.exists() and stats.stat().st_mtime_ns != before:
                    break
                time.sleep(0.01)
            try:
                out.append(json.loads(stats.read_text()))
            except (OSError, ValueError):
                out.append({"timers": {}, "counts": {}})
        return out

    def _name_threads(self) -> None:
        """Give the broker threads telling names (they are all 'hareflow-amqp'), for the profiles."""
        if self.notifier is not None:
            self.notifier._thread.name = "bench-amqp"  # noqa: SLF001
        for i, w in enumerate(self.cluster.workers):
            if w.ref:
                ex = getattr(w.ref[0], "_executor", None)
                thread = getattr(ex, "_thread", None)
                if isinstance(thread, threading.Thread):
                    thread.name = f"worker{i}-amqp"
        for t in threading.enumerate():
            if t.name == "hareflow-amqp":
                t.name = "scheduler-amqp"

    def _wait_for_workers(self, timeout: float) -> None:
        from hareflow.common.db import Worker
        from sqlalchemy import func, select

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.cluster.sessions() as s:
                n = s.scalar(select(func.count()).select_from(Worker).where(Worker.state == "active"))
            if n and n >= self.cfg.workers:
                return
            time.sleep(0.05)
        raise TimeoutError("worker heartbeats did not appear in the worker table")

    def stop(self) -> None:
        try:
            if self.notifier is not None:
                self.notifier.close()
            for proc, _ in self.worker_procs:
                proc.terminate()
            for proc, _ in self.worker_procs:
                try:
                    proc.wait(timeout=30)
                except Exception:
                    proc.kill()
                    proc.wait(timeout=10)
            if self.cluster is not None:
                self.cluster.stop(timeout=20)
        finally:
            if self._db_created:
                env.drop_database(self.cfg.database, self.cfg.db_name)
            if self.cfg.executor == "rabbitmq":
                env.delete_topology(self.cfg.prefix)

    # -- triggering and waiting ------------------------------------------------------------------

    def trigger(self, dag_id: str, run_id: str) -> float:
        from hareflow.common.messages import StateEvent

        t0 = time.time()
        self.cluster.trigger(dag_id, run_id=run_id)
        if self.notifier is not None:
            self.notifier.publish_events(
                [StateEvent(kind="run", dag_id=dag_id, run_id=run_id, state="queued", at=time.time())]
            )
        return t0

    def wait(self, dag_id: str, run_id: str, timeout: float) -> tuple[str, float]:
        from hareflow.common.db import DagRun
        from sqlalchemy import select

        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            with self.cluster.sessions() as s:
                state = s.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
            if state in ("success", "failed"):
                return state, time.time()
            time.sleep(0.02)
        raise TimeoutError(f"run {dag_id}/{run_id} did not finish within {timeout}s (last state {state})")

    def fetch(self, dag_id: str, run_id: str) -> tuple[Any, list[Any], int]:
        from hareflow.common.db import DagRun, TaskInstance, TaskResult
        from sqlalchemy import func, select

        with self.cluster.sessions() as s:
            run = s.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
            tis = list(s.scalars(select(TaskInstance).where(TaskInstance.run_pk == run.id)))
            results = s.scalar(
                select(func.count())
                .select_from(TaskResult)
                .join(TaskInstance, TaskResult.ti_id == TaskInstance.id)
                .where(TaskInstance.run_pk == run.id)
            )
            s.expunge_all()
        return run, tis, int(results or 0)

    def measured_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        from benchmarks import instrument

        assert self.cpu is not None
        self.cpu.refresh_backends()
        load = env.load_average()
        wbefore = self.worker_stats()
        ibefore = instrument.snapshot()
        before = self.cpu.snapshot()
        t0 = self.trigger(dag_id, run_id)
        state, seen = self.wait(dag_id, run_id, timeout)
        after = self.cpu.snapshot()
        internals = instrument.diff(ibefore, instrument.snapshot())
        for i, (a, b) in enumerate(zip(wbefore, self.worker_stats(), strict=False)):
            internals[f"worker_process_{i}"] = instrument.diff(a, b)
        run, tis, results = self.fetch(dag_id, run_id)
        return {
            "state": state,
            "run": run,
            "tis": tis,
            "results": results,
            "t_trigger": t0,
            "observed_s": seen - t0,
            "load_avg_before": load,
            "cpu": env.CpuMeter.delta(before, after),
            "internals": internals,
        }

    def warm_up(self, timeout: float) -> float:
        t0 = time.monotonic()
        rid = f"warmup-{int(time.time() * 1000)}"
        self.trigger(WARMUP_DAG, rid)
        state, _ = self.wait(WARMUP_DAG, rid, timeout)
        if state != "success":
            raise RuntimeError(f"the warm-up run ended {state}")
        return time.monotonic() - t0


# -- the two scenarios -----------------------------------------------------------------------------------


def base_record(cfg: SystemConfig, bench: str) -> dict[str, Any]:
    return {
        "bench": bench,
        "executor": cfg.executor,
        "database": cfg.database,
        "queue_type": cfg.queue_type if cfg.executor == "rabbitmq" else None,
        "workers": cfg.workers,
        "worker_mode": cfg.worker_mode,
        "concurrency": cfg.concurrency,
        "scheduler_idle_wait_s": cfg.idle_wait,
    }


def chain40(system: BenchSystem, index: int, timeout: float) -> dict[str, Any]:
    cfg = system.cfg
    m = system.measured_run(CHAIN_DAG, f"chain-{index}", timeout)
    run, tis = m["run"], sorted(m["tis"], key=lambda t: t.task_id)
    ok = m["state"] == "success" and len(tis) == CHAIN_LENGTH and all(t.state == "success" for t in tis)
    hops, react, deliver, execs = [], [], [], []
    for prev, nxt in zip(tis, tis[1:], strict=False):
        hops.append(_secs(prev.end_date, nxt.start_date))
        react.append(_secs(prev.end_date, nxt.queued_at))
        deliver.append(_secs(nxt.queued_at, nxt.start_date))
    for t in tis:
        execs.append(_secs(t.start_date, t.end_date))
    wall = _secs(run.queued_at, run.end_date)
    slow = [round(h, 3) for h in hops if h >= 0.5 * cfg.idle_wait]
    rec = base_record(cfg, "chain40")
    rec.update(
        {
            "repeat": index,
            "ok": ok,
            "wall_s": round(wall, 4),
            "observed_wall_s": round(m["observed_s"], 4),
            "hop_ms": dist_ms(hops),
            # where a hop goes: previous task's end -> scheduler queues the next (result consumed,
            # committed, event, scheduler iteration), then queued -> the worker reports it running.
            "hop_react_ms": dist_ms(react),
            "hop_deliver_ms": dist_ms(deliver),
            "task_exec_ms": dist_ms(execs),
            "trigger_to_first_queued_ms": round(_secs(run.queued_at, tis[0].queued_at) * 1000, 2),
            "trigger_to_run_start_ms": round(_secs(run.queued_at, run.start_date) * 1000, 2),
            "last_end_to_run_end_ms": round(_secs(tis[-1].end_date, run.end_date) * 1000, 2),
            "hops_near_idle_wait": len(slow),
            "missed_wakeup_suspected": bool(slow),
            "load_avg_before": m["load_avg_before"],
            "cpu": m["cpu"],
            "internals": m["internals"],
        }
    )
    return rec


def fanout(system: BenchSystem, index: int, timeout: float) -> dict[str, Any]:
    cfg = system.cfg
    m = system.measured_run(FANOUT_DAG, f"fanout-{index}", timeout)
    run, tis = m["run"], m["tis"]
    by_id = {t.task_id: t for t in tis}
    n = cfg.width + 2
    states: dict[str, int] = {}
    for t in tis:
        states[t.state] = states.get(t.state, 0) + 1
    complete = all(t.start_date and t.end_date and t.queued_at for t in tis)
    ok = m["state"] == "success" and len(tis) == n and states.get("success") == n and complete
    first, last = by_id["start"], by_id["end"]
    middle = [t for t in tis if t.task_id.startswith("m")]
    run_s = _secs(run.start_date, run.end_date)
    from_trigger = _secs(run.queued_at, run.end_date)
    rec = base_record(cfg, f"fanout{cfg.width}")
    rec.update(
        {
            "repeat": index,
            "ok": ok,
            "width": cfg.width,
            "tasks": n,
            "states": states,
            "results_rows": m["results"],
            "tasks_per_s": round(n / run_s, 1) if ok else None,
            "run_s": round(run_s, 3),
            "tasks_per_s_from_trigger": round(n / from_trigger, 1) if ok else None,
            "wall_from_trigger_s": round(from_trigger, 3),
            "observed_wall_s": round(m["observed_s"], 3),
            # phases, from the task-instance timestamps
            "phase_s": {
                "trigger_to_start_task_end": round(_secs(run.queued_at, first.end_date), 3),
                "start_end_to_middle_queued_first": round(
                    _secs(first.end_date, min(t.queued_at for t in middle)), 3
                ),
                "middle_queued_spread": round(
                    _secs(min(t.queued_at for t in middle), max(t.queued_at for t in middle)), 3
                ),
                "middle_first_start_to_last_end": round(
                    _secs(min(t.start_date for t in middle), max(t.end_date for t in middle)), 3
                ),
                "middle_last_end_to_end_queued": round(
                    _secs(max(t.end_date for t in middle), last.queued_at), 3
                ),
                "end_task_queued_to_run_end": round(_secs(last.queued_at, run.end_date), 3),
            },
            "middle_exec_rate_per_s": round(
                len(middle)
                / max(1e-9, _secs(min(t.start_date for t in middle), max(t.end_date for t in middle))),
                1,
            ),
            "task_exec_ms": dist_ms([_secs(t.start_date, t.end_date) for t in middle]),
            "queued_to_start_ms": dist_ms([_secs(t.queued_at, t.start_date) for t in middle]),
            "load_avg_before": m["load_avg_before"],
            "cpu": m["cpu"],
            "internals": m["internals"],
        }
    )
    return rec


def summarize(records: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Median (and min/max) over repeats of the named fields; dotted names reach into dicts."""

    def get(rec: dict[str, Any], dotted: str) -> Any:
        cur: Any = rec
        for part in dotted.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        return cur

    out: dict[str, Any] = {}
    for k in keys:
        vals = [v for r in records if isinstance(v := get(r, k), int | float)]
        if vals:
            out[k] = {
                "median": round(statistics.median(vals), 4),
                "min": round(min(vals), 4),
                "max": round(max(vals), 4),
            }
    return out
