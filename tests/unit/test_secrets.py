"""Connections and Variables: URI and JSON forms, Fernet at rest, the lookup chain, masking."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hareflow.common.config import ConfigError, load_settings
from hareflow.common.secrets import (
    AccessDenied,
    Connection,
    ConnectionNotFound,
    DecryptFailed,
    KeyMissing,
    SecretsError,
    Variable,
    VariableNotFound,
    connection_from_text,
    store,
)
from hareflow.common.secrets.backends import (
    EnvironmentBackend,
    FilesBackend,
    SecretsChain,
    chain_from_settings,
)
from hareflow.common.secrets.client import ChainResolver, RemoteResolver, set_resolver
from hareflow.common.secrets.crypto import Cipher, configured_keys, ensure_key_file, generate_key
from hareflow.common.secrets.masking import (
    Masker,
    connection_secrets,
    is_sensitive,
    redact_mapping,
    variable_secrets,
)


@pytest.fixture(autouse=True)
def _no_resolver():
    previous = set_resolver(None)
    yield
    set_resolver(previous)


# -- forms -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://us%40er:p%3Aw%2F@db.example:5432/sales?sslmode=require",
        "mysql://root@127.0.0.1:3306/test",
        "http://api.example:8080",
        "sqlite:////var/data/app.db",
        "smtp://mailer:pw@mail.example:587?starttls=true",
    ],
)
def test_a_uri_reads_back_to_the_same_connection(uri: str) -> None:
    conn = Connection.from_uri("c", uri)
    assert Connection.from_uri("c", conn.get_uri()) == conn


def test_uri_fields_are_decoded_and_the_query_is_the_extra() -> None:
    conn = Connection.from_uri("wh", "postgresql://us%40er:p%3Aw@db:5432/sales?sslmode=require")
    assert (conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema) == (
        "postgresql",
        "db",
        5432,
        "us@er",
        "p:w",
        "sales",
    )
    assert conn.extra == {"sslmode": "require"}
    assert Connection.from_uri("s", "sqlite:////var/data/app.db").host == "/var/data/app.db"
    nested = Connection("h", "http", host="api", extra={"headers": {"X": "1"}, "retries": 3})
    assert Connection.from_uri("h", nested.get_uri()).extra == {"headers": {"X": "1"}, "retries": 3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a uri", "is not a URI"),
        ("postgresql://u:pw@host:notaport/db", "bad URI"),
        ('{"host": "x"}', "conn_type is required"),
        ('{"conn_type": "http", "hots": "x"}', "unknown field(s) hots"),
        ('{"conn_type": "http", "port": 70000}', "is not a TCP port"),
        ('{"conn_type": "http", "extra": "{bad"}', "extra is not valid JSON"),
        ("{broken", "not valid JSON"),
    ],
)
def test_a_malformed_connection_is_a_clear_error_that_never_shows_the_password(
    text: str, message: str
) -> None:
    with pytest.raises(SecretsError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        connection_from_text("bad", text)
    assert "pw" not in str(info.value).replace("pw@", "") or "***" in str(info.value)


def test_a_uri_error_masks_the_password() -> None:
    with pytest.raises(SecretsError) as info:
        Connection.from_uri("c", "postgresql://u:topsecret@host:99999/db")
    assert "topsecret" not in str(info.value) and "***" in str(info.value)


def test_ids_are_checked() -> None:
    with pytest.raises(SecretsError, match="connection id 'a b'"):
        Connection("a b", "http")


def test_the_browser_safe_form_has_no_password_and_masks_sensitive_extra() -> None:
    conn = Connection("c", "http", password="pw1234", extra={"api_key": "k-123", "timeout": 5})
    safe = conn.to_dict(secrets=False)
    assert "password" not in safe and safe["password_set"] is True
    assert safe["extra"] == {"api_key": "***", "timeout": 5}
    assert "pw1234" not in repr(conn)
    full = conn.to_dict()
    assert Connection.from_dict("c", full) == conn


def test_from_dict_accepts_a_uri_with_overrides_and_an_allow_list() -> None:
    conn = Connection.from_dict(
        "c", {"uri": "http://api:80", "description": "the api", "allowed_dag_ids": "a, b", "port": "81"}
    )
    assert (conn.host, conn.port, conn.description, conn.allowed_dag_ids) == (
        "api",
        81,
        "the api",
        ("a", "b"),
    )
    assert conn.may_be_read_by("a") and not conn.may_be_read_by("c")


# -- encryption --------------------------------------------------------------------------------


def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    old, new = generate_key(), generate_key()
    token = Cipher([old]).encrypt("secret")
    both = Cipher([new, old])
    assert both.decrypt(token, "x") == "secret"
    rotated = both.rotate(token, "x")
    assert Cipher([new]).decrypt(rotated, "x") == "secret"
    with pytest.raises(DecryptFailed, match="connection 'c' password does not decrypt"):
        Cipher([new]).decrypt(token, "connection 'c' password")


def test_a_missing_or_malformed_key_is_a_clear_error() -> None:
    with pytest.raises(KeyMissing, match="HAREFLOW_FERNET_KEY"):
        Cipher([])
    with pytest.raises(KeyMissing, match="key 2 of 2 is not a Fernet key"):
        Cipher([generate_key(), "short"])


def test_standalone_writes_a_private_key_file_that_settings_find(tmp_path: Path) -> None:
    path = ensure_key_file(tmp_path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert ensure_key_file(tmp_path).read_text() == path.read_text()  # never replaced
    settings = load_settings(env={"HAREFLOW_HOME": str(tmp_path)})
    assert configured_keys(settings) == [path.read_text().strip()]
    assert configured_keys(settings.replace(fernet_key="a, b")) == ["a", "b"]
    assert settings.replace(fernet_key="x").as_display_dict()["fernet_key"] == "***"


def test_the_store_keeps_no_plaintext_and_rotation_reencrypts(tmp_path: Path) -> None:
    from hareflow.common.db import create_engine_for, make_session_factory
    from hareflow.common.db.migrate import migrate
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = create_engine_for(url)
    migrate(engine)
    sessions = make_session_factory(engine)
    old, new = generate_key(), generate_key()
    conn = Connection(
        "wh", "postgresql", host="db", login="me", password="pw-plain-1", extra={"token": "t-plain-2"}
    )
    with sessions() as s, s.begin():
        assert store.put_connection(s, conn, Cipher([old])) is True
        assert store.put_connection(s, conn, Cipher([old])) is False
        store.put_variable(s, "cfg", {"a": 1}, Cipher([old]), "a config")
    with engine.connect() as c:
        raw = json.dumps([list(r) for r in c.execute(text("SELECT * FROM connection"))], default=str)
        raw += json.dumps([list(r) for r in c.execute(text("SELECT * FROM variable"))], default=str)
    assert "pw-plain-1" not in raw and "t-plain-2" not in raw and '"a": 1' not in raw
    with sessions() as s, s.begin():
        assert store.rotate_keys(s, Cipher([new, old])) == (1, 1)
    with sessions() as s:
        assert store.get_connection(s, "wh", Cipher([new])) == conn
        assert json.loads(store.get_variable(s, "cfg", Cipher([new])) or "") == {"a": 1}
        summary = store.list_connections(s)[0]
        assert summary.password_set and summary.conn_id == "wh"
        with pytest.raises(DecryptFailed):
            store.get_connection(s, "wh", Cipher([old]))
    with sessions() as s, s.begin():
        assert store.delete_connection(s, "wh") and not store.delete_connection(s, "wh")


# -- the chain -----------------------------------------------------------------------------------


def test_the_environment_comes_first_then_files_backends(tmp_path: Path) -> None:
    (tmp_path / "conn_shared").write_text("http://from-files:1\n")
    (tmp_path / "conn_files_only").write_text('{"conn_type": "http", "host": "json-file"}')
    (tmp_path / "var_threshold").write_text("7\n")
    env = {"HAREFLOW_CONN_SHARED": "http://from-env:2", "HAREFLOW_VAR_MY_KEY": "env-value"}
    chain = SecretsChain([EnvironmentBackend(env), FilesBackend(str(tmp_path))])
    assert chain.connection("shared").host == "from-env"
    assert chain.connection("files_only").host == "json-file"
    assert chain.variable("threshold") == "7"
    assert chain.variable("my-key") == "env-value"  # "-" and "." read as "_"
    assert chain.variable("absent") is None
    with pytest.raises(ConnectionNotFound, match="HAREFLOW_CONN_NOWHERE"):
        chain.connection("nowhere")


def test_allow_lists_are_enforced_by_the_chain() -> None:
    env = {"HAREFLOW_CONN_HR": '{"conn_type": "http", "allowed_dag_ids": ["payroll"]}'}
    chain = SecretsChain([EnvironmentBackend(env)])
    assert chain.connection("hr", dag_id="payroll").conn_type == "http"
    with pytest.raises(AccessDenied, match="DAG 'etl' may not read connection 'hr'"):
        chain.connection("hr", dag_id="etl")


def test_configured_backends_come_from_settings_and_bad_ones_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "conn_x").write_text("http://files:1")
    settings = load_settings(
        env={
            "HAREFLOW_HOME": str(tmp_path),
            "HAREFLOW_SECRETS_BACKENDS": "files",
            "HAREFLOW_SECRETS_BACKEND_OPTIONS": json.dumps({"files": {"directory": str(tmp_path)}}),
        }
    )
    chain = chain_from_settings(settings, env={})
    assert [b.name for b in chain.backends] == ["environment", "files"]
    assert chain.connection("x").host == "files"
    with pytest.raises(ConfigError, match="no backend named 'vault'"):
        chain_from_settings(settings.replace(secrets_backends="vault"), env={})
    with pytest.raises(ConfigError, match="is not a directory"):
        chain_from_settings(
            settings.replace(secrets_backend_options='{"files": {"directory": "/nope"}}'), env={}
        )
    with pytest.raises(ConfigError, match="not valid JSON"):
        chain_from_settings(settings.replace(secrets_backend_options="{"), env={})


def test_task_side_lookups_are_cached_and_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str]] = []

    def ask(kind: str, name: str) -> dict:
        asked.append((kind, name))
        if kind == "connection":
            return {"ok": True, "value": {"conn_type": "http", "host": "remote", "password": "remote-pw"}}
        return {"ok": True, "value": None if name == "missing" else '{"n": 1}'}

    mask = Masker()
    set_resolver(RemoteResolver(ask, EnvironmentBackend({"HAREFLOW_CONN_LOCAL": "http://local:1"}), mask))
    assert Connection.get("api").host == "remote"
    assert Connection.get("api").host == "remote"
    assert Connection.get("local").host == "local"  # the worker's own environment first
    assert Variable.get("cfg", deserialize_json=True) == {"n": 1}
    assert Variable.get("missing", default=None) is None
    assert Variable.get("missing", "d") == "d"
    with pytest.raises(VariableNotFound, match="variable 'missing' is not defined"):
        Variable.get("missing")
    assert asked == [("connection", "api"), ("variable", "cfg"), ("variable", "missing")]
    assert mask.redact("pw=remote-pw") == "pw=***"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ({"ok": False, "code": "denied", "error": "no"}, AccessDenied),
        ({"ok": False, "code": "not_found", "error": "no"}, ConnectionNotFound),
        ({"ok": False, "code": "error", "error": "no"}, SecretsError),
    ],
)
def test_remote_refusals_raise_the_matching_error(reply: dict, error: type) -> None:
    set_resolver(RemoteResolver(lambda kind, name: reply, EnvironmentBackend({}), Masker()))
    with pytest.raises(error):
        Connection.get("x")


def test_a_chain_resolver_applies_the_allow_list_of_its_dag() -> None:
    env = {"HAREFLOW_CONN_HR": '{"conn_type": "http", "allowed_dag_ids": ["payroll"]}'}
    set_resolver(ChainResolver(SecretsChain([EnvironmentBackend(env)]), dag_id="etl", mask=Masker()))
    with pytest.raises(AccessDenied):
        Connection.get("hr")


def test_the_default_resolver_reads_the_environment_without_a_metastore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("HAREFLOW_CONN_ENV_ONLY", "http://env-only:1")
    assert Connection.get("env_only").host == "env-only"
    with pytest.raises(ConnectionNotFound):
        Connection.get("nowhere")
    assert not (tmp_path / "hareflow.db").exists()  # looking did not create a metastore
    assert os.environ["HAREFLOW_HOME"] == str(tmp_path)


# -- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("password", True),
        ("DB_PASSWORD", True),
        ("X-Api-Key", True),
        ("private_key", True),
        ("client_secret", True),
        ("auth_token", True),
        ("host", False),
        ("threshold", False),
    ],
)
def test_sensitive_names(key: str, sensitive: bool) -> None:
    assert is_sensitive(key) is sensitive


def test_every_form_of_a_secret_is_masked_and_short_values_are_not() -> None:
    mask = Masker()
    conn = Connection(
        "c", "http", password='p@ss "w0rd"', extra={"headers": {"Authorization": "Bearer abc"}, "x": "y"}
    )
    mask.add(connection_secrets(conn))
    mask.add(variable_secrets("api_token", '{"inner": "deep-secret"}'))
    mask.add(variable_secrets("threshold", "42"))  # not sensitive: not masked
    mask.add(["ab"])  # too short to mask
    text = 'p@ss "w0rd" / p%40ss%20%22w0rd%22 / p@ss \\"w0rd\\" / Bearer abc / deep-secret / 42 / ab'
    assert mask.redact(text) == "*** / *** / *** / *** / *** / 42 / ab"
    assert redact_mapping({"password": "x", "nested": {"token": "y"}, "ok": [1]}) == {
        "password": "***",
        "nested": {"token": "***"},
        "ok": [1],
    }
