"""Operating hareflow from the command line: users, pools, workers, queues, the schema, and a system
on RabbitMQ (trigger --wait and queue depths read from the broker)."""

from __future__ import annotations

import getpass
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from hareflow.common.db import User
from sqlalchemy import select

from hareflow.cluster import WorkerSpec
from tests import conftest as root_conftest
from tests.integration.conftest import wait_until
from tests.integration.test_cli import CliSystem, assert_user_error, cli_system, invoke_hareflow, run_hareflow

DAGS = """
    from hareflow import DAG, task

    with DAG("admin_hello"):
        @task
        def hello():
            print("hello from the worker")
            return "hello"

        hello()

    with DAG("admin_heavy"):
        @task(queue="cli_heavy")
        def crunch():
            return 42

        crunch()
"""


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliSystem]:
    yield from cli_system(tmp_path_factory, {"admin_dags.py": DAGS}, wait_for=["admin_hello"])


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory, rabbitmq_url: str) -> Iterator[CliSystem]:
    prefix = f"{root_conftest.TEST_PREFIX}-{uuid.uuid4().hex[:10]}"
    root_conftest._PREFIXES_USED.add(prefix)  # deleted with the session's other test topology
    yield from cli_system(
        tmp_path_factory,
        {"admin_dags.py": DAGS},
        broker_url=rabbitmq_url,
        broker_prefix=prefix,
        workers=[WorkerSpec(queues=("default",), concurrency=2, name="cli-rabbit-worker")],
        wait_for=["admin_hello", "admin_heavy"],
    )


# -- users ----------------------------------------------------------------------------------------


def test_users_can_be_created_listed_given_another_role_and_deleted(hf: CliSystem) -> None:
    created = hf.ok("users", "create", "alice", "--role", "op", "--password-stdin", input="correct horse\n")
    prompted = hf.ok("users", "create", "bob", "--role", "viewer", input="battery staple\nbattery staple\n")
    listed = hf.json("users", "list")
    table = hf.ok("users", "list").stdout
    role = hf.ok("users", "set-role", "alice", "admin")
    deleted = hf.ok("users", "delete", "bob", "--yes")

    assert created.stdout.strip() == "user alice created with role op"
    assert "bob created" in prompted.stdout
    assert [(u["username"], u["role"]) for u in listed] == [("alice", "op"), ("bob", "viewer")]
    assert set(listed[0]) == {"username", "role", "created_at"}
    assert table.splitlines()[0].split() == ["USERNAME", "ROLE", "CREATED"]
    assert role.stdout.strip() == "user alice now has role admin"
    assert deleted.stdout.strip() == "user bob deleted"
    assert [u["username"] for u in hf.json("users", "list")] == ["alice"]
    assert [a.details["user"] for a in hf.audit("user_create")] == ["alice", "bob"]


def test_api_tokens_are_issued_with_an_expiry_listed_and_revoked(hf: CliSystem) -> None:
    hf.ok("users", "create", "robot", "--role", "viewer", "--password-stdin", input="beep boop beep\n")
    first = hf.ok("users", "token", "robot").stdout.strip()
    forever = hf.ok("users", "token", "robot", "--days", "0").stdout.strip()
    listed = hf.json("users", "tokens", "list", "robot")
    table = hf.ok("users", "tokens", "list").stdout

    assert first.startswith("hft_") and forever.startswith("hft_") and first != forever
    assert [t["user"] for t in listed] == ["robot", "robot"]
    assert listed[0]["expires_at"] is not None and listed[1]["expires_at"] is None
    assert table.splitlines()[0].split() == ["ID", "USER", "CREATED", "LAST", "USED", "EXPIRES"]
    revoked = hf.ok("users", "tokens", "revoke", str(listed[0]["id"]))
    assert revoked.stdout.strip() == f"revoked API token {listed[0]['id']} of robot"
    assert [t["id"] for t in hf.json("users", "tokens", "list", "robot")] == [listed[1]["id"]]
    missing = hf.invoke("users", "tokens", "revoke", "999999")
    assert missing.exit_code == 2 and "no API token with id 999999" in missing.output
    assert [a.details["token_id"] for a in hf.audit("token_revoke")] == [listed[0]["id"]]


def test_passwords_are_stored_hashed_and_verify(hf: CliSystem) -> None:
    from hareflow.common.users import verify_password

    hf.ok("users", "create", "carol", "--role", "viewer", "--password-stdin", input="s3cret-enough\n")

    with hf.cluster.sessions() as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "carol"))
        good = verify_password(session, "carol", "s3cret-enough")
        bad = verify_password(session, "carol", "wrong-password")
    assert stored and "s3cret-enough" not in stored
    assert good is not None and good.role == "viewer"
    assert bad is None


def test_user_mistakes_exit_two_with_one_line(hf: CliSystem) -> None:
    hf.ok("users", "create", "dave", "--role", "op", "--password-stdin", input="long enough\n")

    assert_user_error(
        hf.invoke("users", "create", "dave", "--role", "op", "--password-stdin", input="long enough\n"),
        "already exists",
    )
    assert_user_error(
        hf.invoke("users", "create", "erin", "--role", "op", "--password-stdin", input="short\n"),
        "at least 8",
    )
    assert_user_error(
        hf.invoke("users", "create", "erin", "--role", "op", "--password-stdin", input="\n"), "no password"
    )
    assert_user_error(hf.invoke("users", "set-role", "nobody", "viewer"), "no user named 'nobody'")
    assert_user_error(hf.invoke("users", "delete", "nobody", "--yes"), "no user named 'nobody'")
    wrong_role = hf.invoke("users", "set-role", "dave", "superuser")
    assert wrong_role.exit_code == 2 and "'superuser' is not one of" in wrong_role.stderr


def test_set_password_in_a_real_process_replaces_the_password_and_is_audited(hf: CliSystem) -> None:
    import subprocess

    from hareflow.common.users import verify_password

    from tests.integration.test_cli import clean_env, hareflow_command

    hf.ok("users", "create", "frank", "--role", "viewer", "--password-stdin", input="first password\n")
    changed = subprocess.run(
        [*hareflow_command(), "users", "set-password", "frank", "--password-stdin"],
        input="second password\n",
        env=clean_env(hf.env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "password of user frank changed"
    prompted = hf.ok("users", "set-password", "frank", input="third password\nthird password\n")
    assert "password of user frank changed" in prompted.stdout
    with hf.cluster.sessions() as session:
        assert verify_password(session, "frank", "first password") is None
        assert verify_password(session, "frank", "second password") is None
        assert verify_password(session, "frank", "third password") is not None
    audited = [(a.username, a.details) for a in hf.audit("user_set_password")]
    assert (
        audited[-2:] == [(getpass.getuser(), {"user": "frank", "origin": f"cli@{socket.gethostname()}"})] * 2
    )


def test_set_password_refuses_an_unknown_user_a_short_password_and_a_mismatched_confirmation(
    hf: CliSystem,
) -> None:
    hf.ok("users", "create", "gina", "--role", "op", "--password-stdin", input="gina's password\n")
    before = len(hf.audit("user_set_password"))
    unknown = run_hareflow(hf.env, "users", "set-password", "nobody", "--password-stdin")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip() == "Error: no user named 'nobody' (see `hareflow users list`)"
    assert_user_error(
        hf.invoke("users", "set-password", "gina", "--password-stdin", input="short\n"), "at least 8"
    )
    mismatch = hf.invoke("users", "set-password", "gina", input="one password\nanother one\n")
    assert mismatch.exit_code != 0 and "do not match" in mismatch.output
    assert len(hf.audit("user_set_password")) == before


# -- pools ----------------------------------------------------------------------------------------


def test_pools_can_be_set_resized_listed_and_deleted(hf: CliSystem) -> None:
    created = hf.ok("pools", "set", "warehouse", "4", "--description", "warehouse connections")
    resized = hf.ok("pools", "set", "warehouse", "2")
    listed = hf.json("pools", "list")
    table = hf.ok("pools", "list").stdout
    deleted = hf.ok("pools", "delete", "warehouse")

    assert created.stdout.strip() == "pool warehouse created with 4 slot(s)"
    assert resized.stdout.strip() == "pool warehouse updated with 2 slot(s)"
    assert listed == [{"name": "warehouse", "slots": 2, "used": 0, "description": "warehouse connections"}]
    assert table.splitlines()[0].split() == ["POOL", "SLOTS", "USED", "DESCRIPTION"]
    assert deleted.stdout.strip() == "pool warehouse deleted"
    assert hf.json("pools", "list") == []
    assert len(hf.audit("pool_set")) == 2 and len(hf.audit("pool_delete")) == 1
    # Who and from where: the OS user, on this host's CLI.
    assert {(a.username, a.details["origin"]) for a in hf.audit("pool_delete")} == {
        (getpass.getuser(), f"cli@{socket.gethostname()}")
    }


def test_pool_mistakes_exit_two(hf: CliSystem) -> None:
    assert_user_error(hf.invoke("pools", "delete", "nope"), "no pool named 'nope'")
    assert_user_error(hf.invoke("pools", "set", "bad name!", "2"), "pool name 'bad name!'")
    assert hf.invoke("pools", "set", "warehouse", "-1").exit_code == 2
    assert hf.invoke("pools", "set", "warehouse", "many").exit_code == 2


# -- workers and queues -----------------------------------------------------------------------------


def test_workers_list_shows_the_running_worker_with_its_queues_and_heartbeat(hf: CliSystem) -> None:
    workers = wait_until(lambda: hf.json("workers", "list"), message="a worker heartbeat")
    table = hf.ok("workers", "list").stdout

    [worker] = workers
    assert worker["queues"] == ["default"] and worker["concurrency"] == 4 and worker["state"] == "active"
    assert set(worker) == {
        "name", "hostname", "pid", "queues", "concurrency", "running", "state",
        "first_seen", "last_heartbeat",
    }  # fmt: skip
    assert table.splitlines()[0].split()[:5] == ["NAME", "HOST", "QUEUES", "CONCURRENCY", "RUNNING"]
    assert worker["name"] in table and "s ago)" in table


def test_queues_list_with_the_local_executor_says_the_queues_live_in_the_standalone_process(
    hf: CliSystem,
) -> None:
    result = hf.ok("queues", "list")

    assert "inside the `hareflow standalone` process" in result.stderr
    assert result.stdout == ""
    assert hf.json("queues", "list") == []


def test_trigger_wait_on_rabbitmq_follows_the_run_to_success(rabbit: CliSystem) -> None:
    done = run_hareflow(rabbit.env, "dags", "trigger", "admin_hello", "--wait", "--timeout", "60")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith(": success")
    run_id = done.stdout.split()[2]
    assert rabbit.ok("tasks", "logs", run_id, "hello").stdout == "hello from the worker\n"


def test_queues_list_on_rabbitmq_shows_depth_and_consumers_of_dag_and_worker_queues(
    rabbit: CliSystem,
) -> None:
    rabbit.cluster.trigger("admin_heavy")  # no worker consumes cli_heavy: its message waits there

    def heavy_queued() -> object:
        stats = {q["name"]: q for q in rabbit.json("queues", "list")}
        return stats if stats.get("cli_heavy", {}).get("messages") == 1 else None

    stats = wait_until(heavy_queued, message="one message waiting in cli_heavy")
    table = rabbit.ok("queues", "list").stdout

    assert stats["cli_heavy"] == {"name": "cli_heavy", "messages": 1, "consumers": 0}
    assert stats["default"]["consumers"] >= 1
    assert "(dead letters)" in stats
    assert table.splitlines()[0].split() == ["QUEUE", "MESSAGES", "CONSUMERS"]
    workers = rabbit.json("workers", "list")
    assert [(w["name"], w["queues"], w["concurrency"]) for w in workers] == [
        ("cli-rabbit-worker", ["default"], 2)
    ]


def test_an_unreachable_broker_is_named_with_its_password_masked(rabbit: CliSystem) -> None:
    result = rabbit.invoke(
        "queues", "list", env={"HAREFLOW_BROKER_URL": "amqp://ops:hunter2-pw@127.0.0.1:1/"}
    )

    assert_user_error(result, "broker at amqp://ops:***@127.0.0.1:1/")
    assert "hunter2-pw" not in result.output


# -- the schema -------------------------------------------------------------------------------------


def test_db_check_migrate_and_reset_manage_the_schema(postgres_url: str, tmp_path: Path) -> None:
    env = {"HAREFLOW_DATABASE_URL": postgres_url, "HAREFLOW_HOME": str(tmp_path)}

    def hareflow(*args: str, input: str | None = None) -> Result:
        return invoke_hareflow(env, *args, input=input)

    before = hareflow("db", "check")
    listing_before = hareflow("dags", "list")
    migrated = hareflow("db", "migrate")
    after = hareflow("db", "check")
    kept = hareflow("db", "reset", input="n\n")
    reset = hareflow("db", "reset", "--yes")

    assert before.exit_code == 1 and "run `hareflow db migrate`" in before.stdout
    assert_user_error(listing_before, "schema revision none", "run `hareflow db migrate`")
    assert migrated.exit_code == 0 and migrated.stdout.startswith("metastore at revision ")
    assert after.exit_code == 0 and "metastore is current" in after.stdout
    assert kept.exit_code == 1 and "Aborted" in kept.stderr
    assert reset.exit_code == 0 and reset.stdout.strip() == "metastore reset"
    assert hareflow("dags", "list", "-o", "json").stdout.strip() == "[]"


def test_db_check_against_an_unreachable_database_exits_two_naming_the_masked_url(tmp_path: Path) -> None:
    env = {"HAREFLOW_HOME": str(tmp_path), "HAREFLOW_DATABASE_URL": "postgresql://u:s3cret-pw@127.0.0.1:1/x"}

    done = run_hareflow(env, "db", "check")

    assert done.returncode == 2
    assert "database at postgresql://u:***@127.0.0.1:1/x" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


# -- db init (the deployment's one-shot step) --------------------------------------------------------


def test_db_init_migrates_and_creates_the_admin_once(tmp_path: Path, postgres_url: str) -> None:
    from hareflow.common.db import create_engine_for, make_session_factory
    from hareflow.common.users import verify_password

    env = {"HAREFLOW_HOME": str(tmp_path), "HAREFLOW_DATABASE_URL": postgres_url}
    nobody = invoke_hareflow(env, "db", "init")
    assert nobody.exit_code == 0, nobody.output
    assert "metastore at revision" in nobody.output and "no admin user created" in nobody.output

    short = invoke_hareflow({**env, "HAREFLOW_ADMIN_PASSWORD": "short"}, "db", "init")
    assert_user_error(short, "HAREFLOW_ADMIN_PASSWORD", "at least 8 characters")

    env |= {"HAREFLOW_ADMIN_USERNAME": "ops-admin", "HAREFLOW_ADMIN_PASSWORD": "first-password"}
    created = invoke_hareflow(env, "db", "init")
    assert created.exit_code == 0 and "admin user ops-admin created" in created.output
    again = invoke_hareflow({**env, "HAREFLOW_ADMIN_PASSWORD": "second-password"}, "db", "init")
    assert again.exit_code == 0 and "user ops-admin exists; left alone" in again.output

    sessions = make_session_factory(create_engine_for(postgres_url))
    with sessions() as s, s.begin():
        users = s.scalars(select(User)).all()
        assert [(u.username, u.role) for u in users] == [("ops-admin", "admin")]
        assert verify_password(s, "ops-admin", "first-password") is not None  # not reset by the rerun
        assert verify_password(s, "ops-admin", "second-password") is None


def test_db_init_waits_for_the_database_then_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    env = {"HAREFLOW_HOME": str(tmp_path), "HAREFLOW_DATABASE_URL": "postgresql+psycopg2://x@127.0.0.1:1/y"}
    result = run_hareflow(env, "db", "init", "--wait", "1.5")
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr and "Traceback" not in result.stderr
