"""End to end: sensors poking in their slot, and in reschedule mode giving the slot back between
pokes, their timeouts (across reschedules), soft_fail, and the built-in sensors against real
services (a file, PostgreSQL, an HTTP server, another DAG's run).

Every test runs on both executors over PostgreSQL; the reschedule core also on MariaDB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hareflow.common.db import Pool
from hareflow.common.runs import trigger_run
from hareflow.common.secrets import Connection, store
from hareflow.common.secrets.crypto import Cipher, generate_key
from sqlalchemy import create_engine, text

from tests.integration.conftest import System, wait_until
from tests.integration.provider_support import connection_uri

KEY = generate_key()
RESCHEDULE_SYSTEMS = pytest.mark.parametrize(
    "system", ["local", "rabbitmq", "mariadb-rabbitmq"], indirect=True
)


def _store(system: System, *conns: Connection) -> None:
    with system.c.sessions() as session, session.begin():
        for conn in conns:
            store.put_connection(session, conn, Cipher([KEY]))


def _state(system: System, dag_id: str, run_id: str, task_id: str) -> str | None:
    ti = system.tis(dag_id, run_id).get(task_id)
    return None if ti is None else ti.state


def _reschedules(system: System, dag_id: str, run_id: str, task_id: str) -> int:
    ti = system.tis(dag_id, run_id).get(task_id)
    return 0 if ti is None else ti.reschedules


def _trigger(system: System, dag_id: str, logical_date: datetime | None = None) -> str:
    system.c.wait_for_dag(dag_id)
    with system.c.sessions() as session, session.begin():
        return trigger_run(session, dag_id, logical_date=logical_date, triggered_by="test").run_id


def test_a_poke_mode_sensor_succeeds_when_the_file_appears_after_its_first_poke(
    system: System, write_dag, tmp_path: Path
) -> None:
    flag = tmp_path / "incoming" / "data.csv"
    write_dag(
        "wait_file.py",
        f"""
        from hareflow import DAG, FileSensor, task

        with DAG("wait_file"):
            sensor = FileSensor(task_id="wait", filepath={str(tmp_path)!r} + "/incoming/*.csv",
                                poke_interval=0.1)

            @task
            def load():
                return "loaded"

            sensor >> load()
        """,
    )
    system.start()
    run_id = _trigger(system, "wait_file")
    wait_until(
        lambda: "Poke 1: not yet" in system.log_text("wait_file", run_id, "wait"), message="first poke"
    )
    flag.parent.mkdir()
    flag.write_text("a,b\n")
    assert system.c.wait_for_run("wait_file", run_id) == "success"
    tis = system.tis("wait_file", run_id)
    assert (tis["wait"].state, tis["wait"].try_number, tis["wait"].reschedules) == ("success", 1, 0)
    assert tis["load"].state == "success"


@RESCHEDULE_SYSTEMS
def test_a_rescheduled_sensor_gives_its_only_slot_to_another_task_while_it_waits(
    system: System, write_dag, tmp_path: Path
) -> None:
    # One slot. The sensor pokes first (it marks each poke); "other" needs that mark to finish, and
    # the test makes the sensor's file only once "other" has succeeded. A sensor keeping the slot
    # between pokes, or "other" taking it first and keeping it, never gets there.
    poked, flag = tmp_path / "poked", tmp_path / "flag"
    write_dag(
        "give_back.py",
        f"""
        import os, time
        from hareflow import DAG, PokeReturnValue, task

        with DAG("give_back"):
            @task.sensor(poke_interval=0.2, mode="reschedule", timeout=120, priority_weight=10)
            def wait_for_flag():
                open({str(poked)!r}, "a").write("poke\\n")
                if os.path.exists({str(flag)!r}):
                    return PokeReturnValue(True, "flag seen")
                return False

            @task(execution_timeout=30)
            def other():
                while not os.path.exists({str(poked)!r}):
                    time.sleep(0.05)
                return "ran between pokes"

            wait_for_flag()
            other()
        """,
    )
    system.start(worker_concurrency=1)
    run_id = _trigger(system, "give_back")
    wait_until(lambda: _state(system, "give_back", run_id, "other") == "success", message="other done")
    sensor = system.tis("give_back", run_id)["wait_for_flag"]
    assert sensor.state in ("up_for_reschedule", "queued", "running")
    flag.write_text("go")
    assert system.c.wait_for_run("give_back", run_id) == "success"
    sensor = system.tis("give_back", run_id)["wait_for_flag"]
    assert sensor.try_number == 1  # no retry was used by the reschedules
    assert sensor.reschedules >= 1
    assert sensor.first_poke_at is not None
    assert system.result("give_back", run_id, "wait_for_flag") == "flag seen"
    assert len(poked.read_text().splitlines()) == sensor.reschedules + 1  # one poke per delivery
    log = system.log_text("give_back", run_id, "wait_for_flag")
    assert log.count("Rescheduling: the sensor pokes again") == sensor.reschedules


def test_a_sensor_past_its_timeout_fails_without_retrying(system: System, write_dag) -> None:
    write_dag(
        "times_out.py",
        """
        from hareflow import DAG, FileSensor

        with DAG("times_out"):
            FileSensor(task_id="wait", filepath="/nonexistent/never.csv", poke_interval=0.1, timeout=0.5,
                       retries=2, retry_delay=0)
        """,
    )
    system.start()
    run_id, state = system.run_dag("times_out")
    assert state == "failed"
    ti = system.tis("times_out", run_id)["wait"]
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert "sensor 'wait' timed out after" in (ti.error or "")


def test_a_soft_fail_sensor_past_its_timeout_is_skipped_and_so_is_its_downstream(
    system: System, write_dag
) -> None:
    write_dag(
        "soft.py",
        """
        from hareflow import DAG, FileSensor, task

        with DAG("soft"):
            @task
            def load():
                return "loaded"

            FileSensor(task_id="wait", filepath="/nonexistent/never.csv", poke_interval=0.1, timeout=0.3,
                       soft_fail=True) >> load()
        """,
    )
    system.start()
    run_id, state = system.run_dag("soft")
    assert state == "success"
    tis = system.tis("soft", run_id)
    assert (tis["wait"].state, tis["load"].state) == ("skipped", "skipped")
    assert "soft_fail" in (tis["wait"].error or "")


@RESCHEDULE_SYSTEMS
def test_a_rescheduled_sensors_timeout_counts_from_its_first_poke_across_reschedules(
    system: System, write_dag
) -> None:
    write_dag(
        "resched_timeout.py",
        """
        from hareflow import DAG, FileSensor

        with DAG("resched_timeout"):
            FileSensor(task_id="wait", filepath="/nonexistent/never.csv", mode="reschedule",
                       poke_interval=0.3, timeout=1.5, retries=1, retry_delay=0)
        """,
    )
    system.start()
    run_id, state = system.run_dag("resched_timeout")
    assert state == "failed"
    ti = system.tis("resched_timeout", run_id)["wait"]
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert ti.reschedules >= 2  # each delivery alone is far below the timeout
    assert "sensor 'wait' timed out after" in (ti.error or "")


def test_a_sql_sensor_waits_for_a_row_in_postgresql(system: System, write_dag, postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    with engine.begin() as db:
        db.execute(text("CREATE TABLE partitions (day text, ready boolean)"))
    write_dag(
        "wait_sql.py",
        """
        from hareflow import DAG, SqlSensor

        with DAG("wait_sql"):
            SqlSensor(task_id="wait", conn_id="warehouse", mode="reschedule", poke_interval=0.2,
                      sql="SELECT ready FROM partitions WHERE day = :day", parameters={"day": "{{ ds }}"})
        """,
    )
    system.start(fernet_key=KEY)
    _store(system, Connection.from_uri("warehouse", connection_uri(postgres_url)))
    run_id = _trigger(system, "wait_sql", datetime(2026, 1, 5, tzinfo=UTC))
    wait_until(lambda: _reschedules(system, "wait_sql", run_id, "wait") >= 1, message="a reschedule")
    with engine.begin() as db:
        db.execute(text("INSERT INTO partitions VALUES ('2026-01-05', false)"))
    wait_until(lambda: _reschedules(system, "wait_sql", run_id, "wait") >= 3, message="still waiting")
    with engine.begin() as db:
        db.execute(text("UPDATE partitions SET ready = true"))
    engine.dispose()
    assert system.c.wait_for_run("wait_sql", run_id) == "success"
    assert "first row (False,)" in system.log_text("wait_sql", run_id, "wait")


class _Status(BaseHTTPRequestHandler):
    ready = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self.server.ready.is_set():  # type: ignore[attr-defined]
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"status": "done", "rows": 42}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    server.ready = threading.Event()  # type: ignore[attr-defined]
    server.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_http_sensor_waits_while_the_endpoint_says_404_and_returns_what_its_check_found(
    system: System, write_dag, status_server: ThreadingHTTPServer
) -> None:
    write_dag(
        "wait_http.py",
        """
        from hareflow import DAG, HttpSensor, PokeReturnValue

        def finished(response):
            body = response.json()
            return PokeReturnValue(body["status"] == "done", body["rows"])

        with DAG("wait_http"):
            HttpSensor(task_id="wait", http_conn_id="jobs", endpoint="/jobs/{{ ds }}", poke_interval=0.2,
                       mode="reschedule", response_check=finished)
        """,
    )
    system.start(fernet_key=KEY)
    _store(system, Connection("jobs", "http", host="127.0.0.1", port=status_server.server_address[1]))
    run_id = _trigger(system, "wait_http", datetime(2026, 1, 5, tzinfo=UTC))
    wait_until(lambda: _reschedules(system, "wait_http", run_id, "wait") >= 2, message="404 pokes")
    status_server.ready.set()  # type: ignore[attr-defined]
    assert system.c.wait_for_run("wait_http", run_id) == "success"
    assert system.result("wait_http", run_id, "wait") == 42
    assert "/jobs/2026-01-05: HTTP 404" in system.log_text("wait_http", run_id, "wait")


EXTERNAL_DAGS = """
from datetime import timedelta
from hareflow import DAG, ExternalTaskSensor, FileSensor, task

with DAG("producer"):
    @task
    def start():
        return 1

    gate = FileSensor(task_id="gate", filepath={gate!r}, poke_interval=0.1)

    @task
    def publish():
        if {fail!r}:
            raise RuntimeError("publishing broke")
        return "published"

    start() >> gate >> publish()

with DAG("consumer"):
    ExternalTaskSensor(task_id="wait_publish", external_dag_id="producer", external_task_id="publish",
                       poke_interval=0.2, mode="reschedule", timeout=60)
"""


@pytest.mark.parametrize("fail", [False, True], ids=["succeeds", "fails"])
def test_an_external_task_sensor_follows_another_dags_task_at_the_same_logical_date(
    system: System, write_dag, tmp_path: Path, fail: bool
) -> None:
    gate = tmp_path / "gate"
    write_dag("external.py", EXTERNAL_DAGS.format(gate=str(gate), fail=fail))
    system.start()
    day = datetime(2026, 1, 5, 6, tzinfo=UTC)
    system.c.wait_for_dag("producer")
    consumer = _trigger(system, "consumer", day)
    wait_until(
        lambda: "no such run yet" in system.log_text("consumer", consumer, "wait_publish"),
        message="no run yet",
    )
    producer = _trigger(system, "producer", day)
    wait_until(
        lambda: "(run " in system.log_text("consumer", consumer, "wait_publish").split("no such run yet")[-1],
        message="the sensor sees the producer's run",
    )
    gate.write_text("open")
    assert system.c.wait_for_run("producer", producer) == ("failed" if fail else "success")
    final = system.c.wait_for_run("consumer", consumer)
    ti = system.tis("consumer", consumer)["wait_publish"]
    if fail:
        assert (final, ti.state) == ("failed", "failed")
        assert f"producer.publish at {day.isoformat()} (run {producer}) is failed" in (ti.error or "")
    else:
        assert (final, ti.state) == ("success", "success")


def test_dags_test_runs_a_dag_with_sensors_in_both_modes_and_tasks_test_pokes_once(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    marker = tmp_path / "marker"
    (dags / "sensing.py").write_text(
        f"""
import os
from hareflow import DAG, PokeReturnValue, task

with DAG("sensing"):
    @task.sensor(poke_interval=0.1, mode="reschedule")
    def counted():
        with open({str(marker)!r}, "a") as f:
            f.write("x")
        pokes = len(open({str(marker)!r}).read())
        return PokeReturnValue(pokes >= 3, pokes)

    @task.sensor(poke_interval=0.1, timeout=0.3, soft_fail=True)
    def never():
        return False

    @task.sensor(poke_interval=0.1, timeout=0.3, mode="reschedule", soft_fail=True)
    def later():
        return False

    @task
    def show(n):
        return f"after {{n}} pokes"

    show(counted())
    never()
    later()
"""
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HAREFLOW_HOME": str(tmp_path / "home"),
        "HAREFLOW_DAGS_FOLDER": str(dags),
        "HAREFLOW_SENSOR_MIN_RESCHEDULE_INTERVAL": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "hareflow.cli", "dags", "test", "sensing"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("--- counted: up_for_reschedule, poking again in") == 2
    assert '--- show: success, returned "after 3 pokes"' in done.stdout
    assert "--- never: skipped: sensor 'never' timed out" in done.stdout
    assert "--- later: skipped: sensor 'later' timed out" in done.stdout
    one = subprocess.run(
        [sys.executable, "-m", "hareflow.cli", "tasks", "test", "sensing", "later"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert "sensor later found nothing yet; in a run it would give its slot back and poke again" in one.stderr


def test_waiting_sensors_hold_no_pool_slot_and_no_place_in_max_active_tasks(
    system: System, write_dag, tmp_path: Path
) -> None:
    # Two sensors share a one-slot pool in a DAG allowing one active task. Each is done once the
    # other has poked. A waiting sensor holding the pool slot or its max_active_tasks place would
    # keep the other from ever poking.
    marks = tmp_path / "marks"
    marks.mkdir()
    write_dag(
        "pooled_sensors.py",
        f"""
        import os
        from hareflow import DAG, task

        with DAG("pooled_sensors", max_active_tasks=1):
            def waiter(me, other):
                @task.sensor(task_id=me, poke_interval=0.2, mode="reschedule", timeout=60, pool="single")
                def wait():
                    open(os.path.join({str(marks)!r}, me), "w").close()
                    return os.path.exists(os.path.join({str(marks)!r}, other))
                return wait()

            waiter("a", "b")
            waiter("b", "a")
        """,
    )
    system.start()
    with system.c.sessions() as session, session.begin():
        session.add(Pool(name="single", slots=1, description="one at a time"))
    run_id, state = system.run_dag("pooled_sensors")
    assert state == "success"
    tis = system.tis("pooled_sensors", run_id)
    assert max(tis["a"].reschedules, tis["b"].reschedules) >= 1
    assert {tis["a"].try_number, tis["b"].try_number} == {1}
