"""``hareflow variables`` against a real metastore (SQLite and PostgreSQL): set and get (text and
JSON), sensitive values masked in lists, encryption at rest, all-or-nothing imports, exports."""

from __future__ import annotations

import getpass
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.test_cli import assert_user_error
from tests.integration.test_cli_connections import Cli, make_cli

SECRET = "sv-Zq8-unlikely-anywhere"
ORIGIN = f"cli@{socket.gethostname()}"  # where each change came from


@pytest.fixture(params=["sqlite", "postgres"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    yield from make_cli(tmp_path, request.getfixturevalue(f"{request.param}_url"))


def test_a_variable_set_from_the_command_line_reads_back_as_written(cli: Cli) -> None:
    created = cli.ok("variables", "set", "threshold", "10", "--description", "rows below fail")
    updated = cli.ok("variables", "set", "threshold", "12")
    value = cli.ok("variables", "get", "threshold").stdout
    listed = cli.json("variables", "list")

    assert created.stdout.strip() == "variable threshold created"
    assert updated.stdout.strip() == "variable threshold updated"
    assert value == "12\n"
    assert [(v["key"], v["value"], v["description"]) for v in listed] == [
        ("threshold", "12", "rows below fail")
    ]


def test_add_is_the_same_command_as_set(cli: Cli) -> None:
    cli.ok("variables", "add", "region", "eu-west-1")

    assert cli.ok("variables", "get", "region").stdout.strip() == "eu-west-1"


def test_json_values_are_checked_stored_as_json_text_and_pretty_printed(cli: Cli) -> None:
    cli.ok("variables", "set", "targets", '{"eu": 3,   "us": [1, 2]}', "--json")
    bad = cli.invoke("variables", "set", "broken", "{eu: 3}", "--json")
    raw = cli.ok("variables", "get", "targets").stdout.strip()
    pretty = cli.ok("variables", "get", "targets", "--json").stdout
    cli.ok("variables", "set", "plain", "not json")
    not_json = cli.invoke("variables", "get", "plain", "--json")

    assert_user_error(bad, "--json", "'broken'", "not valid JSON")
    assert raw == '{"eu": 3, "us": [1, 2]}'
    assert pretty == json.dumps({"eu": 3, "us": [1, 2]}, indent=2) + "\n"
    assert_user_error(not_json, "variable 'plain' is not valid JSON")
    assert [v["key"] for v in cli.json("variables", "list")] == ["plain", "targets"]


def test_get_of_a_missing_key_is_a_clear_error_unless_a_default_is_given(cli: Cli) -> None:
    missing = cli.invoke("variables", "get", "nope")
    default = cli.ok("variables", "get", "nope", "--default", "fallback")

    assert_user_error(missing, "no variable 'nope'")
    assert default.stdout == "fallback\n"


def test_a_value_can_come_from_standard_input(cli: Cli) -> None:
    cli.ok("variables", "set", "api_token", "-", input=f"{SECRET}\n")

    assert cli.ok("variables", "get", "api_token").stdout.strip() == SECRET


def test_list_masks_the_values_of_sensitive_keys_in_every_format(cli: Cli) -> None:
    cli.ok("variables", "set", "db_password", SECRET)
    cli.ok("variables", "set", "service_token", f'{{"t": "{SECRET}"}}', "--json")
    cli.ok("variables", "set", "region", "eu-west-1")

    table = cli.ok("variables", "list").stdout
    listed = {v["key"]: v["value"] for v in cli.json("variables", "list")}
    as_yaml = {v["key"]: v["value"] for v in yaml.safe_load(cli.ok("variables", "list", "-o", "yaml").stdout)}

    assert SECRET not in table + json.dumps(listed) + json.dumps(as_yaml)
    assert listed == as_yaml == {"db_password": "***", "region": "eu-west-1", "service_token": "***"}
    assert table.splitlines()[0].split() == ["KEY", "VALUE", "DESCRIPTION", "UPDATED"]
    assert cli.ok("variables", "get", "db_password").stdout.strip() == SECRET


def test_the_variable_table_holds_no_plaintext_value(cli: Cli) -> None:
    cli.ok("variables", "set", "plain_key", SECRET)

    stored = " ".join(str(v) for row in cli.rows("variable") for v in row)
    assert "plain_key" in stored
    assert SECRET not in stored


def test_delete_removes_a_variable_and_a_missing_one_is_a_clear_error(cli: Cli) -> None:
    cli.ok("variables", "set", "threshold", "10")
    deleted = cli.ok("variables", "delete", "threshold")
    again = cli.invoke("variables", "delete", "threshold")

    assert deleted.stdout.strip() == "variable threshold deleted"
    assert cli.rows("variable") == []
    assert_user_error(again, "no variable 'threshold'")


def test_a_wrong_fernet_key_is_a_clear_error_for_get_and_list(cli: Cli) -> None:
    from hareflow.common.secrets.crypto import generate_key

    cli.ok("variables", "set", "threshold", "10")
    other = generate_key()

    assert_user_error(
        cli.invoke("variables", "get", "threshold", HAREFLOW_FERNET_KEY=other), "'threshold'", "decrypt"
    )
    assert_user_error(cli.invoke("variables", "list", HAREFLOW_FERNET_KEY=other), "'threshold'", "decrypt")


def test_an_import_with_one_bad_entry_writes_nothing_and_names_the_file_line_and_key(cli: Cli) -> None:
    path = cli.tmp / "vars.yaml"
    path.write_text("good: 1\nalso_good:\n  value: x\n  description: d\n'bad key!': 3\n")
    failed = cli.invoke("variables", "import", str(path))
    path.write_text("good: 1\nempty: null\n")
    null = cli.invoke("variables", "import", str(path))

    assert_user_error(failed, f"{path} line 5", "'bad key!'", "nothing was imported")
    assert_user_error(null, f"{path} line 2", "'empty'", "value is missing")
    assert cli.rows("variable") == []


def test_a_key_given_twice_in_an_import_file_is_an_error(cli: Cli) -> None:
    path = cli.tmp / "vars.json"
    path.write_text('{\n  "a": 1,\n  "b": 2,\n  "a": 3\n}\n')

    assert_user_error(cli.invoke("variables", "import", str(path)), str(path), "line 4", "'a' is given twice")
    assert cli.rows("variable") == []


def test_an_import_skips_existing_keys_unless_overwrite(cli: Cli) -> None:
    cli.ok("variables", "set", "threshold", "10")
    path = cli.tmp / "vars.json"
    path.write_text(json.dumps({"threshold": 20, "targets": {"eu": 3}}))

    first = cli.ok("variables", "import", str(path))
    kept = cli.ok("variables", "get", "threshold").stdout.strip()
    second = cli.ok("variables", "import", str(path), "--overwrite")

    assert first.stdout.strip() == f"imported variables from {path}: 1 added"
    assert "skipped 1 existing variable(s)" in first.stderr and "threshold" in first.stderr
    assert kept == "10"
    assert second.stdout.strip() == f"imported variables from {path}: 0 added, 2 replaced"
    assert cli.ok("variables", "get", "threshold").stdout.strip() == "20"
    assert json.loads(cli.ok("variables", "get", "targets").stdout) == {"eu": 3}


@pytest.mark.parametrize("name", ["vars.json", "vars.yml"])
def test_export_then_import_restores_values_and_descriptions(cli: Cli, name: str) -> None:
    cli.ok("variables", "set", "db_password", SECRET, "--description", "the warehouse")
    cli.ok("variables", "set", "targets", '{"eu": 3}', "--json")
    cli.ok("variables", "set", "multi", "line one\nline two")
    before = cli.json("variables", "list")
    path = cli.tmp / name

    cli.ok("variables", "export", str(path))
    for key in ("db_password", "targets", "multi"):
        cli.ok("variables", "delete", key)
    cli.ok("variables", "import", str(path))
    after = cli.json("variables", "list")

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert SECRET in path.read_text()
    strip = [{k: v[k] for k in ("key", "value", "description")} for v in before]
    assert [{k: v[k] for k in ("key", "value", "description")} for v in after] == strip
    assert cli.ok("variables", "get", "db_password").stdout.strip() == SECRET
    assert cli.ok("variables", "get", "multi").stdout == "line one\nline two\n"


def test_variable_changes_are_audited_with_the_os_user_and_never_the_value(cli: Cli) -> None:
    cli.ok("variables", "set", "db_password", SECRET)
    path = cli.tmp / "v.json"
    path.write_text(json.dumps({"other_secret": SECRET}))
    cli.ok("variables", "import", str(path))
    cli.ok("variables", "delete", "db_password")

    rows = cli.audit("variable_set") + cli.audit("variable_import") + cli.audit("variable_delete")

    assert [r.details for r in cli.audit("variable_set")] == [
        {"key": "db_password", "created": True, "origin": ORIGIN}
    ]
    assert cli.audit("variable_import")[0].details["added"] == ["other_secret"]
    assert cli.audit("variable_delete")[0].details == {"key": "db_password", "origin": ORIGIN}
    assert {r.username for r in rows} == {getpass.getuser()}
    assert SECRET not in " ".join(str(v) for row in cli.rows("audit_log") for v in row)
