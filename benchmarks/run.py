"""Run the hareflow benchmarks; one JSON object per measurement on stdout, logs on stderr.

    python -m benchmarks.run [--executor local|rabbitmq|both] [--scenario chain40|fanout|broker|all]
                             [--width N] [--repeat K] [--queue-type classic|quorum|both]
                             [--database postgres|sqlite] [--concurrency C] [--workers W]
                             [--timeout S] [--profile DIR [--profile-mode gil|active]]

Each (scenario, executor, queue type) runs in its own child process with a hard time limit, a fresh
temporary database and a fresh broker prefix, both removed afterwards even if the child had to be
killed. Record kinds on stdout (field ``type``): ``machine`` (once), ``measurement`` (one per
measured run), ``summary`` (median/min/max over the repeats of one configuration), ``profile``
(with --profile: where the samples went), ``error``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import env

log = logging.getLogger("benchmarks")
REPO = Path(__file__).resolve().parents[1]

CHAIN_KEYS = [
    "wall_s",
    "observed_wall_s",
    "hop_ms.p50",
    "hop_ms.p99",
    "hop_ms.max",
    "hop_react_ms.p50",
    "hop_deliver_ms.p50",
    "task_exec_ms.p50",
    "trigger_to_first_queued_ms",
    "last_end_to_run_end_ms",
    "hops_near_idle_wait",
    "cpu.bench_process.cores",
    "cpu.bench_children.cores",
    "cpu.postgres_ours.cores",
    "cpu.rabbitmq.cores",
    "cpu.other.cores",
]
FANOUT_KEYS = [
    "tasks_per_s",
    "run_s",
    "tasks_per_s_from_trigger",
    "wall_from_trigger_s",
    "middle_exec_rate_per_s",
    "phase_s.middle_queued_spread",
    "phase_s.start_end_to_middle_queued_first",
    "phase_s.middle_first_start_to_last_end",
    "phase_s.middle_last_end_to_end_queued",
    "queued_to_start_ms.p50",
    "task_exec_ms.p50",
    "cpu.bench_process.cores",
    "cpu.bench_children.cores",
    "cpu.postgres_ours.cores",
    "cpu.rabbitmq.cores",
    "cpu.other.cores",
]
BROKER_KEYS = [
    "publish_tasks_batch.msgs_per_s",
    "consume_prefetch_8.msgs_per_s",
    "consume_prefetch_2000.msgs_per_s",
    "publish_result_confirmed_1_thread.msgs_per_s",
    "publish_result_confirmed_8_threads.msgs_per_s",
]


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


# -- the child: one configuration ---------------------------------------------------------------------


def child_main(cfg: dict[str, Any]) -> int:
    from benchmarks import flow

    workdir = Path(cfg["workdir"])
    scenario = cfg["scenario"]
    if scenario == "broker":
        from benchmarks.broker import run_broker_bench

        records = []
        for i in range(cfg["repeat"]):
            rec = run_broker_bench(cfg["queue_type"], workdir / f"b{i}")
            rec.update({"type": "measurement", "repeat": i})
            emit(rec)
            records.append(rec)
        emit(
            {
                "type": "summary",
                "bench": "broker",
                "executor": "rabbitmq",
                "queue_type": cfg["queue_type"],
                "repeats": len(records),
                "median": flow.summarize(records, BROKER_KEYS),
            }
        )
        return 0

    sc = flow.SystemConfig(
        executor=cfg["executor"],
        database=cfg["database"],
        queue_type=cfg["queue_type"],
        concurrency=cfg["concurrency"],
        workers=cfg["workers"],
        width=cfg["width"],
        prefix=cfg["prefix"],
        db_name=cfg["db_name"],
        workdir=workdir,
        idle_wait=cfg["idle_wait"],
        worker_mode=cfg["worker_mode"],
    )
    system = flow.BenchSystem(sc)
    spy = None
    records: list[dict[str, Any]] = []
    try:
        t0 = time.monotonic()
        system.start()
        warm = system.warm_up(cfg["timeout"])
        log.info("%s/%s: started and warmed up in %.1fs", scenario, sc.executor, time.monotonic() - t0)
        if cfg.get("profile_dir"):
            from benchmarks.profile import Spy

            raw = Path(cfg["profile_dir"]) / f"{cfg['label']}.raw"
            spy = Spy(raw, gil=cfg["profile_mode"] == "gil")
            spy.start()
        fn = flow.chain40 if scenario == "chain40" else flow.fanout
        for i in range(cfg["repeat"]):
            rec = fn(system, i, cfg["timeout"])
            rec.update({"type": "measurement", "warmup_s": round(warm, 2), "profiled": spy is not None})
            emit(rec)
            records.append(rec)
            if not rec["ok"]:
                log.error("run %d of %s did not fully succeed: %s", i, scenario, rec.get("states"))
    finally:
        if spy is not None:
            spy.stop()
        system.stop()
    keys = CHAIN_KEYS if scenario == "chain40" else FANOUT_KEYS
    good = [r for r in records if r["ok"]]
    summary = flow.base_record(sc, records[0]["bench"] if records else scenario)
    summary.update(
        {
            "type": "summary",
            "repeats": len(records),
            "ok_repeats": len(good),
            "profiled": spy is not None,
            "median": flow.summarize(good, keys),
        }
    )
    if scenario == "chain40":
        summary["missed_wakeup_suspected_any"] = any(r["missed_wakeup_suspected"] for r in records)
    emit(summary)
    if spy is not None:
        from benchmarks.profile import summarize

        prof = summarize(spy.output)
        emit(
            {
                "type": "profile",
                "bench": summary["bench"],
                "executor": sc.executor,
                "queue_type": summary["queue_type"],
                "mode": cfg["profile_mode"],
                "raw": str(spy.output),
                "total_samples": prof["total_samples"],
                "groups": [
                    {
                        k: g[k]
                        for k in (
                            "process",
                            "thread",
                            "samples",
                            "share_of_all_pct",
                            "top_self",
                            "top_inclusive_hareflow",
                            "libraries_inclusive",
                        )
                    }
                    for g in prof["groups"]
                    if g["share_of_all_pct"] >= 0.5
                ],
            }
        )
    return 0 if len(good) == len(records) else 1


# -- the parent: plan, isolate, time-limit, clean up -------------------------------------------------


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    executors = ["local", "rabbitmq"] if args.executor == "both" else [args.executor]
    qtypes = ["classic", "quorum"] if args.queue_type == "both" else [args.queue_type]
    scenarios = ["chain40", "fanout", "broker"] if args.scenario == "all" else [args.scenario]
    configs = []
    for scenario in scenarios:
        if scenario == "broker":
            if "rabbitmq" in executors:
                for q in qtypes:
                    configs.append({"scenario": "broker", "executor": "rabbitmq", "queue_type": q})
            continue
        for ex in executors:
            for q in qtypes if ex == "rabbitmq" else ["classic"]:
                configs.append({"scenario": scenario, "executor": ex, "queue_type": q})
    for c in configs:
        c.update(
            {
                "database": args.database,
                "width": args.width,
                "repeat": args.repeat,
                "concurrency": args.concurrency,
                "workers": args.workers,
                "timeout": args.timeout,
                "idle_wait": args.idle_wait,
                "worker_mode": args.worker_mode if c["executor"] == "rabbitmq" else "thread",
                "prefix": env.new_prefix(),
                "db_name": env.new_db_name(),
                "profile_dir": str(args.profile) if args.profile else None,
                "profile_mode": args.profile_mode,
            }
        )
        width = f"{args.width}" if c["scenario"] == "fanout" else ""
        c["label"] = f"{c['scenario']}{width}-{c['executor']}" + (
            f"-{c['queue_type']}" if c["executor"] == "rabbitmq" else ""
        )
        if c["worker_mode"] == "process" and c["scenario"] != "broker":
            c["label"] += "-workerproc"
        if c["database"] != "postgres" and c["scenario"] != "broker":
            c["label"] += f"-{c['database']}"
    return configs


def run_child(cfg: dict[str, Any], verbose: bool) -> int:
    budget = cfg["timeout"] * (cfg["repeat"] + 1) + 180  # hard limit for the whole configuration
    with tempfile.TemporaryDirectory(prefix="hfbench-") as tmp:
        cfg = {**cfg, "workdir": tmp}
        cmd = [sys.executable, "-m", "benchmarks.run", "--child", json.dumps(cfg)] + (
            ["-v"] if verbose else []
        )
        log.info("running %s (limit %ds)", cfg["label"], budget)
        proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + budget
        try:
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), True)
            import selectors

            sel = selectors.DefaultSelector()
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(cmd, budget)
                if sel.select(timeout=min(left, 5.0)):
                    line = proc.stdout.readline()
                    if not line:
                        break
                    sys.stdout.write(line)
                    sys.stdout.flush()
                elif proc.poll() is not None:
                    break
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("%s exceeded its %ds limit; killing it", cfg["label"], budget)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session: its group only
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
            emit({"type": "error", "label": cfg["label"], "error": f"timed out after {budget}s"})
            rc = -1
        finally:
            # The child cleans up after itself; this covers a child that was killed or crashed.
            if cfg["scenario"] != "broker":
                env.drop_database(cfg["database"], cfg["db_name"])
                if cfg["executor"] == "rabbitmq":
                    env.delete_topology(cfg["prefix"])
        if rc not in (0, -1):
            emit({"type": "error", "label": cfg["label"], "error": f"child exited with {rc}"})
        return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--executor", choices=["local", "rabbitmq", "both"], default="both")
    ap.add_argument("--scenario", choices=["chain40", "fanout", "broker", "all"], default="all")
    ap.add_argument(
        "--width", type=int, default=2000, help="fan-out width (default 2000; 200 is the other size)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--queue-type", choices=["classic", "quorum", "both"], default="classic")
    ap.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--concurrency", type=int, default=8, help="slots per worker (default 8)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--worker-mode",
        choices=["thread", "process"],
        default="thread",
        help="thread: workers run inside the Cluster process (default); process: each worker is its "
        "own process like `hareflow worker` (rabbitmq executor only)",
    )
    ap.add_argument(
        "--idle-wait", type=float, default=1.0, help="scheduler_idle_wait (default 1 s, the default)"
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="hard limit per measured run, seconds")
    ap.add_argument(
        "--profile", type=Path, default=None, help="record py-spy profiles of the measured runs here"
    )
    ap.add_argument(
        "--profile-mode",
        choices=["gil", "active"],
        default="gil",
        help="gil: samples of threads holding the GIL; active: every non-idle thread",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO if args.verbose or not args.child else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("pika", "aio_pika", "aiormq", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.child:
        logging.getLogger("benchmarks").setLevel(logging.INFO)
        try:
            return child_main(json.loads(args.child))
        except Exception as exc:
            traceback.print_exc()
            emit({"type": "error", "label": json.loads(args.child).get("label"), "error": repr(exc)})
            return 2

    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        from benchmarks.profile import Spy

        if not Spy.available():
            ap.error("--profile needs py-spy (pip install py-spy)")
    info = env.machine_info()
    info.update({"type": "machine", "revision": env.git_revision(REPO)})
    emit(info)
    failures = 0
    for cfg in plan(args):
        if run_child(cfg, args.verbose) != 0:
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
