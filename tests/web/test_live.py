"""Live updates: state events reach the Socket.IO rooms of the pages that show them.

Driven through the real paths: the scheduler and a worker (``Cluster``, local executor) for a run
triggered over the API, and RabbitMQ for several web processes that must each see every event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hareflow.common.broker import make_executor
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.config import Settings
from hareflow.common.messages import StateEvent
from hareflow.web import create_app, socketio_of

from hareflow.cluster import Cluster, WorkerSpec
from tests.conftest import fast_settings
from tests.web.conftest import Client, add_user, login, path_of

LOGGING_DAG = """
import time
from datetime import datetime
from hareflow import DAG, task

with DAG("live_dag", schedule=None, start_date=datetime(2026, 1, 1), params={"n": 3}):

    @task
    def first(ctx):
        for i in range(int(ctx.params["n"])):
            print(f"tick {i}", flush=True)
            time.sleep(0.15)
        return "done"

    @task
    def second(value):
        return value + "!"

    second(first())
"""


def received(socket: Any) -> list[dict[str, Any]]:
    """Every state event the test socket got so far (flattened from the relayed batches)."""
    out: list[dict[str, Any]] = []
    for message in socket.get_received():
        if message["name"] == "events":
            out.extend(message["args"][0])
    return out


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def cluster_app(tmp_path: Path, postgres_url: str, dags_folder: Path) -> Iterator[tuple[Cluster, Flask]]:
    (dags_folder / "live_dag.py").write_text(LOGGING_DAG)
    settings = fast_settings(
        tmp_path,
        database_url=postgres_url,
        dags_folder=str(dags_folder),
        secret_key="live-tests-secret-key-0123",
    )
    cluster = Cluster(settings, workers=[WorkerSpec(concurrency=2)])
    cluster.migrate()
    add_user(cluster.sessions, "op", "op")
    cluster.start()
    try:
        app = create_app(settings, sessions=cluster.sessions, executor=cluster._shared)
        cluster.wait_for_dag("live_dag")
        yield cluster, app
    finally:
        cluster.stop()


def test_a_run_triggered_over_the_api_is_relayed_live_to_its_dags_room_only(
    cluster_app: tuple[Cluster, Flask],
) -> None:
    _, app = cluster_app
    client = login(app.test_client(), "op")
    sockets = socketio_of(app)
    watching = sockets.test_client(app, flask_test_client=client.http)
    elsewhere = sockets.test_client(app, flask_test_client=client.http)
    try:
        assert watching.emit("join", {"rooms": ["dag:live_dag"]}, callback=True)["ok"]
        assert elsewhere.emit("join", {"rooms": ["dag:other_dag"]}, callback=True)["ok"]

        created = client.api("POST", "/dags/live_dag/runs", {"conf": {"n": 4}})
        assert created.status_code == 201
        run_id = created.json["run_id"]
        events: list[dict[str, Any]] = []

        def second_succeeded() -> bool:
            events.extend(received(watching))
            return any(
                e["kind"] == "task" and e["task_id"] == "second" and e["state"] == "success" for e in events
            )

        def run_succeeded() -> bool:
            events.extend(received(watching))
            return any(e["kind"] == "run" and e["state"] == "success" for e in events)

        wait_for(second_succeeded, what="the second task's success event")
        # The run's own event follows the task's, from the next scheduling pass.
        wait_for(run_succeeded, what="the run's success event")
        assert client.api("GET", f"/dags/live_dag/runs/{run_id}").json["state"] == "success"

        states = [(e["task_id"], e["state"]) for e in events if e["kind"] == "task" and e["run_id"] == run_id]
        assert ("first", "queued") in states and ("first", "success") in states
        assert any(e["kind"] == "log" and e["task_id"] == "first" for e in events)
        assert received(elsewhere) == []

        log = client.api(
            "GET", path_of("dags", "live_dag", "runs", run_id, "tasks", "first", "logs", "1")
        ).json
        assert "".join(c["text"] for c in log["chunks"]).count("tick") == 4 and log["finished"] is True
        second = client.api("GET", path_of("dags", "live_dag", "runs", run_id, "tasks", "second")).json
        assert second["result"] == "done!" and second["hostname"]
    finally:
        watching.disconnect()
        elsewhere.disconnect()


def test_the_dag_list_room_gets_run_and_dag_events_but_not_task_events(app: Flask, as_role: Any) -> None:
    client = as_role("viewer")
    socket = socketio_of(app).test_client(app, flask_test_client=client.http)
    executor: LocalExecutor = app.extensions["hareflow"].executor()
    try:
        socket.emit("join", {"rooms": ["dags"]}, callback=True)
        executor.publish_events(
            [
                StateEvent(kind="task", dag_id="d1", run_id="r", state="running", at=1.0, task_id="t"),
                StateEvent(kind="run", dag_id="d1", run_id="r", state="success", at=2.0),
            ]
        )
        events = wait_for(lambda: received(socket), what="the run event")
        assert [(e["kind"], e["state"]) for e in events] == [("run", "success")]
    finally:
        socket.disconnect()


@pytest.fixture
def broker_settings(
    web_settings: Settings, rabbitmq_url: str, broker_prefix: str, tmp_path: Path
) -> Settings:
    return web_settings.replace(broker_url=rabbitmq_url, broker_prefix=broker_prefix, home=tmp_path)


def test_several_web_processes_each_relay_every_event_from_the_broker(
    broker_settings: Settings, web_sessions: Any
) -> None:
    apps = [create_app(broker_settings, sessions=web_sessions) for _ in range(2)]
    publisher = make_executor(broker_settings, connection_name="hareflow-test-publisher")
    publisher.start()
    sockets = []
    try:
        for app in apps:
            client: Client = login(app.test_client(), "viewer")
            socket = socketio_of(app).test_client(app, flask_test_client=client.http)
            assert socket.is_connected()
            hello = [m for m in socket.get_received() if m["name"] == "hello"]
            assert hello[0]["args"][0] == {"live": True}  # each process subscribed on its first connection
            socket.emit("join", {"rooms": ["dag:shared_dag"]}, callback=True)
            sockets.append(socket)

        publisher.publish_events(
            [StateEvent(kind="task", dag_id="shared_dag", run_id="r1", state="success", at=1.0, task_id="t1")]
        )

        for socket in sockets:
            events = wait_for(lambda s=socket: received(s), what="the relayed event")
            assert [(e["task_id"], e["state"]) for e in events] == [("t1", "success")]
    finally:
        for socket in sockets:
            socket.disconnect()
        publisher.close()
        for app in apps:
            app.extensions["hareflow"].close()


def test_a_silently_dead_socket_is_dropped_within_twenty_seconds(app: Flask) -> None:
    """Socket.IO's defaults (25 s pings, 20 s to answer) would leave a page whose connection died
    without a close showing stale state for 45 s before it reconnects and refetches."""
    engine = socketio_of(app).server.eio
    assert engine.ping_interval + engine.ping_timeout <= 20


def test_a_late_ping_or_pong_on_a_loaded_machine_has_ten_seconds_of_slack_on_every_side(app: Flask) -> None:
    """How late a ping (or its pong) may be before each side drops a live socket: a browser waits
    interval + timeout for a ping, the server ``timeout`` for the pong, python-socketio's client
    max(interval, timeout) + 5 s for a ping. With 10 s and 10 s that client had 5 s of slack, and
    sockets dropped while the machine was loaded."""
    engine = socketio_of(app).server.eio
    interval, timeout = engine.ping_interval, engine.ping_timeout
    slack = {
        "browser": interval + timeout - interval,
        "server": timeout,
        "python client": max(interval, timeout) + 5 - interval,
    }
    assert min(slack.values()) >= 10, slack
