"""Private services for fault tests: a RabbitMQ node and a PostgreSQL cluster of our own.

Fault tests stop, restart and starve these; the shared services on the standard ports are never
touched. Each private service lives in its own temporary directory on spare loopback ports and is
stopped and removed afterwards, even when the test fails. A service that cannot be started skips
the tests that need it, or fails them under ``HAREFLOW_REQUIRE_SERVICES=1``.

Also here: small helpers every fault test uses (waiting on a condition with a deadline, inspecting
queues, worker subprocesses and killing a process together with its task processes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import fast_settings, service_missing

T = TypeVar("T")

#: Generous: the machine has two cores and other test suites run beside this one.
BOOT_TIMEOUT = 120.0


# -- waiting ---------------------------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``condition`` until it returns something truthy; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last_error = None
        except ignore as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they cannot repeat)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), user, user)


# -- RabbitMQ -------------------------------------------------------------------------------------------


class PrivateRabbitMQ:
    """One RabbitMQ node beside the shared one: own name, ports, data and log directories."""

    def __init__(
        self,
        *,
        consumer_timeout_ms: int | None = None,
        channel_tick_ms: int | None = None,
        listen_addresses: Sequence[str] = (),
    ) -> None:
        """``listen_addresses``: addresses to accept AMQP on besides 127.0.0.1, on the same port
        (each must already be assigned to an interface, e.g. the host side of a veth link)."""
        # Not under pytest's tmp_path: the broker runs as the rabbitmq user, which must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="hft-rmq-"))
        self.node = f"hft{uuid.uuid4().hex[:10]}@localhost"
        self.port, self.dist_port = free_ports(2)
        self.url = self.url_at("127.0.0.1")
        self.pid_file = self.dir / "node.pid"
        conf = [f"listeners.tcp.local = 127.0.0.1:{self.port}", "loopback_users = none"]
        # Named listeners, never 0.0.0.0: guest/guest must not be reachable from outside the machine.
        conf += [f"listeners.tcp.extra{i} = {addr}:{self.port}" for i, addr in enumerate(listen_addresses)]
        if consumer_timeout_ms is not None:
            conf.append(f"consumer_timeout = {consumer_timeout_ms}")
        rabbit_env = []
        if channel_tick_ms is not None:
            # consumer_timeout is only checked on each channel's tick (60 s by default on 3.10).
            rabbit_env.append(f"{{channel_tick_interval, {channel_tick_ms}}}")
        (self.dir / "mnesia").mkdir()
        (self.dir / "log").mkdir()
        (self.dir / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (self.dir / "advanced.config").write_text(f"[{{rabbit, [{', '.join(rabbit_env)}]}}].\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        self.dir.chmod(0o755)
        _chown_tree(self.dir, "rabbitmq")

    def url_at(self, address: str, **query: str) -> str:
        """The AMQP URL of this node at one of its listening addresses (query: e.g. heartbeat)."""
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"amqp://guest:guest@{address}:{self.port}/" + (f"?{params}" if params else "")

    @property
    def log_file(self) -> Path:
        return self.dir / "log" / f"{self.node}.log"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),
        )
        return env

    def ctl(self, *args: str, timeout: float = 90.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )
        return proc

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Start the node detached and wait until it accepts AMQP connections."""
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            # The first await_startup can run before the node registers with epmd: retry it.
            remaining = max(5.0, deadline - time.monotonic())
            proc = self.ctl(
                "await_startup", "--timeout", str(int(remaining)), timeout=remaining + 30, check=False
            )
            if proc.returncode == 0 and self._amqp_answers():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"node {self.node} did not start: {proc.stderr.strip()[-500:]}\n{_tail(self.log_file)}"
                )
            time.sleep(0.5)

    def _amqp_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                return True
        except OSError:
            return False

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", "60", timeout=90)

    def stop_node(self) -> None:
        """Stop the whole Erlang node and wait for its OS process to exit."""
        self.ctl("stop", str(self.pid_file), timeout=120)

    def restart(self) -> None:
        """A full restart: the node's OS process ends and a new one boots on the same data."""
        self.stop_node()
        self.boot()

    def close_all_connections(self, reason: str = "fault test") -> None:
        self.ctl("close_all_connections", reason)

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """``{queue: (ready, unacked)}`` for every queue on the node."""
        out = self.ctl("-q", "list_queues", "name", "messages_ready", "messages_unacknowledged").stdout
        depths = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                depths[parts[0]] = (int(parts[1]), int(parts[2]))
        return depths

    def shutdown(self) -> None:
        """Stop the node (killing it if it will not stop) and remove its directory."""
        try:
            if self.pid_file.exists():
                try:
                    self.stop_node()
                except (RuntimeError, subprocess.SubprocessError):
                    _kill_pid_file(self.pid_file)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _kill_pid_file(pid_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


@contextlib.contextmanager
def private_rabbitmq_node(**options: Any) -> Iterator[PrivateRabbitMQ]:
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        service_missing("private RabbitMQ node", "rabbitmq-server is not installed")
    node = PrivateRabbitMQ(**options)
    try:
        try:
            node.boot()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            service_missing("private RabbitMQ node", exc)
        yield node
    finally:
        node.shutdown()


@pytest.fixture(scope="module")
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A private node per test module (a boot costs 5-15 s); each test uses its own queue prefix.

    Tests that stop or restart it leave it running again when they end.
    """
    with private_rabbitmq_node() as node:
        yield node


@contextlib.contextmanager
def amqp_channel(url: str) -> Iterator[Any]:
    """A pika channel for poking at the broker from the outside."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield conn.channel()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# -- PostgreSQL -------------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "pg_ctl").exists()), key=lambda p: int(p.parent.name)
    )
    return versions[-1] if versions else None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster run by the postgres user, trust auth, loopback only."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="hft-pg-"))
        self.data = self.dir / "data"
        (self.port,) = free_ports(1)
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        _chown_tree(self.dir, "postgres")

    def _as_postgres(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}"
            )
        return proc

    def init(self) -> None:
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "90",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a crash."""
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "90", "stop"
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def shutdown(self) -> None:
        try:
            if self.running():
                try:
                    self.stop("immediate")
                except (RuntimeError, subprocess.SubprocessError):
                    _kill_pid_file(self.data / "postmaster.pid")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        service_missing("private PostgreSQL cluster", "no /usr/lib/postgresql/*/bin/pg_ctl")
    assert bin_dir is not None
    pg = PrivatePostgres(bin_dir)
    try:
        try:
            pg.init()
            pg.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            service_missing("private PostgreSQL cluster", f"{exc}\n{_tail(pg.dir / 'log')}")
        yield pg
    finally:
        pg.shutdown()


# -- hareflow in tests ------------------------------------------------------------------------------------


def fault_settings(
    tmp_path: Path, *, database_url: str, broker_url: str, prefix: str, dags: Path, **overrides: Any
) -> Any:
    return fast_settings(
        tmp_path,
        database_url=database_url,
        broker_url=broker_url,
        broker_prefix=prefix,
        dags_folder=str(dags),
        **overrides,
    )


@contextlib.contextmanager
def running_cluster(settings: Any, workers: Any = ()) -> Iterator[Any]:
    """Migrate the metastore, start scheduler (+ results consumer, DAG processor) and workers."""
    from hareflow.cluster import Cluster

    cluster = Cluster(settings, workers=list(workers))
    cluster.migrate()
    try:
        cluster.start(timeout=120)
        yield cluster
    finally:
        cluster.stop(timeout=60)


def run_states(cluster: Any, dag_id: str, run_id: str) -> tuple[str | None, dict[str, Any]]:
    """The run's state and its task instances by task id."""
    from hareflow.common.db import DagRun, TaskInstance
    from sqlalchemy import select

    with cluster.sessions() as session:
        state = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        tis = {
            ti.task_id: ti
            for ti in session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            )
        }
    return state, tis


def wait_for_run(cluster: Any, dag_id: str, run_id: str, *, timeout: float) -> str:
    """Wait until the run finishes (tolerating a metastore that is down for a while)."""
    from sqlalchemy.exc import OperationalError

    def finished() -> str | None:
        state, _ = run_states(cluster, dag_id, run_id)
        return state if state in ("success", "failed") else None

    return wait_for(
        finished,
        timeout=timeout,
        what=f"run {dag_id}/{run_id} to finish",
        interval=0.2,
        ignore=(OperationalError,),
    )


def wait_dag_active(sessions: Any, dag_id: str, *, timeout: float = 90.0, unpause: bool = False) -> None:
    """Wait until a scheduler has parsed and stored ``dag_id`` (unpausing it first if asked)."""
    from hareflow.common.db import Dag

    def active() -> bool:
        with sessions() as session:
            dag = session.get(Dag, dag_id)
            if dag is not None and unpause and dag.is_paused:
                dag.is_paused = False
                session.commit()
            return dag is not None and dag.is_active

    wait_for(active, timeout=timeout, what=f"DAG {dag_id} parsed")


def wait_run_finished(sessions: Any, run_id: str, *, timeout: float) -> str:
    """Wait until run ``run_id`` is success or failed; return that state."""
    from hareflow.common.db import DagRun
    from sqlalchemy import select

    def finished() -> str | None:
        with sessions() as session:
            state = session.scalar(select(DagRun.state).where(DagRun.run_id == run_id))
        return state if state in ("success", "failed") else None

    return wait_for(finished, timeout=timeout, what=f"run {run_id} finished", interval=0.1)


def describe_tis(tis: dict[str, Any]) -> str:
    return ", ".join(f"{t}={ti.state}#{ti.try_number}({ti.error or ''})" for t, ti in sorted(tis.items()))


# -- worker subprocesses ------------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    killed: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def descendants(self) -> list[int]:
        return descendants(self.pid)

    def kill_process_group(self) -> list[int]:
        """SIGKILL the worker's process group (the worker, its forkserver and resource tracker) and
        nothing else, as a crash or the OOM killer would; return the pids that were below it.

        The zygote and the task processes are not in that group (each calls ``setsid()``): they
        must notice on their own. :meth:`reap` kills whatever of them is left, for cleanup.
        """
        self.killed = self.descendants()
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return self.killed

    def reap(self) -> None:
        for pid in self.killed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if process_alive(pid) and os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)

    def kill(self) -> list[int]:
        """SIGKILL the worker and every process below it; return the pids that were killed.

        The worker's zygote and task processes call ``setsid()`` (so a task's own subprocesses
        can be killed with it): they are *not* in the worker's process group. Kill each one's
        group, then the worker's group (the worker and its forkserver).
        """
        pids = self.descendants()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.killed = pids
        return [self.pid, *pids]

    def stop(self) -> None:
        """Graceful stop (SIGTERM), then SIGKILL of everything left after a deadline."""
        self.reap()
        if self.proc.poll() is None:
            pids = self.descendants()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if process_alive(pid) and os.getpgid(pid) == pid:
                        os.killpg(pid, signal.SIGKILL)


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces or parentheses: split after its last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(root: int) -> list[int]:
    """All live processes below ``root`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return [pid for pid in out if process_alive(pid)]


def start_worker_process(
    name: str,
    *,
    broker_url: str,
    prefix: str,
    dags: Path,
    log_dir: Path,
    concurrency: int = 1,
    wrapper: Sequence[str] = (),
    **env: str,
) -> WorkerProcess:
    """``hareflow worker`` as a real process (its own session: its own process group).

    ``wrapper``: a command that execs the worker command given after it (e.g. ``ip netns exec NS``),
    so that the process started is still the worker itself.
    """
    environment = dict(os.environ)
    for key in [k for k in environment if k.startswith("HAREFLOW_")]:
        del environment[key]
    environment.update(
        HAREFLOW_HOME=str(log_dir / f"home-{name}"),
        HAREFLOW_BROKER_URL=broker_url,
        HAREFLOW_BROKER_PREFIX=prefix,
        HAREFLOW_DAGS_FOLDER=str(dags),
        HAREFLOW_HEARTBEAT_INTERVAL="0.5",
        HAREFLOW_LOG_CHUNK_INTERVAL="0.1",
        **env,
    )
    log_path = log_dir / f"worker-{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [
                *wrapper,
                sys.executable,
                "-c",
                "from hareflow.cli import main; main()",
                "worker",
                "--name",
                name,
                "--concurrency",
                str(concurrency),
            ],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(log_dir),
        )
    return WorkerProcess(name, proc, log_path)


# -- control-plane processes -------------------------------------------------------------------------------


def control_environment(**values: str) -> dict[str, str]:
    """This process's environment without any HAREFLOW_* setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    env.update(values)
    return env


@pytest.fixture
def control_processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``start(role, env, name)``: ``hareflow <role>`` as a real process in its own session, its
    output in ``<tmp_path>/<name>.log``; whatever is still running at the end is stopped."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(role: str, env: dict[str, str], name: str | None = None) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"{name or role}.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from hareflow.cli import main; main()", role],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(tmp_path),
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
