"""A thousand sensors waiting in reschedule mode: what they hold, what they cost the scheduler,
what one reschedule cycle costs.

One DAG of N ``FileSensor`` tasks (N = 1,000 by default) on a file that never appears,
``mode="reschedule"``, ``poke_interval`` 60 s (long enough that no poke comes due while the
waiting is measured), ``max_active_tasks`` N; a real scheduler, results
consumer and worker (RabbitMQ, PostgreSQL), the worker in this process (``--worker-mode thread``)
or a separate one (``process``). Measured:

- **cycle**: from the trigger until every sensor has poked once and is ``up_for_reschedule``: N
  dispatch → task process → poke → result → state write cycles; wall time and CPU per cycle;
- **waiting**: for ``--window`` seconds while no poke is due, sampled every 0.2 s: task instances
  queued or running, and the slots the worker(s) report busy (their heartbeats; in thread mode
  also the worker objects themselves);
- **scheduler pass** while they wait (a second scheduler object probes: full pass, and incremental
  pass with nothing changed), against the same passes with no run active (before the trigger).
  Probes run only while no poke is due within the next second, so they decide nothing.

    python -m benchmarks.sensors [--sensors 1000] [--poke-interval 60] [--concurrency 4]
                                 [--worker-mode thread|process] [--window 10]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import env

DAG = """
from hareflow import DAG, FileSensor

with DAG("bench_sensors", max_active_tasks={n}):
    for i in range({n}):
        FileSensor(task_id=f"s{{i:04d}}", filepath="/nonexistent/hareflow-bench/{{{{ ds }}}}.csv",
                   mode="reschedule", poke_interval={interval}, timeout=3600)
"""


def _probe_passes(probe: Any, sessions: Any, repeat: int, guard: Any) -> dict[str, Any]:
    """Median full and incremental pass times of ``probe`` (a scheduler publishing nowhere)."""
    from hareflow.scheduler.loop import LoopReport

    full: list[float] = []
    incremental: list[float] = []
    for _ in range(repeat):
        if not guard():
            break
        began = time.perf_counter()
        probe.schedule_runs(datetime.now(UTC), LoopReport())
        full.append(time.perf_counter() - began)
        began = time.perf_counter()
        probe.schedule_runs(datetime.now(UTC), LoopReport(), incremental=True)
        incremental.append(time.perf_counter() - began)
    assert not probe._executor.published, "a probe pass dispatched something"  # noqa: SLF001
    return {
        "full_pass_ms": round(statistics.median(full) * 1000, 2) if full else None,
        "incremental_pass_ms": round(statistics.median(incremental) * 1000, 2) if incremental else None,
        "samples": len(full),
    }


def _counts(sessions: Any, run_id: str) -> dict[str, int]:
    from hareflow.common.db import TaskInstance
    from sqlalchemy import func, select

    with sessions() as s:
        rows = s.execute(
            select(TaskInstance.state, func.count())
            .where(TaskInstance.run_id == run_id)
            .group_by(TaskInstance.state)
        ).all()
    return {state: int(n) for state, n in rows}


def _earliest_poke(sessions: Any, run_id: str) -> datetime | None:
    from hareflow.common.db import TaskInstance
    from sqlalchemy import func, select

    with sessions() as s:
        return s.scalar(
            select(func.min(TaskInstance.next_retry_at)).where(
                TaskInstance.run_id == run_id, TaskInstance.state == "up_for_reschedule"
            )
        )


def _busy_slots(sessions: Any) -> int:
    from hareflow.common.db import Worker
    from sqlalchemy import func, select

    with sessions() as s:
        return int(
            s.scalar(select(func.coalesce(func.sum(Worker.running), 0)).where(Worker.state == "active")) or 0
        )


def run(n: int, interval: float, concurrency: int, worker_mode: str, window: float) -> dict[str, Any]:
    import subprocess
    import sys

    from hareflow.common.broker.local import LocalExecutor
    from hareflow.common.config import load_settings
    from hareflow.common.messages import TaskMessage
    from hareflow.scheduler.loop import Scheduler

    from hareflow.cluster import Cluster, WorkerSpec

    class Keeping(LocalExecutor):
        def __init__(self) -> None:
            super().__init__()
            self.published: list[TaskMessage] = []

        def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
            self.published.extend(messages)

    out: dict[str, Any] = {
        "bench": "sensors_reschedule",
        "sensors": n,
        "poke_interval": interval,
        "concurrency": concurrency,
        "worker_mode": worker_mode,
        "machine": env.machine_info(),
    }
    db_name, prefix = env.new_db_name(), env.new_prefix()
    procs: list[Any] = []
    with env.quiet_logging(), tempfile.TemporaryDirectory(prefix="hfbench-sensors-") as tmp:
        workdir = Path(tmp)
        dags = workdir / "dags"
        dags.mkdir()
        (dags / "bench_sensors.py").write_text(DAG.format(n=n, interval=interval))
        settings = load_settings(
            env={},
            overrides={
                "home": str(workdir / "home"),
                "database_url": env.database_url("postgres", db_name, workdir),
                "broker_url": env.AMQP_URL,
                "broker_prefix": prefix,
                "dags_folder": str(dags),
                "dags_are_paused_at_creation": False,
                "worker_concurrency": concurrency,
                "heartbeat_interval": 1.0,
                "log_level": "WARNING",
            },
        )
        env.create_database("postgres", db_name)
        in_process = worker_mode == "thread"
        cluster = Cluster(
            settings, workers=[WorkerSpec(concurrency=concurrency, name="bench-w0")] if in_process else ()
        )
        try:
            cluster.migrate()
            cluster.start()
            if not in_process:
                child_env = env.worker_environment(settings, HAREFLOW_HEARTBEAT_INTERVAL="1")
                stats = workdir / "worker.stats.json"
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "benchmarks.worker_proc", "--name", "bench-w0",
                         "--concurrency", str(concurrency), "--stats", str(stats)],
                        env=child_env,
                        cwd=str(Path(__file__).resolve().parents[1]),
                    )
                )  # fmt: skip
            cluster.wait_for_dag("bench_sensors", timeout=300)
            sessions = cluster.sessions
            probe = Scheduler(settings=settings, session_factory=sessions, executor=Keeping())
            out["idle"] = _probe_passes(probe, sessions, 20, lambda: True)
            cpu = env.CpuMeter(db_name)
            cpu.refresh_backends()
            before = cpu.snapshot()
            began = time.monotonic()
            run_id = cluster.trigger("bench_sensors")
            while _counts(sessions, run_id).get("up_for_reschedule", 0) < n:
                cpu.refresh_backends()
                time.sleep(0.2)
                if time.monotonic() - began > 600:
                    raise RuntimeError(f"not all sensors rescheduled: {_counts(sessions, run_id)}")
            wall = time.monotonic() - began
            used = env.CpuMeter.delta(before, cpu.snapshot())
            out["first_cycle"] = {
                "wall_s": round(wall, 2),
                "cycles_per_s": round(n / wall, 1),
                "wall_ms_per_cycle": round(wall / n * 1000, 2),
                "cpu_ms_per_cycle": round(
                    sum(used[g]["cpu_s"] for g in env.GROUPS if g not in ("other", "postgres_other"))
                    / n
                    * 1000,
                    2,
                ),
                "cpu": used,
            }
            # While no poke is due: what they hold, and what the scheduler pays for them.
            samples: list[tuple[int, int, int]] = []
            deadline = time.monotonic() + window + settings.heartbeat_interval * 1.5

            def quiet() -> bool:
                first = _earliest_poke(sessions, run_id)
                return first is not None and first > datetime.now(UTC) + timedelta(seconds=1)

            time.sleep(settings.heartbeat_interval * 1.5)  # a heartbeat sent since the last poke ended
            while time.monotonic() < deadline and quiet():
                counts = _counts(sessions, run_id)
                held = sum(len(w.ref[0]._running) for w in cluster.workers if w.ref) if in_process else -1  # noqa: SLF001
                samples.append(
                    (counts.get("queued", 0) + counts.get("running", 0), _busy_slots(sessions), held)
                )
                time.sleep(0.2)
            out["waiting"] = {
                "samples": len(samples),
                "max_queued_or_running": max((s[0] for s in samples), default=None),
                "max_busy_slots_heartbeat": max((s[1] for s in samples), default=None),
                "max_busy_slots_worker": max((s[2] for s in samples), default=None) if in_process else None,
                "slots": concurrency,
            }
            out["waiting_passes"] = _probe_passes(probe, sessions, 20, quiet)
            out["states"] = _counts(sessions, run_id)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=60)
            cluster.stop()
            env.delete_topology(prefix)
            env.drop_database("postgres", db_name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sensors", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sensors", type=int, default=1000)
    ap.add_argument("--poke-interval", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--worker-mode", choices=["thread", "process"], default="thread")
    ap.add_argument("--window", type=float, default=10.0)
    args = ap.parse_args(argv)
    result = run(args.sensors, args.poke_interval, args.concurrency, args.worker_mode, args.window)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
