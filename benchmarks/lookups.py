"""What a task's ``Connection.get`` / ``Variable.get`` costs, measured as a task sees it.

The system: the scheduler (with its lookup server) in this process on a fresh PostgreSQL
metastore, and a separate ``hareflow worker`` process given only the broker URL and the DAG
folder — no database URL, as in production. One DAG, one task, which times from inside itself:

- ``first``: ``Connection.get`` of N distinct connections (each a full round trip: task process →
  pipe → worker → broker → lookup server → metastore → direct reply-to → worker → pipe);
- ``cached``: the same N again (answered from the try's cache);
- ``variable``: ``Variable.get`` of N distinct variables (round trips too).

Then, in this process, the lookup server alone (``LookupServer.handle``: the live-try check and
the metastore read, no broker) for the same connections, so the broker's share is visible.

    python -m benchmarks.lookups [--count 200] [--repeat 3]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import env
from benchmarks.flow import dist_ms

DAG = """
import time
from hareflow import DAG, Connection, Variable, task

with DAG("bench_lookups", max_active_runs=1):
    @task
    def look(count: int = {count}):
        def timed(fn, names):
            out = []
            for name in names:
                t0 = time.perf_counter()
                fn(name)
                out.append(time.perf_counter() - t0)
            return out

        conns = [f"c{{i:04d}}" for i in range(count)]
        first = timed(Connection.get, conns)
        cached = timed(Connection.get, conns)
        variables = timed(Variable.get, [f"v{{i:04d}}" for i in range(count)])
        return {{"first": first, "cached": cached, "variable": variables}}

    look()
"""


def _settings(workdir: Path, db_name: str, prefix: str, key: str) -> Any:
    from hareflow.common.config import load_settings

    dags = workdir / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    return load_settings(
        env={},
        overrides={
            "home": str(workdir / "home"),
            "database_url": env.database_url("postgres", db_name, workdir),
            "broker_url": env.AMQP_URL,
            "broker_prefix": prefix,
            "dags_folder": str(dags),
            "dags_are_paused_at_creation": False,
            "fernet_key": key,
            "log_level": "WARNING",
        },
    )


def _seed(cluster: Any, key: str, count: int) -> None:
    from hareflow.common.secrets import Connection, store
    from hareflow.common.secrets.crypto import Cipher

    cipher = Cipher([key])
    with cluster.sessions() as session, session.begin():
        for i in range(count):
            conn = Connection(f"c{i:04d}", "postgresql", host="db", login="u", password=f"pw-{i}", schema="d")
            store.put_connection(session, conn, cipher)
            store.put_variable(session, f"v{i:04d}", {"i": i}, cipher)


def _worker(settings: Any, workdir: Path) -> subprocess.Popen[bytes]:
    child_env = env.worker_environment(settings, HAREFLOW_HOME=str(workdir / "worker-home"))
    return subprocess.Popen(
        [sys.executable, "-m", "hareflow.cli", "worker", "--concurrency", "1"],
        env=child_env,
        cwd=str(Path(__file__).resolve().parents[1]),
    )


def _server_only(cluster: Any, settings: Any, count: int) -> list[float]:
    """LookupServer.handle for a live try, without the broker."""
    from hareflow.common.db import TaskInstance
    from hareflow.common.messages import LookupRequest, TaskKey
    from hareflow.scheduler.lookups import LookupServer
    from sqlalchemy import select, update

    server = LookupServer(settings, cluster.sessions)
    with cluster.sessions() as session, session.begin():
        ti = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == "bench_lookups")).first()
        assert ti is not None
        session.execute(update(TaskInstance).where(TaskInstance.id == ti.id).values(state="running"))
        key = TaskKey(ti.id, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number)
    out = []
    for i in range(count):
        body = LookupRequest("connection", f"c{i:04d}", key).encode()
        t0 = time.perf_counter()
        reply = json.loads(server.handle(body))
        out.append(time.perf_counter() - t0)
        assert reply["ok"], reply
    with cluster.sessions() as session, session.begin():
        session.execute(update(TaskInstance).where(TaskInstance.id == ti.id).values(state="success"))
    return out


def run(count: int, repeat: int) -> dict[str, Any]:
    from hareflow.common.secrets.crypto import generate_key

    from hareflow.cluster import Cluster

    key = generate_key()
    db_name, prefix = env.new_db_name(), env.new_prefix()
    workdir = Path(tempfile.mkdtemp(prefix="hfbench-lookups-"))
    settings = _settings(workdir, db_name, prefix, key)
    (workdir / "dags" / "bench_lookups.py").write_text(DAG.format(count=count))
    env.create_database("postgres", db_name)
    cluster = Cluster(settings, workers=())
    worker = None
    runs: list[dict[str, list[float]]] = []
    server: list[float] = []
    try:
        cluster.migrate()
        cluster.start()
        _seed(cluster, key, count)
        worker = _worker(settings, workdir)
        cluster.wait_for_dag("bench_lookups", timeout=60)
        for _ in range(repeat):
            run_id = cluster.trigger("bench_lookups")
            state = cluster.wait_for_run("bench_lookups", run_id, timeout=300)
            if state != "success":
                raise RuntimeError(f"benchmark run ended {state}")
            runs.append(_result(cluster, run_id))
        server = _server_only(cluster, settings, count)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        cluster.stop()
        env.drop_database("postgres", db_name)
        env.delete_topology(prefix)
        shutil.rmtree(workdir, ignore_errors=True)

    def joined(name: str) -> list[float]:
        return [v for r in runs for v in r[name]]

    return {
        "bench": "lookups",
        "count": count,
        "repeat": repeat,
        "machine": env.machine_info(),
        "task_side_ms": {name: dist_ms(joined(name)) for name in ("first", "cached", "variable")},
        "server_only_ms": dist_ms(server),
        "per_run_first_median_ms": [round(statistics.median(r["first"]) * 1000, 3) for r in runs],
    }


def _result(cluster: Any, run_id: str) -> dict[str, list[float]]:
    from hareflow.common.db import TaskInstance, TaskResult
    from sqlalchemy import select

    with cluster.sessions() as session:
        text = session.scalar(
            select(TaskResult.value_json)
            .join(TaskInstance, TaskInstance.id == TaskResult.ti_id)
            .where(TaskInstance.dag_id == "bench_lookups", TaskInstance.run_id == run_id)
        )
    return json.loads(text or "{}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with env.quiet_logging():
        print(json.dumps(run(args.count, args.repeat), indent=2))


if __name__ == "__main__":
    main()
