"""What `hareflow dags trigger --wait` costs while it follows a wide run; one JSON object per line.

    python -m benchmarks.follow [--width 2000] [--repeat 3] [--concurrency 8]

Starts a whole system in this process (``benchmarks.flow.BenchSystem``: PostgreSQL, RabbitMQ, the
scheduler, the results consumer and one worker), then, ``--repeat`` times, runs the real command
``python -m hareflow.cli dags trigger bench_fanout --wait`` as a separate process (as a user types
it, with the system's settings in its environment) and reports, per run: the command's own CPU
seconds (user + system, from ``wait4``), its wall time, the lines it printed and the run's
tasks/s from trigger to end. The database and broker names are removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import env
from benchmarks.flow import FANOUT_DAG, BenchSystem, SystemConfig

log = logging.getLogger("benchmarks")


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def command_environment(settings: Any) -> dict[str, str]:
    """The CLI's environment: a separate worker's (broker, prefix, DAG folder, home) plus the
    metastore, which the command reads."""
    return env.worker_environment(settings, HAREFLOW_DATABASE_URL=settings.database_url)


def follow_once(system: BenchSystem, index: int, timeout: float) -> dict[str, Any]:
    from hareflow.common.db import DagRun
    from sqlalchemy import select

    run_id = f"follow-{index}-{int(time.time() * 1000)}"
    cmd = [sys.executable, "-m", "hareflow.cli", "dags", "trigger", FANOUT_DAG, "--run-id", run_id, "--wait"]
    # Its output goes to files: a pipe nobody reads during the run would fill and stop it.
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd, env=command_environment(system.cluster.settings), stdout=out_file, stderr=err_file
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(), err_file.read().decode()
    with system.cluster.sessions() as s:
        run = s.scalar(select(DagRun).where(DagRun.dag_id == FANOUT_DAG, DagRun.run_id == run_id))
    from_trigger = (run.end_date - run.queued_at).total_seconds() if run and run.end_date else None
    width = system.cfg.width + 2
    return {
        "type": "follow",
        "repeat": index,
        "exit_code": proc.returncode,
        "ok": proc.returncode == 0 and bool(run) and run.state == "success",
        "tasks": width,
        "command_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "command_wall_s": round(wall, 3),
        "lines": len(out.splitlines()),
        "run_from_trigger_s": round(from_trigger, 3) if from_trigger else None,
        "tasks_per_s_from_trigger": round(width / from_trigger, 1) if from_trigger else None,
        "stderr_tail": err[-300:] if proc.returncode else "",
        "timeout_s": timeout,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    emit({"type": "machine", **env.machine_info()})
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SystemConfig(
            executor="rabbitmq",
            database="postgres",
            queue_type="classic",
            concurrency=args.concurrency,
            workers=1,
            width=args.width,
            prefix=env.new_prefix(),
            db_name=env.new_db_name(),
            workdir=Path(tmp),
        )
        system = BenchSystem(cfg)
        try:
            system.start()
            system.warm_up(timeout=120)
            records = []
            for i in range(args.repeat + 1):  # the first is a warm-up
                record = follow_once(system, i, args.timeout)
                if i:
                    records.append(record)
                    emit(record)
            summary: dict[str, Any] = {"type": "summary", "width": args.width, "runs": len(records)}
            for key in ("command_cpu_s", "command_wall_s", "tasks_per_s_from_trigger", "lines"):
                values = [r[key] for r in records if r[key] is not None]
                summary[key] = statistics.median(values) if values else None
            summary["load_average"] = env.load_average()
            emit(summary)
        finally:
            system.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
