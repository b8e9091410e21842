"""``hareflow connections`` against a real metastore (SQLite and PostgreSQL; MariaDB for the round
trip): adding, reading with secrets masked, encryption at rest, key rotation, all-or-nothing
imports, exports, and connection tests that really connect."""

from __future__ import annotations

import getpass
import json
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from hareflow.common.db import AuditLog
from hareflow.common.secrets.crypto import generate_key
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url

from tests.conftest import PG_URL
from tests.integration.test_cli import assert_user_error, invoke_hareflow

PASSWORD = "pw-Zq8-unlikely-anywhere"
ORIGIN = f"cli@{socket.gethostname()}"  # where each change came from


@dataclass
class Cli:
    """The ``hareflow`` command against one fresh, migrated metastore."""

    env: dict[str, str]
    engine: Engine
    tmp: Path

    def invoke(self, *args: str, input: str | None = None, **env: str) -> Result:
        return invoke_hareflow({**self.env, **env}, *args, input=input)

    def ok(self, *args: str, input: str | None = None, **env: str) -> Result:
        result = self.invoke(*args, input=input, **env)
        assert result.exit_code == 0, f"hareflow {' '.join(args)} -> {result.exit_code}\n{result.output}"
        return result

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json", **env).stdout)

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}"))]  # noqa: S608

    def audit(self, action: str) -> list[AuditLog]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(AuditLog).where(AuditLog.action == action)))  # type: ignore[arg-type]


def make_cli(tmp_path: Path, database_url: str) -> Iterator[Cli]:
    env = {
        "HAREFLOW_HOME": str(tmp_path / "home"),
        "HAREFLOW_DATABASE_URL": database_url,
        "HAREFLOW_FERNET_KEY": generate_key(),
    }
    migrated = invoke_hareflow(env, "db", "migrate")
    assert migrated.exit_code == 0, migrated.output
    engine = create_engine(database_url)
    try:
        yield Cli(env, engine, tmp_path)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    yield from make_cli(tmp_path, request.getfixturevalue(f"{request.param}_url"))


def local_postgres_uri(database: str | None = None) -> str:
    """The test PostgreSQL as a connection URI (``postgresql://``, no driver suffix)."""
    url = make_url(PG_URL)
    auth = url.username or ""
    if url.password:
        auth += f":{url.password}"
    return f"postgresql://{auth}@{url.host}:{url.port or 5432}/{database or url.database}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- add, get, list -------------------------------------------------------------------------------


def test_a_connection_added_from_a_uri_is_shown_with_its_password_masked_unless_asked(cli: Cli) -> None:
    added = cli.ok(
        "connections",
        "add",
        "warehouse",
        "--uri",
        f"postgresql://etl:{PASSWORD}@db.internal:5433/dwh?sslmode=require",
    )
    table = cli.ok("connections", "get", "warehouse").stdout
    shown = cli.json("connections", "get", "warehouse")
    secret = cli.json("connections", "get", "warehouse", "--show-secrets")
    masked_uri = cli.ok("connections", "get", "warehouse", "--uri").stdout.strip()
    full_uri = cli.ok("connections", "get", "warehouse", "--uri", "--show-secrets").stdout.strip()

    assert added.stdout.strip() == "connection warehouse added (postgresql)"
    assert PASSWORD not in table and "***" in table
    assert (shown["host"], shown["port"], shown["login"], shown["schema"]) == (
        "db.internal",
        5433,
        "etl",
        "dwh",
    )
    assert shown["password"] == "***" and shown["extra"] == {"sslmode": "require"}
    assert secret["password"] == PASSWORD
    assert masked_uri == "postgresql://etl:***@db.internal:5433/dwh?sslmode=require"
    assert full_uri == f"postgresql://etl:{PASSWORD}@db.internal:5433/dwh?sslmode=require"


def test_a_connection_added_from_fields_keeps_each_field_its_extra_and_its_allowed_dags(cli: Cli) -> None:
    cli.ok(
        "connections", "add", "api", "--conn-type", "http", "--host", "api.example.com", "--port", "8443",
        "--login", "bot", "--password", PASSWORD, "--schema", "https", "--description", "the partner API",
        "--extra", '{"api_token": "tok-123456", "timeout": 5}', "--allowed-dag-ids", "sync,report",
    )  # fmt: skip
    shown = cli.json("connections", "get", "api")
    secret = cli.json("connections", "get", "api", "--show-secrets")

    assert shown == {
        "conn_id": "api",
        "conn_type": "http",
        "description": "the partner API",
        "host": "api.example.com",
        "port": 8443,
        "login": "bot",
        "schema": "https",
        "extra": {"api_token": "***", "timeout": 5},
        "allowed_dag_ids": ["sync", "report"],
        "password": "***",
    }
    assert secret["password"] == PASSWORD and secret["extra"]["api_token"] == "tok-123456"


def test_the_password_can_come_from_a_hidden_prompt_or_standard_input(cli: Cli) -> None:
    prompted = cli.ok(
        "connections",
        "add",
        "a",
        "--uri",
        "postgresql://u@h/db",
        "--password",
        "-",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    cli.ok(
        "connections",
        "add",
        "b",
        "--conn-type",
        "mysql",
        "--host",
        "h",
        "--password-stdin",
        input="from-stdin\n",
    )

    assert PASSWORD not in prompted.stdout
    assert cli.json("connections", "get", "a", "--show-secrets")["password"] == PASSWORD
    assert cli.json("connections", "get", "b", "--show-secrets")["password"] == "from-stdin"


def test_list_says_whether_a_password_is_set_and_never_shows_one(cli: Cli) -> None:
    cli.ok("connections", "add", "with_pw", "--uri", f"postgresql://u:{PASSWORD}@h/db")
    cli.ok("connections", "add", "without_pw", "--uri", "http://example.com")
    table = cli.ok("connections", "list").stdout
    listed = cli.json("connections", "list")
    as_yaml = yaml.safe_load(cli.ok("connections", "list", "-o", "yaml").stdout)

    lines = table.splitlines()
    assert lines[0].split()[:7] == ["CONN_ID", "TYPE", "HOST", "PORT", "LOGIN", "SCHEMA", "PASSWORD"]
    assert " set " in lines[1] and "not set" in lines[2]
    assert PASSWORD not in table and PASSWORD not in json.dumps(listed)
    assert [(c["conn_id"], c["password_set"]) for c in listed] == [("with_pw", True), ("without_pw", False)]
    assert "password" not in listed[0]
    assert [c["conn_id"] for c in as_yaml] == ["with_pw", "without_pw"]


def test_the_connection_table_holds_no_plaintext_password_or_extra(cli: Cli) -> None:
    cli.ok("connections", "add", "db", "--uri", f"postgresql://u:{PASSWORD}@h/db?api_key=key-Zq8-in-extra")

    stored = " ".join(str(v) for row in cli.rows("connection") for v in row)
    assert "db" in stored and "postgresql" in stored
    assert PASSWORD not in stored
    assert "key-Zq8-in-extra" not in stored


def test_adding_an_existing_id_is_refused_unless_replace(cli: Cli) -> None:
    cli.ok("connections", "add", "db", "--uri", "postgresql://u@old/db")
    refused = cli.invoke("connections", "add", "db", "--uri", "postgresql://u@new/db")
    kept = cli.json("connections", "get", "db")["host"]
    replaced = cli.ok("connections", "add", "db", "--uri", "postgresql://u@new/db", "--replace")

    assert_user_error(refused, "connection 'db' exists", "--replace")
    assert kept == "old"
    assert replaced.stdout.strip() == "connection db replaced (postgresql)"
    assert cli.json("connections", "get", "db")["host"] == "new"


def test_bad_options_are_one_line_naming_the_field(cli: Cli) -> None:
    assert_user_error(cli.invoke("connections", "add", "x"), "--uri", "--conn-type")
    assert_user_error(cli.invoke("connections", "add", "x", "--uri", "nonsense"), "'x'", "not a URI")
    assert_user_error(
        cli.invoke("connections", "add", "x", "--conn-type", "http", "--extra", "{oops"), "extra"
    )
    assert_user_error(
        cli.invoke("connections", "add", "x", "--conn-type", "http", "--port", "70000"), "port 70000"
    )
    assert_user_error(cli.invoke("connections", "add", "bad id!", "--conn-type", "http"), "'bad id!'")
    assert cli.rows("connection") == []


def test_delete_removes_a_connection_and_a_missing_one_is_a_clear_error(cli: Cli) -> None:
    cli.ok("connections", "add", "db", "--uri", "postgresql://u@h/db")
    deleted = cli.ok("connections", "delete", "db")
    again = cli.invoke("connections", "delete", "db")

    assert deleted.stdout.strip() == "connection db deleted"
    assert cli.rows("connection") == []
    assert_user_error(again, "no connection 'db'")


# -- keys -----------------------------------------------------------------------------------------


def test_a_wrong_or_missing_fernet_key_is_a_clear_error_never_an_empty_password(cli: Cli) -> None:
    cli.ok("connections", "add", "db", "--uri", f"postgresql://u:{PASSWORD}@h/db")
    wrong = cli.invoke("connections", "get", "db", "--show-secrets", HAREFLOW_FERNET_KEY=generate_key())
    missing = cli.invoke("connections", "get", "db", HAREFLOW_FERNET_KEY="")
    malformed = cli.invoke("connections", "add", "x", "--uri", "http://h", HAREFLOW_FERNET_KEY="not-a-key")

    assert_user_error(wrong, "connection 'db' password does not decrypt", "Fernet key")
    assert_user_error(missing, "no Fernet key configured", "HAREFLOW_FERNET_KEY")
    assert_user_error(malformed, "fernet_key", "not a Fernet key")


def test_rotate_key_re_encrypts_everything_so_the_old_key_can_be_dropped(cli: Cli) -> None:
    old, new = cli.env["HAREFLOW_FERNET_KEY"], generate_key()
    cli.ok("connections", "add", "db", "--uri", f"postgresql://u:{PASSWORD}@h/db?token=tok-abcdef")
    cli.ok("connections", "add", "plain", "--uri", "http://example.com")
    cli.ok("variables", "set", "threshold", "10")
    before = cli.rows("connection")

    rotated = cli.ok("connections", "rotate-key", HAREFLOW_FERNET_KEY=f"{new},{old}")
    after = cli.rows("connection")
    read_with_new_only = cli.json("connections", "get", "db", "--show-secrets", HAREFLOW_FERNET_KEY=new)
    variable = cli.ok("variables", "get", "threshold", HAREFLOW_FERNET_KEY=new).stdout.strip()
    old_only = cli.invoke("connections", "get", "db", HAREFLOW_FERNET_KEY=old)

    assert rotated.stdout.strip() == "re-encrypted 2 connection(s) and 1 variable(s) with the first key"
    assert before != after
    assert read_with_new_only["password"] == PASSWORD and read_with_new_only["extra"] == {
        "token": "tok-abcdef"
    }
    assert variable == "10"
    assert_user_error(old_only, "does not decrypt")
    assert [a.details for a in cli.audit("secrets_rotate_key")] == [
        {"connections": 2, "variables": 1, "origin": ORIGIN}
    ]


def test_rotate_key_without_the_old_key_changes_nothing_and_says_what_does_not_decrypt(cli: Cli) -> None:
    cli.ok("connections", "add", "db", "--uri", f"postgresql://u:{PASSWORD}@h/db")
    before = cli.rows("connection")

    failed = cli.invoke("connections", "rotate-key", HAREFLOW_FERNET_KEY=generate_key())

    assert_user_error(failed, "connection 'db' password", "does not decrypt")
    assert cli.rows("connection") == before


def test_generate_key_prints_a_new_usable_fernet_key_each_time(cli: Cli) -> None:
    key = cli.ok("connections", "generate-key").stdout.strip()
    another = cli.ok("connections", "generate-key").stdout.strip()

    cli.ok("connections", "add", "db", "--uri", f"postgresql://u:{PASSWORD}@h/db", HAREFLOW_FERNET_KEY=key)
    read = cli.ok("connections", "get", "db", "--uri", "--show-secrets", HAREFLOW_FERNET_KEY=key)

    assert key != another
    assert read.stdout.strip() == f"postgresql://u:{PASSWORD}@h/db"


# -- import / export ------------------------------------------------------------------------------


def test_an_import_with_one_bad_entry_writes_nothing_and_names_the_file_line_id_and_field(cli: Cli) -> None:
    path = cli.tmp / "conns.json"
    path.write_text(
        json.dumps(
            {
                "good": {"conn_type": "postgresql", "host": "h", "password": PASSWORD},
                "also_good": {"uri": "http://example.com"},
                "bad": {"conn_type": "postgresql", "port": 99999},
            },
            indent=2,
        )
    )
    failed = cli.invoke("connections", "import", str(path))

    assert_user_error(failed, str(path), "line 10", "'bad'", "port 99999", "nothing was imported")
    assert cli.rows("connection") == []


def test_a_yaml_import_error_names_its_line_and_an_unknown_field(cli: Cli) -> None:
    path = cli.tmp / "conns.yaml"
    path.write_text("good:\n  uri: http://example.com\nbad:\n  conn_type: http\n  hots: typo\n")
    failed = cli.invoke("connections", "import", str(path))
    path.write_text("good:\n  uri: http://example.com\n  port: [unclosed\n")
    broken = cli.invoke("connections", "import", str(path))

    assert_user_error(failed, f"{path} line 3", "'bad'", "unknown field(s) hots")
    assert_user_error(broken, str(path), "not valid YAML")
    assert cli.rows("connection") == []


def test_a_yaml_number_where_text_is_expected_is_an_error_that_does_not_repeat_a_password(cli: Cli) -> None:
    path = cli.tmp / "conns.yml"
    path.write_text("db:\n  conn_type: postgresql\n  password: 20260117\n")

    failed = cli.invoke("connections", "import", str(path))

    assert_user_error(failed, f"{path} line 1", "'db'", "password must be text", "quote it")
    assert "20260117" not in failed.output
    assert cli.rows("connection") == []


def test_an_import_skips_existing_ids_and_reports_them_unless_overwrite(cli: Cli) -> None:
    cli.ok("connections", "add", "db", "--uri", "postgresql://u@old/db")
    path = cli.tmp / "conns.yaml"
    path.write_text("db:\n  uri: postgresql://u@new/db\nweb: http://example.com\n")

    first = cli.ok("connections", "import", str(path))
    kept = cli.json("connections", "get", "db")["host"]
    second = cli.ok("connections", "import", str(path), "--overwrite")

    assert first.stdout.strip() == f"imported connections from {path}: 1 added"
    assert "skipped 1 existing connection(s)" in first.stderr and "db" in first.stderr
    assert kept == "old"
    assert second.stdout.strip() == f"imported connections from {path}: 0 added, 2 replaced"
    assert cli.json("connections", "get", "db")["host"] == "new"


@pytest.mark.parametrize("name", ["backup.json", "backup.yaml"])
def test_export_then_import_restores_every_connection_with_its_secrets(cli: Cli, name: str) -> None:
    cli.ok(
        "connections", "add", "api", "--conn-type", "http", "--host", "api.example.com", "--port", "8443",
        "--login", "bot", "--password", PASSWORD, "--description", "p", "--extra", '{"token": "t-1234"}',
        "--allowed-dag-ids", "sync",
    )  # fmt: skip
    cli.ok("connections", "add", "lite", "--uri", "sqlite:////var/data/app.db")
    originals = {c: cli.json("connections", "get", c, "--show-secrets") for c in ("api", "lite")}
    path = cli.tmp / name

    exported = cli.ok("connections", "export", str(path))
    written = path.read_text()
    for conn_id in originals:
        cli.ok("connections", "delete", conn_id)
    cli.ok("connections", "import", str(path))

    assert exported.stdout.strip() == f"exported 2 connection(s) to {path} (with their secrets; mode 0600)"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert PASSWORD in written  # a backup: its purpose is to hold the secrets
    loaded = yaml.safe_load(written) if name.endswith(".yaml") else json.loads(written)
    assert set(loaded) == {"api", "lite"}
    assert {c: cli.json("connections", "get", c, "--show-secrets") for c in originals} == originals


def test_export_makes_an_existing_file_private(cli: Cli) -> None:
    path = cli.tmp / "out.json"
    path.write_text("{}")
    path.chmod(0o644)

    cli.ok("connections", "export", str(path))

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# -- test -----------------------------------------------------------------------------------------


def test_connections_test_succeeds_against_the_local_postgresql(cli: Cli) -> None:
    cli.ok("connections", "add", "pg", "--uri", local_postgres_uri())

    tested = cli.ok("connections", "test", "pg")

    assert tested.stdout.startswith("ok: SELECT 1 on postgresql")
    assert tested.stdout.rstrip().endswith("s)")
    assert "from metastore" in tested.stderr


def test_connections_test_fails_with_exit_one_against_a_closed_port(cli: Cli) -> None:
    port = closed_port()
    cli.ok("connections", "add", "gone", "--uri", f"postgresql://u:{PASSWORD}@127.0.0.1:{port}/db")

    tested = cli.invoke("connections", "test", "gone")

    assert tested.exit_code == 1, tested.output
    assert tested.stdout.startswith("failed: OperationalError")
    assert str(port) in tested.stdout
    assert PASSWORD not in tested.output


def test_connections_test_reads_the_environment_before_the_metastore(cli: Cli) -> None:
    cli.ok("connections", "add", "target", "--uri", f"postgresql://u@127.0.0.1:{closed_port()}/db")

    tested = cli.ok("connections", "test", "target", HAREFLOW_CONN_TARGET=local_postgres_uri())
    only_env = cli.ok("connections", "test", "elsewhere", HAREFLOW_CONN_ELSEWHERE=local_postgres_uri())

    assert tested.stdout.startswith("ok: SELECT 1")
    assert "from environment (HAREFLOW_CONN_TARGET)" in tested.stderr
    assert "not a hareflow setting" not in tested.stderr
    assert only_env.stdout.startswith("ok: SELECT 1")


def test_connections_test_of_an_unknown_id_names_where_it_looked(cli: Cli) -> None:
    assert_user_error(cli.invoke("connections", "test", "nowhere"), "'nowhere'", "HAREFLOW_CONN_NOWHERE")


# -- audit ----------------------------------------------------------------------------------------


def test_changes_are_audited_with_the_os_user_and_never_a_secret(cli: Cli) -> None:
    cli.ok("connections", "add", "db", "--uri", f"postgresql://u:{PASSWORD}@h/db")
    cli.ok("connections", "add", "db", "--uri", f"postgresql://u:{PASSWORD}@h2/db", "--replace")
    path = cli.tmp / "c.json"
    path.write_text(json.dumps({"more": {"uri": f"mysql://u:{PASSWORD}@h/db"}}))
    cli.ok("connections", "import", str(path))
    cli.ok("connections", "delete", "db")

    added = cli.audit("connection_add")
    rows = added + cli.audit("connection_import") + cli.audit("connection_delete")

    assert [a.details for a in added] == [
        {"conn_id": "db", "replaced": False, "origin": ORIGIN},
        {"conn_id": "db", "replaced": True, "origin": ORIGIN},
    ]
    assert cli.audit("connection_import")[0].details["added"] == ["more"]
    assert cli.audit("connection_delete")[0].details == {"conn_id": "db", "origin": ORIGIN}
    assert {a.username for a in rows} == {getpass.getuser()}
    assert PASSWORD not in " ".join(str(v) for row in cli.rows("audit_log") for v in row)


# -- MariaDB --------------------------------------------------------------------------------------


def test_a_connection_round_trips_through_mariadb(tmp_path: Path, mysql_url: str) -> None:
    for cli in make_cli(tmp_path, mysql_url):
        cli.ok("connections", "add", "db", "--uri", f"mysql://u:{PASSWORD}@h:3306/app?charset=utf8mb4")
        original = cli.json("connections", "get", "db", "--show-secrets")
        path = tmp_path / "backup.yaml"
        cli.ok("connections", "export", str(path))
        cli.ok("connections", "delete", "db")
        cli.ok("connections", "import", str(path))

        assert original["password"] == PASSWORD and original["extra"] == {"charset": "utf8mb4"}
        assert cli.json("connections", "get", "db", "--show-secrets") == original
        assert PASSWORD not in " ".join(str(v) for row in cli.rows("connection") for v in row)


# -- tasks resolve them locally under `dags test` and `tasks test` ---------------------------------

LOCAL_DAG = """
from hareflow import DAG, BashTask, Connection, Variable, task

with DAG("local_lookups"):
    @task
    def show():
        conn = Connection.get("wh")
        print("host", conn.host, "password", conn.password, "limit", Variable.get("limit"))
        return conn.host

    BashTask("rendered", "echo {{ conn.wh.login }} {{ var.value.limit }}")
    show()
"""


def test_dags_test_and_tasks_test_read_connections_from_the_metastore_and_mask_them(cli: Cli) -> None:
    dags = cli.tmp / "dags"
    dags.mkdir()
    (dags / "local_lookups.py").write_text(LOCAL_DAG)
    cli.ok("connections", "add", "wh", "--uri", f"postgresql://loader:{PASSWORD}@db.internal:5432/dwh")
    cli.ok("variables", "set", "limit", "25")

    whole = cli.ok("dags", "test", "local_lookups", HAREFLOW_DAGS_FOLDER=str(dags))
    one = cli.ok("tasks", "test", "local_lookups", "show", HAREFLOW_DAGS_FOLDER=str(dags))
    override = cli.ok(
        "tasks",
        "test",
        "local_lookups",
        "show",
        HAREFLOW_DAGS_FOLDER=str(dags),
        HAREFLOW_CONN_WH="http://from-env:1",
    )

    assert "host db.internal password *** limit 25" in whole.output
    assert "loader 25" in whole.output  # the BashTask's rendered command ran
    assert PASSWORD not in whole.output and PASSWORD not in one.output
    assert "host db.internal password *** limit 25" in one.output
    assert "host from-env" in override.output  # the environment comes first


def test_dags_test_applies_a_connections_allow_list(cli: Cli) -> None:
    dags = cli.tmp / "dags"
    dags.mkdir()
    (dags / "local_lookups.py").write_text(LOCAL_DAG)
    cli.ok("connections", "add", "wh", "--uri", "postgresql://db.internal/dwh", "--allowed-dag-ids", "other")
    cli.ok("variables", "set", "limit", "1")

    result = cli.invoke("dags", "test", "local_lookups", HAREFLOW_DAGS_FOLDER=str(dags))

    assert result.exit_code == 1
    assert "DAG 'local_lookups' may not read connection 'wh'" in result.output
