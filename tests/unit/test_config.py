from pathlib import Path

import pytest
from hareflow.common.config import ConfigError, load_settings, mask_url


def test_defaults_give_the_embedded_setup(tmp_path: Path) -> None:
    s = load_settings(env={"HAREFLOW_HOME": str(tmp_path)})
    assert s.effective_executor == "local"
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'hareflow.db'}"


def test_environment_overrides_the_toml_file_which_overrides_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "hareflow.toml"
    cfg.write_text('[hareflow]\nworker_concurrency = 3\nqueue_type = "quorum"\n')
    s = load_settings(env={"HAREFLOW_CONFIG": str(cfg), "HAREFLOW_WORKER_CONCURRENCY": "7"})
    assert s.worker_concurrency == 7
    assert s.queue_type == "quorum"


def test_a_broker_url_selects_the_rabbitmq_executor() -> None:
    s = load_settings(env={"HAREFLOW_BROKER_URL": "amqp://guest:guest@127.0.0.1/"})
    assert s.effective_executor == "rabbitmq"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"HAREFLOW_WORKER_CONCURRENCY": "many"}, "HAREFLOW_WORKER_CONCURRENCY"),
        ({"HAREFLOW_QUEUE_TYPE": "stream"}, "queue_type"),
        ({"HAREFLOW_EXECUTOR": "rabbitmq"}, "broker_url"),
        ({"HAREFLOW_WORKER_CONCURRENCY": "0"}, "worker_concurrency"),
        ({"HAREFLOW_BROKER_PREFIX": "has space"}, "broker_prefix"),
        ({"HAREFLOW_RETENTION_DAYS": "-1"}, r"retention_days = -1.0: 0 \(keep everything\) or more"),
    ],
)
def test_bad_values_are_reported_with_their_key(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(env=env)


def test_an_unknown_key_in_the_file_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError, match=r"c\.toml: unknown setting 'no_such_setting'"):
        load_settings(env={"HAREFLOW_CONFIG": str(cfg)})


def test_secrets_are_masked_when_shown() -> None:
    s = load_settings(
        env={
            "HAREFLOW_BROKER_URL": "amqp://user:s3cret@127.0.0.1/",
            "HAREFLOW_DATABASE_URL": "postgresql://u:pw@127.0.0.1/db",
            "HAREFLOW_SECRET_KEY": "abc",
        }
    )
    shown = s.as_display_dict()
    assert "s3cret" not in str(shown) and "pw@" not in str(shown) and "abc" not in shown["secret_key"]
    assert mask_url("amqp://user:s3cret@h/") == "amqp://user:***@h/"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_unknown_hareflow_variables_are_found_with_the_closest_real_name() -> None:
    from hareflow.common.config.settings import unknown_variables

    env = {
        "HAREFLOW_BROKR_URL": "amqp://x/",
        "HAREFLOW_NOTHING_LIKE_IT": "1",
        "HAREFLOW_BROKER_URL": "amqp://y/",
        "HAREFLOW_CONFIG": "/etc/hareflow.toml",
        "HAREFLOW_TEST_AMQP_URL": "amqp://z/",
        "HAREFLOW_CONN_WAREHOUSE": "postgresql://etl@db/dwh",  # connections and variables, not settings
        "HAREFLOW_VAR_THRESHOLD": "10",
        "PATH": "/bin",
    }
    assert unknown_variables(env) == [
        ("HAREFLOW_BROKR_URL", "HAREFLOW_BROKER_URL"),
        ("HAREFLOW_NOTHING_LIKE_IT", None),
    ]


def test_the_cli_warns_about_a_misspelt_variable_on_stderr_and_still_runs() -> None:
    from click.testing import CliRunner

    from hareflow.cli import main

    result = CliRunner().invoke(
        main, ["config", "show", "-o", "json"], env={"HAREFLOW_WORKER_CONCURENCY": "8"}
    )
    assert result.exit_code == 0
    assert (
        "warning: HAREFLOW_WORKER_CONCURENCY is not a hareflow setting and is ignored "
        "(did you mean HAREFLOW_WORKER_CONCURRENCY?)" in result.stderr
    )
    assert '"worker_concurrency": "4"' in result.stdout


def test_the_dag_folder_is_the_configured_one_then_dags_here_then_home_dags_then_the_examples(
    tmp_path: Path,
) -> None:
    from hareflow.common.config.settings import bundled_examples_folder

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    s = load_settings(env={"HAREFLOW_HOME": str(home)})
    assert s.effective_dags_folder(cwd) == bundled_examples_folder()
    (home / "dags").mkdir(parents=True)
    assert s.effective_dags_folder(cwd) == home / "dags"
    (cwd / "dags").mkdir()
    assert s.effective_dags_folder(cwd) == cwd / "dags"
    configured = load_settings(env={"HAREFLOW_HOME": str(home), "HAREFLOW_DAGS_FOLDER": str(tmp_path / "x")})
    assert configured.effective_dags_folder(cwd) == tmp_path / "x"


def test_the_bundled_examples_are_found_in_a_checkout_and_in_an_installed_package(tmp_path: Path) -> None:
    from hareflow.common.config.settings import bundled_examples_folder

    checkout = tmp_path / "checkout"
    (checkout / "examples" / "dags").mkdir(parents=True)
    installed = tmp_path / "site-packages" / "hareflow"  # what `pip install .` lays out
    (installed / "example_dags").mkdir(parents=True)
    (installed / "common" / "config").mkdir(parents=True)
    assert bundled_examples_folder(checkout) == checkout / "examples" / "dags"
    assert bundled_examples_folder(installed) == installed / "example_dags"


def test_settings_exported_as_environment_load_back_the_same(tmp_path) -> None:
    settings = load_settings(
        env={},
        overrides={
            "home": str(tmp_path),
            "database_url": "postgresql+psycopg2://u:p@db/x",
            "fernet_key": "k1,k2",
            "dags_are_paused_at_creation": False,
            "lookup_timeout": 2.5,
            "secrets_backend_options": '{"files": {"directory": "/run/secrets"}}',
        },
    )
    exported = settings.as_environment()
    assert load_settings(env=exported) == settings
    assert "HAREFLOW_WORKER_CONCURRENCY" not in exported  # defaults are left to the child
