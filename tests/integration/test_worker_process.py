"""Real `hareflow worker` and `hareflow results` processes against the real broker and PostgreSQL.

Workers get an unreachable database URL: they must never need one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hareflow.common.db import TaskInstance, TaskLog, Worker
from sqlalchemy import select

from hareflow.cluster import Cluster
from tests.conftest import fast_settings
from tests.fault.report import record_fault

pytestmark = pytest.mark.integration

NO_DATABASE = "postgresql+psycopg2://nobody:secret@127.0.0.1:1/nothing"


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class System:
    def __init__(self, tmp_path: Path, settings, cluster: Cluster) -> None:
        self.tmp_path = tmp_path
        self.settings = settings
        self.cluster = cluster
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
        env.update(
            HAREFLOW_BROKER_URL=self.settings.broker_url,
            HAREFLOW_BROKER_PREFIX=self.settings.broker_prefix,
            HAREFLOW_DAGS_FOLDER=str(self.settings.dags_folder),
            HAREFLOW_DATABASE_URL=NO_DATABASE,
            HAREFLOW_HEARTBEAT_INTERVAL="0.5",
            HAREFLOW_LOG_CHUNK_INTERVAL="0.1",
            HAREFLOW_HOME=str(self.tmp_path / "worker-home"),
        )
        return env

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{'-'.join(args)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "hareflow.cli", *args],
            env=env or self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def worker(self, name: str, concurrency: int = 1) -> subprocess.Popen[bytes]:
        proc = self.spawn("worker", "--name", name, "--concurrency", str(concurrency))
        wait_until(lambda: self.worker_state(name) == "active", 60, f"worker {name} to heartbeat")
        return proc

    def worker_state(self, name: str) -> str | None:
        with self.cluster.sessions() as s:
            w = s.get(Worker, name)
            return w.state if w else None

    def tis(self, run_id: str) -> dict[str, TaskInstance]:
        with self.cluster.sessions() as s:
            rows = s.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id))
            return {ti.task_id: ti for ti in rows}

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def system(
    tmp_path: Path, postgres_url: str, rabbitmq_url: str, broker_prefix: str, dags_folder: Path
) -> Iterator[System]:
    settings = fast_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=rabbitmq_url,
        broker_prefix=broker_prefix,
        dags_folder=str(dags_folder),
    )
    yield from _system(tmp_path, settings)


def _system(tmp_path: Path, settings) -> Iterator[System]:
    cluster = Cluster(settings, workers=[])
    cluster.migrate()
    sys_ = System(tmp_path, settings, cluster)
    try:
        yield sys_
    finally:
        sys_.close()
        cluster.stop()


def marker_task(name: str, first_sleep: float, later_sleep: float = 0.0) -> str:
    """Source of a task that records each run in a marker file and sleeps longer the first time."""
    return f'''
    @task
    def {name}():
        import pathlib, time
        marker = pathlib.Path(__file__).with_name("{name}.runs")
        runs = marker.read_text().count("ran") if marker.exists() else 0
        with marker.open("a") as f:
            f.write("ran\\n")
        time.sleep({first_sleep} if runs == 0 else {later_sleep})
        return runs + 1
'''


def test_sigterm_lets_running_tasks_finish_then_stops_consuming(
    system: System, write_dag, dags_folder: Path
) -> None:
    write_dag(
        "graceful.py",
        "from datetime import datetime\nfrom hareflow import DAG, task\n"
        'with DAG("graceful", start_date=datetime(2026, 1, 1)):\n'
        + marker_task("slow_a", 2.0).replace("\n    ", "\n    ")
        + marker_task("slow_b", 2.0)
        + "\n    @task\n    def after(a, b):\n        return a + b\n\n    after(slow_a(), slow_b())\n",
    )
    system.cluster.start()
    system.cluster.wait_for_dag("graceful")
    w1 = system.worker("w1", concurrency=2)
    run_id = system.cluster.trigger("graceful")
    wait_until(
        lambda: all(
            system.tis(run_id).get(t) and system.tis(run_id)[t].state == "running"
            for t in ("slow_a", "slow_b")
        ),
        60,
        "both slow tasks to run",
    )
    w1.send_signal(signal.SIGTERM)
    assert w1.wait(60) == 0
    tis = system.tis(run_id)
    assert (tis["slow_a"].state, tis["slow_b"].state) == ("success", "success")
    # The scheduler moves "after" on once it has read both successes; nobody consumes it any more.
    wait_until(
        lambda: system.tis(run_id)["after"].state in ("scheduled", "queued"), 30, "'after' to be dispatched"
    )
    time.sleep(1.0)
    assert system.tis(run_id)["after"].state in ("scheduled", "queued")
    assert system.worker_state("w1") == "stopped"
    system.worker("w2")
    assert system.cluster.wait_for_run("graceful", run_id, 60) == "success"
    tis = system.tis(run_id)
    assert tis["after"].worker == "w2"
    runs = {name: (dags_folder / f"{name}.runs").read_text().count("ran") for name in ("slow_a", "slow_b")}
    record_fault(
        "worker SIGTERM mid-task (finishes its tasks, then stops)",
        tasks=len(tis),
        lost=sum(1 for ti in tis.values() if ti.state != "success"),
        more_than_once=sum(1 for n in runs.values() if n > 1),
    )
    assert runs == {"slow_a": 1, "slow_b": 1}  # finished once, not handed back and re-run


def test_a_second_sigterm_hands_back_the_running_task_to_another_worker(
    system: System, write_dag, dags_folder: Path
) -> None:
    write_dag(
        "abandon.py",
        "from datetime import datetime\nfrom hareflow import DAG, task\n"
        'with DAG("abandon", start_date=datetime(2026, 1, 1)):\n'
        + marker_task("long", 60.0)
        + "\n    long()\n",
    )
    system.cluster.start()
    system.cluster.wait_for_dag("abandon")
    w1 = system.worker("w1")
    run_id = system.cluster.trigger("abandon")
    wait_until(
        lambda: system.tis(run_id).get("long") and system.tis(run_id)["long"].state == "running",
        60,
        "running",
    )
    w1.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the second signal must arrive as a second signal, not be merged with the first
    w1.send_signal(signal.SIGTERM)
    w1.wait(30)
    system.worker("w2")
    assert system.cluster.wait_for_run("abandon", run_id, 60) == "success"
    ti = system.tis(run_id)["long"]
    assert (ti.worker, ti.try_number) == ("w2", 1)  # redelivered: the same try, not a retry
    assert (dags_folder / "long.runs").read_text().count("ran") == 2


def test_task_output_reaches_the_metastore_while_the_task_is_still_running(system: System, write_dag) -> None:
    write_dag(
        "chatty.py",
        """
        import time
        from datetime import datetime
        from hareflow import DAG, task
        with DAG("chatty", start_date=datetime(2026, 1, 1)):
            @task
            def talk():
                for i in range(20):
                    print(f"line {i}", flush=True)
                    time.sleep(0.2)
            talk()
        """,
    )
    system.cluster.start()
    system.cluster.wait_for_dag("chatty")
    system.worker("w1")
    run_id = system.cluster.trigger("chatty")

    def log_while_running() -> bool:
        with system.cluster.sessions() as s:
            ti = s.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)).first()
            if ti is None or ti.state != "running":
                return False
            return s.scalars(select(TaskLog).where(TaskLog.ti_id == ti.id)).first() is not None

    wait_until(log_while_running, 60, "a log chunk stored while the task runs")
    assert system.cluster.wait_for_run("chatty", run_id, 60) == "success"
    with system.cluster.sessions() as s:
        ti = s.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)).one()
        chunks = s.scalars(select(TaskLog).where(TaskLog.ti_id == ti.id).order_by(TaskLog.seq)).all()
    text = "".join(c.text for c in chunks)
    assert len(chunks) > 1
    assert [line for line in text.splitlines() if line.startswith("line ")] == [
        f"line {i}" for i in range(20)
    ]


def test_a_separate_results_process_records_everything(
    tmp_path: Path, postgres_url: str, rabbitmq_url: str, broker_prefix: str, dags_folder: Path, write_dag
) -> None:
    settings = fast_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=rabbitmq_url,
        broker_prefix=broker_prefix,
        dags_folder=str(dags_folder),
        run_results_consumer=False,
    )
    write_dag(
        "pair.py",
        """
        from datetime import datetime
        from hareflow import DAG, task
        with DAG("pair", start_date=datetime(2026, 1, 1)):
            @task
            def a():
                return 20
            @task
            def b(x):
                return x + 1
            b(a())
        """,
    )
    for system in _system(tmp_path, settings):
        system.cluster.start()
        system.cluster.wait_for_dag("pair")
        env = system.env()
        env["HAREFLOW_DATABASE_URL"] = postgres_url
        system.spawn("results", env=env)
        system.worker("w1")
        run_id = system.cluster.trigger("pair")
        assert system.cluster.wait_for_run("pair", run_id, 60) == "success"
        assert {t: ti.state for t, ti in system.tis(run_id).items()} == {"a": "success", "b": "success"}
