"""Several schedulers at once (the HA deployment), one of them killed mid-run.

Real processes on the shared services: three ``hareflow scheduler`` processes started at the same
instant on a fresh metastore, each with its own ``hareflow results`` process, and two workers. A
cron DAG catches up over a few hourly intervals while a fan-out DAG runs; one scheduler is killed
with SIGKILL in the middle of the fan-out. What must hold, counted from the tasks' own side (every
execution leaves a file) and from the metastore:

- no scheduler dies of another's writes (DAG rows, sources, import errors, runs, heartbeats);
- each cron interval has one run, each DAG one row, the broken file one import error;
- every task ran exactly once and succeeded on its first try: no run was created twice, no task
  was dispatched twice, and what the killed scheduler had in hand was finished by the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hareflow.common.db import (
    Dag,
    DagRun,
    ImportError_,
    TaskInstance,
    create_engine_for,
    make_session_factory,
)
from hareflow.common.db.migrate import migrate
from sqlalchemy import func, select

from tests.fault.conftest import (
    WorkerProcess,
    control_environment,
    start_worker_process,
    wait_dag_active,
    wait_for,
)
from tests.fault.report import record_fault

pytestmark = pytest.mark.fault

SCHEDULERS = 3
WORKERS = 2
CONCURRENCY = 4
PARTS = 24
PART_SECONDS = 0.5
HOURS = 4  # cron intervals to catch up on
#: Longer than any task waits in the queue here (24 half-second parts on 8 slots), shorter than
#: the test: a task the killed scheduler committed but never published is re-published in time.
QUEUED_TIMEOUT = 5.0

MARK = """
import os, uuid

MARKS = {marks!r}

def mark(ctx):
    # One file per execution: dag, run and task; two executions of one task are two files.
    name = f"{{ctx.dag_id}}@{{ctx.run_id}}@{{ctx.task_id}}@{{uuid.uuid4().hex}}"
    open(os.path.join(MARKS, name.replace("/", "_")), "w").close()
"""

CRON_DAG = """
from datetime import datetime
import time
from hareflow import DAG, task
from marking import mark

with DAG("ha_cron", schedule="@hourly", start_date=datetime.fromisoformat({start!r}), catchup=True):
    @task
    def extract(ctx):
        mark(ctx)
        time.sleep(0.2)
        return 1

    @task
    def load(ctx, value):
        mark(ctx)
        return value

    load(extract())
"""

FAN_DAG = """
import time
from hareflow import DAG, task
from marking import mark

with DAG("ha_fan", max_active_tasks=64):
    @task
    def start(ctx):
        mark(ctx)
        return 0

    @task
    def part(ctx, _):
        mark(ctx)
        time.sleep({seconds})
        return 1

    @task
    def join(ctx, *parts):
        mark(ctx)
        return sum(parts)

    first = start()
    join(*[part(first) for _ in range({parts})])
"""

BROKEN_DAG = "from hareflow import DAG\nthis is not python\n"


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the process and everything in its process group (its DAG-parsing children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def _start_service(
    control_processes: Callable[..., subprocess.Popen[bytes]],
    command: str,
    name: str,
    env: dict[str, str],
    log_dir: Path,
) -> Service:
    """``hareflow <command>`` through the fault conftest's ``control_processes`` (which stops it at
    the end), with a home of its own."""
    proc = control_processes(
        command, control_environment(**env, HAREFLOW_HOME=str(log_dir / f"home-{name}")), name
    )
    return Service(name, proc, log_dir / f"{name}.log")


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.mark.timeout(300)
def test_three_schedulers_started_at_once_one_killed_mid_run_run_every_interval_and_task_once(
    postgres_url: str,
    rabbitmq_url: str,
    broker_prefix: str,
    dags_folder: Path,
    tmp_path: Path,
    control_processes: Callable[..., subprocess.Popen[bytes]],
    workers: list[WorkerProcess],
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS)
    (dags_folder / "marking.py").write_text(textwrap.dedent(MARK.format(marks=str(marks))))
    (dags_folder / "cron.py").write_text(CRON_DAG.format(start=start.replace(tzinfo=None).isoformat()))
    (dags_folder / "fan.py").write_text(FAN_DAG.format(seconds=PART_SECONDS, parts=PARTS))
    (dags_folder / "broken.py").write_text(BROKEN_DAG)
    engine = create_engine_for(postgres_url)
    migrate(engine)  # a fresh metastore: nothing parsed, no DAG rows yet
    sessions = make_session_factory(engine)
    env = {
        "HAREFLOW_DATABASE_URL": postgres_url,
        "HAREFLOW_BROKER_URL": rabbitmq_url,
        "HAREFLOW_BROKER_PREFIX": broker_prefix,
        "HAREFLOW_DAGS_FOLDER": str(dags_folder),
        "HAREFLOW_DAGS_ARE_PAUSED_AT_CREATION": "false",
        "HAREFLOW_RUN_RESULTS_CONSUMER": "false",
        "HAREFLOW_SCHEDULER_IDLE_WAIT": "0.2",
        "HAREFLOW_DAG_DIR_LIST_INTERVAL": "0.3",
        "HAREFLOW_QUEUED_TIMEOUT": str(QUEUED_TIMEOUT),
    }
    try:
        # The same instant, as far as processes go: started back to back, before any has parsed.
        schedulers = [
            _start_service(control_processes, "scheduler", f"scheduler-{i}", env, tmp_path)
            for i in range(SCHEDULERS)
        ]
        services = schedulers + [
            _start_service(control_processes, "results", f"results-{i}", env, tmp_path)
            for i in range(SCHEDULERS)
        ]
        for i in range(WORKERS):
            workers.append(
                start_worker_process(
                    f"ha-w{i}",
                    broker_url=rabbitmq_url,
                    prefix=broker_prefix,
                    dags=dags_folder,
                    log_dir=tmp_path,
                    concurrency=CONCURRENCY,
                )
            )

        wait_dag_active(sessions, "ha_fan")
        from hareflow.common.runs import trigger_run

        with sessions() as s, s.begin():
            fan_run = trigger_run(s, "ha_fan", run_id="fan-1").run_id

        def fan_half_done() -> bool:
            with sessions() as s:
                done = s.scalar(
                    select(func.count()).where(
                        TaskInstance.dag_id == "ha_fan", TaskInstance.state == "success"
                    )
                )
            return (done or 0) >= PARTS // 3

        wait_for(fan_half_done, timeout=90, what="the fan-out to be under way", interval=0.05)
        victim = schedulers[0]
        victim.kill()
        killed_at = time.monotonic()

        def everything_finished() -> bool:
            with sessions() as s:
                runs = s.execute(select(DagRun.dag_id, DagRun.state)).all()
            cron_done = [st for d, st in runs if d == "ha_cron" and st in ("success", "failed")]
            fan_done = [st for d, st in runs if d == "ha_fan" and st in ("success", "failed")]
            return len(cron_done) >= HOURS and len(fan_done) == 1

        wait_for(
            everything_finished,
            timeout=180,
            what="every cron interval and the fan-out to finish",
            interval=0.3,
        )
        recovery = time.monotonic() - killed_at

        # Nobody else died: schedulers, results consumers, workers.
        for service in services:
            if service is not victim:
                assert service.proc.poll() is None, f"{service.name} exited:\n{service.log()[-3000:]}"
        assert all(w.proc.poll() is None for w in workers)
        for service in schedulers:
            if service is not victim:
                for needle in ("IntegrityError", "UniqueViolation", "Duplicate entry"):
                    assert needle not in service.log(), f"{service.name}: {needle}\n{service.log()[-3000:]}"

        with sessions() as s:
            runs = s.execute(select(DagRun.dag_id, DagRun.run_id, DagRun.logical_date, DagRun.state)).all()
            tis = s.execute(
                select(
                    TaskInstance.dag_id,
                    TaskInstance.run_id,
                    TaskInstance.task_id,
                    TaskInstance.state,
                    TaskInstance.try_number,
                )
            ).all()
            dag_ids = sorted(s.scalars(select(Dag.dag_id)))
            errors = s.scalars(select(ImportError_.filename)).all()

        # One run per cron interval, contiguous from the start date; the one manual run.
        cron = Counter(logical for dag_id, _, logical, _ in runs if dag_id == "ha_cron")
        assert all(n == 1 for n in cron.values()), cron
        dates = sorted(cron)
        assert len(dates) >= HOURS and dates == [start + timedelta(hours=h) for h in range(len(dates))]
        assert [r for r in runs if r.dag_id == "ha_fan"][0].run_id == fan_run
        assert all(r.state == "success" for r in runs), runs
        assert dag_ids == ["ha_cron", "ha_fan"]
        assert errors == [str(dags_folder / "broken.py")]

        # Every task once, from the tasks' side; recorded as one successful first try.
        executions = Counter(tuple(p.name.split("@")[:3]) for p in marks.iterdir())
        expected = {(d, r.replace("/", "_"), t) for d, r, t, _, _ in tis}
        record_fault(
            "three schedulers (each with its results consumer), one SIGKILLed mid-run",
            tasks=len(expected),
            lost=len(expected - set(executions)),
            more_than_once=sum(1 for n in executions.values() if n > 1),
            duplicate_runs=sum(n - 1 for n in cron.values()),
            recovery_s=round(recovery, 2),
        )
        assert set(executions) == expected
        twice = {k: n for k, n in executions.items() if n != 1}
        assert not twice, f"run more than once: {twice}"
        assert all(state == "success" and tries == 1 for *_, state, tries in tis), [
            t for t in tis if t.state != "success" or t.try_number != 1
        ]
        assert len([t for t in tis if t.dag_id == "ha_fan"]) == PARTS + 2
        print(f"{len(runs)} runs, {sum(executions.values())} executions of {len(tis)} task instances")
    finally:
        engine.dispose()
