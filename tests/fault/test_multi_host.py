"""Workers on several hosts, one of them cut off mid-run.

Each host is a Linux network namespace with its own UTS hostname, linked to the root namespace by a
veth pair on a private /30. A private RabbitMQ node listens on the root-side address of every link
(and on 127.0.0.1 for the scheduler, which runs in the test process). Cutting a host off is setting
the root-side end of its link down: its TCP connection stays open on both ends but nothing crosses,
as when a cable is pulled or a switch port dies, so only heartbeats can tell.

What this proves, on real processes and a real broker:

- a fan-out run spreads over every host (the recorded hostnames, and each task's own
  ``socket.gethostname()``, name all of them);
- when a host's link dies mid-run the broker notices (heartbeats), hands that host's unacked tasks
  to the other hosts, and the run finishes with every task succeeded once, on its first try;
- nothing the cut-off host did after the cut is recorded, and when its link returns it reconnects
  and publishes its late results, which change nothing in the metastore.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import DagRun, TaskInstance, TaskResult, Worker
from hareflow.common.messages import ResultMessage, decode
from sqlalchemy import select

from tests.conftest import service_missing
from tests.fault.conftest import (
    PrivateRabbitMQ,
    WorkerProcess,
    amqp_channel,
    describe_tis,
    fault_settings,
    private_rabbitmq_node,
    run_states,
    running_cluster,
    start_worker_process,
    wait_for,
    wait_for_run,
)
from tests.fault.report import record_fault

pytestmark = pytest.mark.fault

HOSTS = 3
CONCURRENCY = 2
PARTS = 24
PART_SECONDS = 1.0
#: AMQP heartbeat of the workers' connections: the broker drops a silent peer after about two of them.
HEARTBEAT = 2
DAG_ID = "fault_multi_host"

DAG_SOURCE = f"""
    import os
    import socket
    import time
    from datetime import datetime

    from hareflow import DAG, task

    MARKS = {{marks!r}}

    with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
             max_active_tasks=64):

        @task
        def part(ctx):
            # One file per attempt: which task, on which host, when it started and when it ended.
            host = socket.gethostname()
            path = os.path.join(MARKS, f"{{{{ctx.task_id}}}}@{{{{host}}}}@{{{{os.getpid()}}}}")
            with open(path, "a") as f:
                f.write(f"start {{{{time.time()!r}}}}\\n")
            time.sleep({PART_SECONDS})
            with open(path, "a") as f:
                f.write(f"end {{{{time.time()!r}}}}\\n")
            return host

        @task
        def join(*hosts):
            return sorted(set(hosts))

        join(*[part() for _ in range({PARTS})])
"""


# -- hosts: network namespaces linked to the root namespace ---------------------------------------------


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(frozen=True)
class NetHost:
    """One simulated host: a network namespace, its veth link to the root namespace, its hostname."""

    name: str  # its UTS hostname, recorded on every task instance it runs
    netns: str
    host_link: str  # the link's end in the root namespace; down = this host is cut off
    host_address: str  # the broker's address as seen from this host
    address: str  # this host's own address

    def wrapper(self) -> list[str]:
        """A command prefix that runs the command after it on this host, under its own hostname."""
        set_name_then_exec = 'hostname "$1" && shift && exec "$@"'
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            "unshare",
            "--uts",
            "sh",
            "-c",
            set_name_then_exec,
            "sh",
            self.name,
        ]

    def cut(self) -> None:
        _ip("link", "set", self.host_link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_link, "up")


def _unused_subnet() -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 that overlaps no address or route of the root namespace."""
    used = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        used.append(ipaddress.ip_network(fields[fields.index("inet") + 1], strict=False))
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        with contextlib.suppress(ValueError, IndexError):
            used.append(ipaddress.ip_network(line.split()[0], strict=False))
    for _ in range(500):
        candidate = ipaddress.ip_network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError("no unused 10.x.y.0/24 subnet")


@contextlib.contextmanager
def network_hosts(count: int) -> Iterator[list[NetHost]]:
    """``count`` namespaces, each linked to the root namespace by a veth pair on its own /30.

    Everything created is removed on the way out, even when creating the rest failed.
    """
    token = uuid.uuid4().hex[:6]
    links = list(_unused_subnet().subnets(new_prefix=30))
    made_netns: list[str] = []
    made_links: list[str] = []
    try:
        hosts = []
        for i in range(count):
            host_side, ns_side = list(links[i].hosts())
            host = NetHost(
                name=f"hfhost{i}-{token}",
                netns=f"hft-{token}-{i}",
                host_link=f"hf{token}{i}h",
                host_address=str(host_side),
                address=str(ns_side),
            )
            peer = f"hf{token}{i}n"
            _ip("netns", "add", host.netns)
            made_netns.append(host.netns)
            _ip("link", "add", host.host_link, "type", "veth", "peer", "name", peer)
            made_links.append(host.host_link)
            _ip("link", "set", peer, "netns", host.netns)
            _ip("addr", "add", f"{host_side}/30", "dev", host.host_link)
            _ip("link", "set", host.host_link, "up")
            _ip("-n", host.netns, "addr", "add", f"{ns_side}/30", "dev", peer)
            _ip("-n", host.netns, "link", "set", peer, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
            hosts.append(host)
        yield hosts
    finally:
        # Deleting one end of a veth pair deletes both; a namespace's own end goes with it too.
        for link in made_links:
            with contextlib.suppress(RuntimeError):
                _ip("link", "delete", link)
        for netns in made_netns:
            with contextlib.suppress(RuntimeError):
                _ip("netns", "delete", netns)
        left = [n for n in made_netns if n in _ip("netns", "list")]
        left += [link for link in made_links if link in _ip("-o", "link", "show")]
        assert not left, f"network namespaces or links left behind: {left}"


def _namespaces_unavailable() -> str | None:
    """Why this machine cannot build namespaced hosts, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"hft-probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
        try:
            subprocess.run(
                ["ip", "netns", "exec", probe, "unshare", "--uts", "hostname", "hft-probe"],
                check=True,
                capture_output=True,
                timeout=30,
            )
        finally:
            _ip("netns", "delete", probe)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace with its own hostname: {exc}"
    return None


@pytest.fixture
def hosts() -> Iterator[list[NetHost]]:
    """Namespaced hosts; skipped without root or ``ip netns`` (a failure under HAREFLOW_REQUIRE_SERVICES)."""
    reason = _namespaces_unavailable()
    if reason is not None:
        service_missing("the namespaced test network", reason)
    with network_hosts(HOSTS) as made:
        yield made


@pytest.fixture
def broker(hosts: list[NetHost]) -> Iterator[PrivateRabbitMQ]:
    """A private node listening on 127.0.0.1 and on the root-side address of every host's link."""
    with private_rabbitmq_node(listen_addresses=[h.host_address for h in hosts]) as node:
        yield node


@pytest.fixture
def start_host_worker(
    broker: PrivateRabbitMQ, broker_prefix: str, dags_folder: Path, tmp_path: Path
) -> Iterator[Callable[[NetHost], WorkerProcess]]:
    """Start ``hareflow worker`` on a host; every worker started is killed (with its pool) at the end."""
    started: list[WorkerProcess] = []

    def start(host: NetHost) -> WorkerProcess:
        worker = start_worker_process(
            host.name,
            broker_url=broker.url_at(host.host_address, heartbeat=str(HEARTBEAT)),
            prefix=broker_prefix,
            dags=dags_folder,
            log_dir=tmp_path,
            concurrency=CONCURRENCY,
            wrapper=host.wrapper(),
            HAREFLOW_HOSTNAME=host.name,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()
        worker.reap()


# -- what happened, from the marks the tasks leave and the broker ---------------------------------------


@dataclass(frozen=True)
class Attempt:
    task_id: str
    host: str
    started: float
    ended: float | None


def _attempts(marks: Path) -> list[Attempt]:
    out = []
    for path in marks.iterdir():
        task_id, host, _pid = path.name.split("@")
        times = dict(line.split() for line in path.read_text().splitlines() if line.strip())
        ended = times.get("end")
        out.append(Attempt(task_id, host, float(times["start"]), float(ended) if ended else None))
    return out


def _snapshot(cluster: Any, run_id: str) -> dict[str, Any]:
    """Everything a late report could change: the run, its task instances and their results."""
    with cluster.sessions() as session:
        run = session.execute(
            select(DagRun.state, DagRun.end_date).where(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id)
        ).one()
        columns = (
            TaskInstance.task_id,
            TaskInstance.state,
            TaskInstance.try_number,
            TaskInstance.worker,
            TaskInstance.hostname,
            TaskInstance.pid,
            TaskInstance.start_date,
            TaskInstance.end_date,
            TaskInstance.duration,
            TaskInstance.error,
            TaskInstance.updated_at,
        )
        tis = session.execute(
            select(*columns).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id)
        ).all()
        results = session.execute(
            select(TaskInstance.task_id, TaskResult.try_number, TaskResult.value_json)
            .join(TaskResult, TaskResult.ti_id == TaskInstance.id)
            .where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id)
        ).all()
    return {
        "run": tuple(run),
        "task_instances": sorted(tuple(row) for row in tis),
        "results": sorted(tuple(row) for row in results),
    }


def _peer_hosts(broker: PrivateRabbitMQ) -> list[str]:
    """The client address of every AMQP connection the broker holds."""
    return broker.ctl("-q", "list_connections", "peer_host").stdout.split()


class ResultTap:
    """A queue bound to the results exchange: a copy of every report any worker publishes."""

    def __init__(self, broker: PrivateRabbitMQ, prefix: str) -> None:
        self.broker = broker
        self.queue = f"{prefix}.test-tap"
        self.results: list[ResultMessage] = []
        with amqp_channel(broker.url) as channel:
            channel.queue_declare(self.queue, durable=True)
            channel.queue_bind(self.queue, exchange=f"{prefix}.results", routing_key="result")

    def drain(self) -> list[ResultMessage]:
        """Every task report tapped so far (heartbeats and log chunks left out)."""
        with amqp_channel(self.broker.url) as channel:
            while True:
                method, _props, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    break
                message = decode(body)
                if isinstance(message, ResultMessage):
                    self.results.append(message)
        return self.results


def _assert_recorded_once(tis: dict[str, Any], hosts: list[NetHost], victim: NetHost, cut_at: float) -> None:
    """Every task succeeded on its first try; the parts ran on every host; nothing the victim
    reported after the cut was recorded."""
    assert len(tis) == PARTS + 1, describe_tis(tis)
    assert all(ti.state == "success" for ti in tis.values()), describe_tis(tis)
    assert all(ti.try_number == 1 and ti.error is None for ti in tis.values()), (
        "a redelivered task runs the same try again: " + describe_tis(tis)
    )
    parts = [ti for task_id, ti in tis.items() if task_id != "join"]
    assert {ti.hostname for ti in parts} == {h.name for h in hosts}, "the tasks spread over every host"
    assert {ti.worker for ti in parts} == {h.name for h in hosts}
    after_cut = [
        ti.task_id for ti in parts if ti.hostname == victim.name and ti.end_date.timestamp() > cut_at
    ]
    assert not after_cut, f"recorded from the cut-off host after the cut: {after_cut}"


def _assert_stranded_ran_elsewhere(
    attempts: list[Attempt], tis: dict[str, Any], victim: NetHost, cut_at: float
) -> set[str]:
    """The victim was mid-task at the cut; each such task ran again, to its end, on another host
    after the cut, and that run is the one recorded. Returns those tasks."""
    stranded = {
        a.task_id
        for a in attempts
        if a.host == victim.name and a.started < cut_at and (a.ended is None or a.ended > cut_at)
    }
    assert stranded, "the victim was running tasks when its link went down"
    for task_id in stranded:
        host = tis[task_id].hostname
        assert host != victim.name, task_id
        assert any(
            a.task_id == task_id and a.host == host and a.started > cut_at and a.ended is not None
            for a in attempts
        ), task_id
    # Nothing was lost: every part ran to its end on the host its task instance names.
    for task_id, ti in tis.items():
        if task_id != "join":
            assert any(
                a.task_id == task_id and a.host == ti.hostname and a.ended is not None for a in attempts
            ), task_id
    return stranded


# -- the test -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["until_the_run_completes", "until_the_host_gives_up"])
def test_a_host_cut_off_mid_run_loses_nothing_and_its_late_results_change_nothing(
    cut: str,
    hosts: list[NetHost],
    broker: PrivateRabbitMQ,
    start_host_worker: Callable[[NetHost], WorkerProcess],
    postgres_url: str,
    broker_prefix: str,
    write_dag: Callable[[str, str], Path],
    dags_folder: Path,
    tmp_path: Path,
) -> None:
    """``until_the_run_completes``: the link returns as soon as the run is over, before the cut-off
    host's own dead-peer check (3 x (heartbeat + 1) s) fires: its first write after the return meets
    a reset, and it reconnects. ``until_the_host_gives_up``: the link stays down until the host has
    dropped the connection itself and is retrying to connect to a broker it cannot reach.
    """
    marks = tmp_path / "marks"
    marks.mkdir()
    write_dag("multi_host.py", DAG_SOURCE.format(marks=str(marks)))
    settings = fault_settings(
        tmp_path,
        database_url=postgres_url,
        broker_url=broker.url,
        prefix=broker_prefix,
        dags=dags_folder,
        # Longer than the cut: what saves the cut-off host's tasks must be the broker's redelivery
        # (same try), not the scheduler's lost-worker check (a new try).
        worker_timeout=120.0,
    )
    victim = hosts[0]
    with running_cluster(settings) as cluster:
        tap = ResultTap(broker, broker_prefix)
        workers = {h.name: start_host_worker(h) for h in hosts}

        def all_hosts_active() -> bool:
            with cluster.sessions() as session:
                rows = session.scalars(select(Worker).where(Worker.name.in_(workers))).all()
            return {(w.name, w.hostname, w.state) for w in rows} == {(n, n, "active") for n in workers}

        wait_for(all_hosts_active, timeout=60, what="a worker on every host to heartbeat")
        peers = _peer_hosts(broker)
        assert all(peers.count(h.address) == 1 for h in hosts), f"each worker connects from its host: {peers}"
        cluster.wait_for_dag(DAG_ID, timeout=60)
        run_id = cluster.trigger(DAG_ID)

        def mid_run() -> bool:
            _, tis = run_states(cluster, DAG_ID, run_id)
            done = {ti.hostname for ti in tis.values() if ti.state == "success"}
            busy = any(ti.state == "running" and ti.hostname == victim.name for ti in tis.values())
            return done >= {h.name for h in hosts} and busy

        wait_for(
            mid_run, timeout=60, what="every host to finish a task, the victim to run one", interval=0.05
        )

        # 1. Cut the victim off. The broker notices the silent peer, closes its connection and
        #    requeues what it held; the other hosts finish the run.
        victim.cut()
        cut_at = time.time()
        wait_for(
            lambda: victim.address not in _peer_hosts(broker),
            timeout=30,
            what="the broker to drop the cut-off host's connection",
            interval=0.2,
        )
        noticed_after = time.time() - cut_at
        assert wait_for_run(cluster, DAG_ID, run_id, timeout=60) == "success"
        completed_after = time.time() - cut_at

        # 2. Recorded once, on first tries, spread over every host, nothing lost.
        _, tis = run_states(cluster, DAG_ID, run_id)
        _assert_recorded_once(tis, hosts, victim, cut_at)
        snapshot = _snapshot(cluster, run_id)
        values = {task_id: json.loads(value) for task_id, _try, value in snapshot["results"]}
        assert all(values[t] == ti.hostname for t, ti in tis.items() if t != "join"), (
            "each task returns the hostname it ran under, the one recorded for it"
        )
        assert values["join"] == sorted(h.name for h in hosts)
        stranded = _assert_stranded_ran_elsewhere(_attempts(marks), tis, victim, cut_at)

        # 3. The victim went on running what it held: those results wait for the link.
        wait_for(
            lambda: all(a.ended is not None for a in _attempts(marks)),
            timeout=30,
            what="the cut-off host's tasks to end",
        )
        late = {a.task_id for a in _attempts(marks) if a.host == victim.name and (a.ended or 0) > cut_at}
        assert stranded <= late
        if cut == "until_the_host_gives_up":
            wait_for(
                lambda: "was lost" in workers[victim.name].log_path.read_text(errors="replace"),
                timeout=30,
                what="the cut-off host to find its connection dead",
                interval=0.2,
            )
        cut_lasted = time.time() - cut_at

        # 4. The link returns: the victim reconnects; its late results reach the results consumer
        #    and change nothing.
        victim.restore()
        restored_at = time.time()
        wait_for(
            lambda: victim.address in _peer_hosts(broker),
            timeout=30,
            what="the cut-off host to reconnect",
            interval=0.2,
        )
        reconnected_after = time.time() - restored_at

        def late_results_consumed() -> bool:
            reported = {
                m.key.task_id
                for m in tap.drain()
                if m.hostname == victim.name and m.outcome == "success" and m.at > cut_at
            }
            return reported >= late and broker.queue_depths().get(f"{broker_prefix}.results") == (0, 0)

        wait_for(
            late_results_consumed,
            timeout=40,
            what="the cut-off host's late results to reach the broker and be consumed",
            interval=0.5,
        )
        late_results_after = time.time() - restored_at

        def victim_heartbeats_again() -> bool:
            with cluster.sessions() as session:
                row = session.scalar(select(Worker).where(Worker.name == victim.name))
            return row is not None and row.state == "active" and row.last_heartbeat.timestamp() > restored_at

        wait_for(victim_heartbeats_again, timeout=30, what="the cut-off host's worker to heartbeat again")
        assert _snapshot(cluster, run_id) == snapshot, "late results from the cut-off host changed the record"
        assert all(w.proc.poll() is None for w in workers.values()), "every worker is still running"
        runs_of = collections.Counter(a.task_id for a in _attempts(marks))
        record_fault(
            "host partition (one of three worker hosts cut off mid-run)",
            tasks=PARTS,
            lost=PARTS - len(runs_of),
            more_than_once=sum(1 for n in runs_of.values() if n > 1),
            recovery_s=round(completed_after, 2),
        )
        # Shown with -s: how long each step took.
        print(
            f"{cut}: broker noticed the cut after {noticed_after:.1f}s, run completed "
            f"{completed_after:.1f}s after the cut, link down {cut_lasted:.1f}s; after the restore: "
            f"reconnected in {reconnected_after:.1f}s, {len(late)} late results consumed in "
            f"{late_results_after:.1f}s"
        )
