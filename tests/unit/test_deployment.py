"""The container deployment, checked without a Docker engine: docker-compose.yml and the Dockerfile
are parsed, and everything they ask of hareflow is checked against hareflow itself (commands
against the CLI, environment variables against the settings)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from hareflow.common.config import ConfigError, Settings, load_settings

from hareflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
#: What `.env` must provide (the file refuses to start without them), as a user's .env would.
REQUIRED = {"HAREFLOW_ADMIN_PASSWORD": "a-long-admin-password", "HAREFLOW_SECRET_KEY": "k" * 64}
HAREFLOW_SERVICES = ("init", "scheduler", "web", "worker")
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ${NAME}, ${NAME:-default}, ${NAME:?error}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg
        raise KeyError(f"{name}: {arg or 'not set'}")

    return _VARIABLE.sub(one, value)


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()), env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(REQUIRED)


def resolve(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``hareflow ARGS`` as the CLI would, without running it: (command path, parameters).
    An unknown command or option raises click.UsageError."""
    ctx = click.Context(main, info_name="hareflow")
    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = click.Context(sub, info_name=name, parent=ctx)
        command = sub
    params = command.make_context(ctx.info_name, rest, parent=ctx.parent).params
    return ctx.command_path, params


def test_the_stack_has_every_service_and_refuses_to_start_without_its_secrets() -> None:
    compose = load_compose(REQUIRED)
    assert set(compose["services"]) >= {"rabbitmq", "postgres", *HAREFLOW_SERVICES}
    for missing in REQUIRED:
        with pytest.raises(KeyError, match=missing):
            load_compose({k: v for k, v in REQUIRED.items() if k != missing})


@pytest.mark.parametrize("service", HAREFLOW_SERVICES)
def test_every_hareflow_service_runs_a_real_hareflow_command(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    assert spec["image"].startswith("hareflow:") and spec["build"] == "."
    path, _ = resolve(spec["command"])
    expected = {"init": "hareflow db init", "scheduler": "hareflow scheduler", "web": "hareflow web"}
    assert path == expected.get(service, "hareflow worker")


@pytest.mark.parametrize("service", HAREFLOW_SERVICES)
def test_every_environment_variable_is_a_real_setting_with_a_valid_value(
    compose: dict[str, Any], service: str
) -> None:
    env = compose["services"][service]["environment"]
    known = {f"HAREFLOW_{name.upper()}" for name in Settings.__dataclass_fields__}
    unknown = sorted(set(env) - known)
    assert not unknown, f"{service}: not configuration keys: {unknown}"
    try:
        load_settings({k: str(v) for k, v in env.items()})
    except ConfigError as exc:
        pytest.fail(f"{service}: {exc}")


def test_defaults_without_a_dot_env_give_a_working_configuration() -> None:
    compose = load_compose(REQUIRED)
    scheduler = load_settings({k: str(v) for k, v in compose["services"]["scheduler"]["environment"].items()})
    worker = load_settings({k: str(v) for k, v in compose["services"]["worker"]["environment"].items()})
    assert scheduler.effective_executor == worker.effective_executor == "rabbitmq"
    assert scheduler.broker_url == worker.broker_url
    assert (
        scheduler.database_url.startswith("postgresql+psycopg2://")
        and "@postgres:5432/" in scheduler.database_url
    )
    assert "@rabbitmq:5672/" in worker.broker_url
    assert worker.database_url == ""  # workers never get database credentials


@pytest.mark.parametrize("service", ["rabbitmq", "postgres", "scheduler", "web", "worker"])
def test_long_running_services_have_healthchecks_that_are_real_commands(
    compose: dict[str, Any], service: str
) -> None:
    check = compose["services"][service]["healthcheck"]
    test = check["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    if service in HAREFLOW_SERVICES:
        assert test[:2] == ["CMD", "hareflow"]
        path, params = resolve(test[2:])
        assert path == "hareflow health" and params["role"] == service


def test_services_wait_for_what_they_need_to_be_healthy_or_done(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        for dependency, condition in (spec.get("depends_on") or {}).items():
            assert dependency in services
            wanted = condition["condition"]
            if wanted == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}'s healthcheck"
            else:
                assert wanted == "service_completed_successfully" and dependency == "init"
    assert services["init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("scheduler", "web"):
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    assert services["init"]["restart"] == "no"


def test_workers_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    for pinned in ("container_name", "hostname", "ports"):
        assert pinned not in worker, f"worker sets {pinned}: --scale worker=N would clash"
    assert worker.get("deploy", {}).get("replicas", 1) >= 1
    assert worker["stop_grace_period"]  # time to finish running tasks on SIGTERM


def test_dag_files_are_mounted_where_scheduler_and_workers_look(compose: dict[str, Any]) -> None:
    for name in ("scheduler", "worker"):
        spec = compose["services"][name]
        folder = spec["environment"]["HAREFLOW_DAGS_FOLDER"]
        mounts = {v.split(":")[1]: v for v in spec["volumes"]}
        assert folder in mounts and mounts[folder].endswith(":ro")
        source = mounts[folder].split(":")[0]
        assert (ROOT / source).is_dir()


def test_the_web_port_is_published_and_the_others_are_not(compose: dict[str, Any]) -> None:
    services = compose["services"]
    _, params = resolve(services["web"]["command"])
    assert params["host"] == "0.0.0.0"
    assert [p.rsplit(":", 1)[1] for p in services["web"]["ports"]] == [str(params["port"])]
    for name in ("init", "scheduler", "worker", "postgres"):
        assert "ports" not in services[name]


def test_brokers_and_databases_keep_their_data_in_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert re.fullmatch(r"rabbitmq:4\.\d+-management", services["rabbitmq"]["image"])
    assert "rabbitmq-data:/var/lib/rabbitmq" in services["rabbitmq"]["volumes"]
    assert services["rabbitmq"]["hostname"]  # RabbitMQ's data directory is named after the host
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert set(compose["volumes"]) == {"rabbitmq-data", "postgres-data"}


def test_the_image_installs_every_package_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert stages and all(re.fullmatch(r"python:3\.1[1-9]-slim", s) for s in stages)
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, re.MULTILINE))
    for source in copied:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tops = {p.split(".")[0] for p in pyproject["tool"]["setuptools"]["packages"]}
    tops |= {d.split("/")[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values()}
    assert tops <= copied, f"not copied into the image: {sorted(tops - copied)}"
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["hareflow"\]', dockerfile, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not tops & set(ignored)


def test_the_package_carries_every_template_static_file_and_migration() -> None:
    """What `pip install .` (and so the image) installs beside the code: every file the web serves
    or renders, the migration template and the example DAGs."""
    from fnmatch import fnmatch

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    packages = set(pyproject["tool"]["setuptools"]["packages"])
    for package, folder in (("hareflow.web", "web"), ("hareflow.common", "common")):
        assert pyproject["tool"]["setuptools"]["package-dir"][package] == folder
        patterns = package_data[package]
        for path in (ROOT / folder).rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(ROOT / folder).as_posix()
            assert any(fnmatch(relative, p) for p in patterns), f"{folder}/{relative} is not installed"
            dotted = ".".join((package, *path.relative_to(ROOT / folder).parent.parts))
            assert dotted == package or dotted in packages, f"{dotted} is not listed in packages"
