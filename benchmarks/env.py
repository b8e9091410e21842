"""The benchmark's surroundings: services, a temporary database, broker clean-up, the machine, CPU use.

Every benchmark run gets its own broker prefix and its own temporary database, and removes both at
the end (queues and exchanges are deleted with pika, the database is dropped WITH (FORCE)).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import logging
import os
import platform
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks")

AMQP_URL = os.environ.get(
    "HAREFLOW_BENCH_AMQP_URL", os.environ.get("HAREFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
)
PG_ADMIN_URL = os.environ.get(
    "HAREFLOW_BENCH_DATABASE_URL",
    os.environ.get("HAREFLOW_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
)
PREFIX = "hfbench"


def plain_task(task_id: str, upstream: tuple[str, ...] = ()) -> Any:
    """A serialized PythonTask with every setting at its default, for DAGs a benchmark stores
    directly (no file to parse)."""
    from hareflow.common.dag.serialize import SerializedTask

    return SerializedTask(
        task_id=task_id,
        task_type="PythonTask",
        upstream=upstream,
        trigger_rule="all_success",
        retries=0,
        retry_delay=0.0,
        retry_exponential_backoff=False,
        max_retry_delay=None,
        execution_timeout=None,
        queue="default",
        priority=1,
        pool=None,
        pool_slots=1,
        input_tasks=(),
        lineno=None,
        doc=None,
    )


def new_prefix() -> str:
    return f"{PREFIX}-{uuid.uuid4().hex[:10]}"


def new_db_name() -> str:
    return f"hfbench_{uuid.uuid4().hex[:12]}"


# -- database -------------------------------------------------------------------------------------------


def database_url(kind: str, name: str, tmpdir: Path) -> str:
    from sqlalchemy.engine import make_url

    if kind == "sqlite":
        return f"sqlite:///{tmpdir / (name + '.db')}"
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def create_database(kind: str, name: str) -> None:
    if kind != "postgres":
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()


def drop_database(kind: str, name: str) -> None:
    if kind != "postgres":
        return
    from sqlalchemy import create_engine, text

    if not re.fullmatch(r"hfbench_[0-9a-f]{12}", name):  # never drop anything we did not create
        raise ValueError(f"refusing to drop {name!r}")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    except Exception as exc:
        log.warning("could not drop database %s: %s", name, exc)
    finally:
        admin.dispose()


def backend_pids(db_name: str) -> list[int]:
    """PostgreSQL backend processes connected to the benchmark's database."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": db_name}
                )
            ]
    except Exception:
        return []
    finally:
        admin.dispose()


# -- broker ---------------------------------------------------------------------------------------------


def delete_topology(
    prefix: str,
    task_queues: tuple[str, ...] = ("default",),
    *,
    extra_queues: tuple[str, ...] = (),
    extra_exchanges: tuple[str, ...] = (),
) -> None:
    """Delete every queue and exchange a run with ``prefix`` declared (idempotent)."""
    import pika

    if not prefix.startswith(PREFIX + "-"):
        raise ValueError(f"refusing to delete the topology of {prefix!r}")
    queues = [f"{prefix}.results", f"{prefix}.dead", f"{prefix}.lookups"] + [
        f"{prefix}.q.{q}" for q in task_queues
    ]
    queues += [q for q in extra_queues if q.startswith(prefix + ".")]
    exchanges = [f"{prefix}.tasks", f"{prefix}.results", f"{prefix}.dead", f"{prefix}.events"]
    exchanges += [x for x in extra_exchanges if x.startswith(prefix + ".")]
    try:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception as exc:
        log.warning("could not connect to delete %s.*: %s", prefix, exc)
        return
    try:
        for name in queues:
            ch = conn.channel()
            try:
                ch.queue_delete(name)
            except Exception:
                pass
            finally:
                if ch.is_open:
                    ch.close()
        for name in exchanges:
            ch = conn.channel()
            try:
                ch.exchange_delete(name)
            except Exception:
                pass
            finally:
                if ch.is_open:
                    ch.close()
    finally:
        conn.close()


def worker_environment(settings: Any, **extra: str) -> dict[str, str]:
    """The environment of a separate worker process, as production gives one: this process's
    environment without any ``HAREFLOW_*`` variable, then only the broker URL and prefix, the DAG
    folder, the home and the log level — no database URL — and ``extra`` (``HAREFLOW_*`` names)."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    child.update(
        {
            "HAREFLOW_HOME": str(settings.home),
            "HAREFLOW_BROKER_URL": settings.broker_url,
            "HAREFLOW_EXECUTOR": "rabbitmq",
            "HAREFLOW_BROKER_PREFIX": settings.broker_prefix,
            "HAREFLOW_QUEUE_TYPE": settings.queue_type,
            "HAREFLOW_DAGS_FOLDER": str(settings.dags_folder),
            "HAREFLOW_LOG_LEVEL": "WARNING",
        }
    )
    child.update(extra)
    return child


# -- the machine ----------------------------------------------------------------------------------------


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg": load_average(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        props = conn._impl.server_properties  # noqa: SLF001 - the only place pika exposes it
        info["rabbitmq"] = (
            props.get("version", b"?").decode()
            if isinstance(props.get("version"), bytes)
            else props.get("version")
        )
        conn.close()
    except Exception as exc:
        info["rabbitmq"] = f"unreachable: {exc}"
    try:
        from sqlalchemy import create_engine, text

        eng = create_engine(PG_ADMIN_URL)
        with eng.connect() as c:
            info["postgresql"] = c.execute(text("SHOW server_version")).scalar()
        eng.dispose()
    except Exception as exc:
        info["postgresql"] = f"unreachable: {exc}"
    return info


# -- CPU accounting ---------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, int, float, float] | None:
    """(command name, parent pid, own cpu seconds, reaped children's cpu seconds)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    # fields after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return (
        name,
        int(rest[1]),
        (int(rest[11]) + int(rest[12])) / _TICK,
        (int(rest[13]) + int(rest[14])) / _TICK,
    )


def _all_pids() -> list[int]:
    return [int(p.rsplit("/", 1)[1]) for p in glob.glob("/proc/[0-9]*")]


def broker_pids(port: int = 5672) -> list[int]:
    """The process(es) listening on the AMQP port (RabbitMQ's beam.smp), found through /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
        except OSError:
            continue
    found = []
    for pid in _all_pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    found.append(pid)
                    raise StopIteration
        except (OSError, StopIteration):
            continue
    return found


@dataclass
class CpuSnapshot:
    at: float
    per_pid: dict[int, tuple[str, float]]  # pid -> (group, cpu seconds so far)


GROUPS = ("bench_process", "bench_children", "postgres_ours", "postgres_other", "rabbitmq", "other")


class CpuMeter:
    """CPU seconds used by: this process, its descendants, our PostgreSQL backends, the other PostgreSQL
    processes, the RabbitMQ node on 5672, and everything else on the machine (other users' tests, say).

    Deltas are taken per process: a process that exits between two snapshots is left out, one that
    starts in between counts from zero; children this process reaped are counted with its children.
    """

    def __init__(self, db_name: str | None) -> None:
        self.db_name = db_name
        self.me = os.getpid()
        self.broker = set(broker_pids())
        self.backends: set[int] = set()

    def refresh_backends(self) -> None:
        if self.db_name:
            self.backends = set(backend_pids(self.db_name))

    def snapshot(self) -> CpuSnapshot:
        import time

        stats = {pid: s for pid in _all_pids() if (s := _stat(pid)) is not None}
        children: dict[int, list[int]] = {}
        for pid, (_, ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        descendants: set[int] = set()
        todo = list(children.get(self.me, []))
        while todo:
            pid = todo.pop()
            if pid not in descendants:
                descendants.add(pid)
                todo.extend(children.get(pid, []))
        per_pid: dict[int, tuple[str, float]] = {}
        for pid, (name, _, own, reaped) in stats.items():
            if pid == self.me:
                per_pid[pid] = ("bench_process", own)
                per_pid[-pid] = ("bench_children", reaped)  # reaped children of this process
            elif pid in descendants:
                per_pid[pid] = ("bench_children", own)
            elif pid in self.broker:
                per_pid[pid] = ("rabbitmq", own)
            elif name == "postgres":
                per_pid[pid] = ("postgres_ours" if pid in self.backends else "postgres_other", own)
            else:
                per_pid[pid] = ("other", own)
        return CpuSnapshot(time.monotonic(), per_pid)

    @staticmethod
    def delta(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, Any]:
        wall = max(1e-9, b.at - a.at)
        used = dict.fromkeys(GROUPS, 0.0)
        for pid, (group, cpu) in b.per_pid.items():
            before = a.per_pid.get(pid)
            used[group] += max(0.0, cpu - (before[1] if before and before[0] == group else 0.0))
        out: dict[str, Any] = {"wall_s": round(wall, 3)}
        for k, v in used.items():
            out[k] = {"cpu_s": round(v, 2), "cores": round(v / wall, 2)}
        out["total_cores"] = round(sum(used.values()) / wall, 2)
        return out


@contextlib.contextmanager
def quiet_logging(level: int = logging.WARNING) -> Iterator[None]:
    root = logging.getLogger()
    old = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(old)


def git_revision(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(repo),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "common",
                "scheduler",
                "worker",
                "hareflow",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"
