"""End to end: tasks read Connections and Variables at run time through the control plane.

The worker holds no database credentials: its task processes ask over the pipe, the worker relays
the request over the broker (or the local executor), and the scheduler answers from the lookup
chain. Secrets a task sees are masked in its log, its error and its rendered fields.
"""

from __future__ import annotations

import json

import pika
import pytest
from hareflow.common.broker.topology import Topology
from hareflow.common.db import TaskInstance, TaskRendered
from hareflow.common.messages import LookupReply, LookupRequest, TaskKey
from hareflow.common.secrets import Connection, store
from hareflow.common.secrets.crypto import Cipher, generate_key
from sqlalchemy import select

from tests.integration.conftest import System

KEY = generate_key()
PASSWORD = "hunter2-Pa55word"
TOKEN = "tok-9f8e7d6c5b4a"


def _store(system: System, *conns: Connection, variables: dict[str, object] | None = None) -> None:
    cipher = Cipher([KEY])
    with system.c.sessions() as session, session.begin():
        for conn in conns:
            store.put_connection(session, conn, cipher)
        for key, value in (variables or {}).items():
            store.put_variable(session, key, value, cipher)


def _rendered(system: System, dag_id: str, run_id: str, task_id: str) -> str:
    with system.c.sessions() as session:
        return "".join(
            session.scalars(
                select(TaskRendered.fields_json)
                .join(TaskInstance, TaskInstance.id == TaskRendered.ti_id)
                .where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == task_id,
                )
            )
        )


WAREHOUSE = Connection(
    "warehouse",
    "postgresql",
    host="db.internal",
    port=5432,
    login="loader",
    password=PASSWORD,
    schema="sales",
    extra={"sslmode": "require", "api_token": TOKEN},
)

DAG_SOURCE = """
from hareflow import DAG, BashTask, Connection, Variable, task

with DAG("uses_secrets", default_args={"retry_delay": 0}):
    @task
    def reads():
        conn = Connection.get("warehouse")
        print("password is", conn.password)
        print("token is", conn.extra["api_token"])
        print("secret var is", Variable.get("db_password"))
        return {
            "host": conn.host,
            "login": conn.login,
            "threshold": Variable.get("threshold"),
            "cfg": Variable.get("cfg", deserialize_json=True),
            "missing": Variable.get("nope", default="fallback"),
        }

    templated = BashTask(
        "templated",
        "echo host={{ conn.warehouse.host }} t={{ var.value.threshold }} k={{ var.json.cfg.key }} "
        "pw={{ conn.warehouse.password }}",
    )

    @task
    def leaks_in_error():
        raise ValueError("could not log in with " + Connection.get("warehouse").password)

    reads() >> templated
    leaks_in_error()
"""


@pytest.mark.parametrize("system", ["local", "rabbitmq", "sqlite-local"], indirect=True)
def test_tasks_read_connections_and_variables_and_every_secret_is_masked(system: System, write_dag) -> None:
    write_dag("uses_secrets.py", DAG_SOURCE)
    system.start(fernet_key=KEY)
    _store(
        system,
        WAREHOUSE,
        variables={"threshold": "42", "cfg": {"key": "v1"}, "db_password": "s3cret-value"},
    )
    run_id, state = system.run_dag("uses_secrets")

    assert state == "failed"  # leaks_in_error fails on purpose
    tis = system.tis("uses_secrets", run_id)
    assert tis["reads"].state == "success" and tis["templated"].state == "success"
    assert system.result("uses_secrets", run_id, "reads") == {
        "host": "db.internal",
        "login": "loader",
        "threshold": "42",
        "cfg": {"key": "v1"},
        "missing": "fallback",
    }
    log = system.log_text("uses_secrets", run_id, "reads")
    assert "password is ***" in log and "token is ***" in log and "secret var is ***" in log
    assert PASSWORD not in log and TOKEN not in log and "s3cret-value" not in log

    assert system.result("uses_secrets", run_id, "templated") == "host=db.internal t=42 k=v1 pw=***"
    rendered = _rendered(system, "uses_secrets", run_id, "templated")
    assert "host=db.internal" in rendered and PASSWORD not in rendered and "pw=***" in rendered

    failed = tis["leaks_in_error"]
    assert failed.state == "failed"
    assert "could not log in with ***" in (failed.error or "")
    assert PASSWORD not in (failed.error or "")
    assert PASSWORD not in system.log_text("uses_secrets", run_id, "leaks_in_error")


@pytest.mark.parametrize("system", ["rabbitmq"], indirect=True)
def test_a_connection_outside_its_allow_list_or_undefined_fails_the_task_clearly(
    system: System, write_dag
) -> None:
    write_dag(
        "guarded.py",
        """
        from hareflow import DAG, Connection, task

        with DAG("guarded"):
            @task
            def not_mine():
                return Connection.get("payroll").host

            @task
            def undefined():
                return Connection.get("never_defined").host

            not_mine()
            undefined()
        """,
    )
    system.start(fernet_key=KEY)
    _store(system, Connection("payroll", "http", host="payroll.internal", allowed_dag_ids=("hr_only",)))
    run_id, state = system.run_dag("guarded")

    assert state == "failed"
    tis = system.tis("guarded", run_id)
    assert "AccessDenied" in tis["not_mine"].error and "DAG 'guarded' may not read connection 'payroll'" in (
        tis["not_mine"].error
    )
    assert "ConnectionNotFound" in tis["undefined"].error
    assert "connection 'never_defined' is not defined" in tis["undefined"].error


def _server_and_key(system: System) -> tuple[object, TaskKey]:
    from hareflow.scheduler.lookups import LookupServer

    server = LookupServer(system.settings, system.c.sessions)
    return server, TaskKey(ti_id=999999, dag_id="x", run_id="r", task_id="t", map_index=-1, try_number=1)


@pytest.mark.parametrize("system", ["local"], indirect=True)
def test_the_control_plane_refuses_lookups_for_a_try_that_is_not_running(system: System) -> None:
    system.start(fernet_key=KEY)
    _store(system, WAREHOUSE)
    server, key = _server_and_key(system)
    reply = json.loads(server.handle(LookupRequest("connection", "warehouse", key).encode()))  # type: ignore[attr-defined]

    assert reply["ok"] is False and reply["code"] == "denied"
    assert PASSWORD not in json.dumps(reply)
    malformed = json.loads(server.handle(b"{not json"))  # type: ignore[attr-defined]
    assert malformed["ok"] is False and "bad lookup request" in malformed["error"]


@pytest.mark.parametrize("system", ["rabbitmq"], indirect=True)
def test_secret_replies_are_transient_and_requests_hold_no_secret(system: System) -> None:
    """What crosses the broker: the request names the connection only; the reply travels by
    direct reply-to, not persistent, so it is never written to the broker's disk."""
    system.start(fernet_key=KEY)
    _store(system, WAREHOUSE)
    topology = Topology(prefix=system.settings.broker_prefix)
    params = pika.URLParameters(system.settings.broker_url)
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        replies: list[tuple[pika.BasicProperties, bytes]] = []
        channel.basic_consume(
            "amq.rabbitmq.reply-to", lambda ch, m, props, body: replies.append((props, body)), auto_ack=True
        )
        key = TaskKey(ti_id=1, dag_id="x", run_id="r", task_id="t", map_index=-1, try_number=1)
        request = LookupRequest("connection", "warehouse", key).encode()
        assert PASSWORD.encode() not in request
        channel.basic_publish(
            "",
            topology.lookups_queue,
            request,
            pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1", delivery_mode=1),
        )
        connection.process_data_events(time_limit=5)
        while not replies:
            connection.process_data_events(time_limit=1)
    finally:
        connection.close()
    props, body = replies[0]
    assert props.correlation_id == "c1"
    assert props.delivery_mode != 2  # not persistent
    reply = json.loads(body)
    assert reply["type"] == LookupReply.type and reply["code"] == "denied"  # try 1 of "x" is not running


def test_a_lookup_with_no_control_plane_answers_unavailable_within_the_timeout(
    rabbitmq_url: str, broker_prefix: str, tmp_path
) -> None:
    from hareflow.common.broker.rabbitmq import RabbitMQExecutor
    from hareflow.worker.lookups import LookupRelay

    from tests.conftest import fast_settings

    settings = fast_settings(tmp_path, broker_url=rabbitmq_url, broker_prefix=broker_prefix)
    executor = RabbitMQExecutor(settings)
    executor.start()
    try:
        relay = LookupRelay(executor, timeout=0.5, threads=1)
        key = TaskKey(ti_id=1, dag_id="x", run_id="r", task_id="t", map_index=-1, try_number=1)
        reply = relay.ask(key, "connection", "warehouse")
        relay.close()
    finally:
        executor.close()
    assert reply["ok"] is False and reply["code"] == "unavailable"
    assert "within 0.5s" in reply["error"] and "is a scheduler running" in reply["error"]


def test_a_dag_callback_reads_connections_and_its_output_is_masked(tmp_path, monkeypatch) -> None:
    from hareflow.scheduler.dag_callbacks import run_callback_child

    dag_file = tmp_path / "cb.py"
    dag_file.write_text(
        "from hareflow import DAG, BashTask, Connection\n"
        "def tell(context):\n"
        "    conn = Connection.get('alerts')\n"
        "    print('callback got', conn.host, conn.password)\n"
        "with DAG('cb', on_failure_callback=tell):\n"
        "    BashTask('t', 'false')\n"
    )
    request = {
        "dag_id": "cb",
        "kind": "failure",
        "reason": "task_failure",
        "run_id": "r1",
        "fileloc": str(dag_file),
    }
    env = {"HAREFLOW_HOME": str(tmp_path), "HAREFLOW_CONN_ALERTS": f"http://u:{PASSWORD}@alerts.internal"}

    code, output = run_callback_child(request, str(tmp_path), 30, env)

    assert code == 0, output
    assert "callback got alerts.internal ***" in output
    assert PASSWORD not in output
