"""The settings object.

Precedence: environment variables ``HAREFLOW_<KEY>`` over the TOML file named by ``HAREFLOW_CONFIG``
(a flat table, or a ``[hareflow]`` table) over the defaults below. Nothing here reads the environment
at import time: call :func:`load_settings` at the edge (the CLI, a test fixture) and pass the result.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV_PREFIX = "HAREFLOW_"


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the key and the source."""


@dataclass(frozen=True)
class Settings:
    """Every knob hareflow has. Field docs are shown by ``hareflow config show``."""

    home: Path = field(default_factory=lambda: Path.home() / "hareflow")
    database_url: str = ""  # empty: sqlite:///<home>/hareflow.db (WAL)
    broker_url: str = ""  # empty: the embedded local executor, no broker
    executor: str = "auto"  # auto | local | rabbitmq
    dags_folder: Path | None = None  # None: ./dags, else <home>/dags if they exist, else the bundled examples
    dags_are_paused_at_creation: bool = True  # a DAG seen for the first time starts paused
    # Broker topology
    broker_prefix: str = "hareflow"  # names: <prefix>.tasks, <prefix>.q.<queue>, <prefix>.results ...
    queue_type: str = "classic"  # classic | quorum
    default_queue: str = "default"
    max_deliveries: int = 5  # deliveries of one task message before it is dead-lettered
    publish_confirm_timeout: float = 30.0
    # Scheduler
    scheduler_idle_wait: float = 1.0  # longest sleep when nothing wakes the scheduler
    queued_timeout: float = 300.0  # re-publish a queued task never confirmed by the broker after this long
    worker_timeout: float = 60.0  # a worker silent this long is lost; its tasks follow retry policy
    worker_retention_days: float = 7.0  # workers stopped or lost this long are deleted (0: kept)
    # Finished runs (and the other history, see `hareflow db clean`) older than this many days
    # are deleted by the scheduler, hourly, in short batches (0: everything is kept).
    retention_days: float = 0.0
    dag_dir_list_interval: float = 2.0  # how often DAG files are checked for changes
    dag_file_processor_timeout: float = 30.0
    dag_file_processor_parallelism: int = 2
    max_result_bytes: int = 1_048_576  # cap on one task's JSON return value
    max_map_length: int = 1024  # most task instances one mapped task may expand to
    # Smallest poke_interval of a reschedule-mode sensor (read from the environment when DAG files
    # are parsed: set it where the scheduler and the workers run).
    sensor_min_reschedule_interval: float = 1.0
    run_results_consumer: bool = True  # the scheduler runs the results consumer in-process
    # Results consumer
    results_batch_size: int = 500
    results_prefetch: int = 2000
    # Event triggers (BrokerTrigger consumers in the scheduler)
    event_batch_size: int = 500  # events turned into runs per transaction
    event_prefetch: int = 1000  # unacked event messages one scheduler holds per trigger queue
    # Worker
    hostname: str = ""  # empty: the machine's hostname (recorded on every task instance)
    worker_concurrency: int = 4
    worker_queues: str = "default"
    worker_prefetch_multiplier: int = 2  # messages held per slot: the next task waits ready
    heartbeat_interval: float = 5.0
    log_chunk_interval: float = 0.25  # seconds between live log chunks
    running_report_delay: float = 0.1  # report "running" once a task has run this long
    long_task_ack_after: float = 1200.0  # ack a still-running task after this long (consumer_timeout)
    # A task past its execution_timeout is interrupted in its own process, which runs its failure or
    # retry callback; the worker kills its process group this long after the timeout if it is still there.
    task_timeout_grace: float = 30.0
    # Web
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    # Threads of the web server's one process. Every open page holds one with its WebSocket, and
    # each request in flight another: size it above the number of pages open at once.
    web_threads: int = 256
    # Proxies in front of the web server whose X-Forwarded-For/-Proto to trust (0: none; a client
    # could otherwise claim any address, and the login throttle keys on it).
    web_proxy_count: int = 0
    api_token_expiry_days: int = 90  # a new API token's lifetime (0: tokens never expire)
    web_session_hours: int = 12  # a browser session's lifetime from login
    secret_key: str = ""
    admin_username: str = "admin"  # `hareflow db init` creates this admin user once ...
    admin_password: str = ""  # ... with this password (empty: no user is created)
    log_level: str = "INFO"
    # Who the CLI records in the audit log; empty: the OS user running it.
    audit_user: str = ""
    # Integrations (docs/integrations.md)
    # Fernet keys that encrypt connections and variables at rest, comma-separated: the first
    # encrypts, all decrypt (rotation). Empty: <home>/fernet.key if it exists.
    fernet_key: str = ""
    # Secrets backends asked after the environment and before the metastore, in order, by the
    # names they register under the hareflow.secrets entry point (built in: files).
    secrets_backends: str = ""
    # JSON object of keyword arguments per backend name: {"files": {"directory": "/run/secrets"}}.
    secrets_backend_options: str = ""
    lookup_timeout: float = 10.0  # a task's connection/variable lookup fails after this long
    base_url: str = ""  # the web UI's address as users reach it, for links in notifications
    # Metrics (Prometheus; docs/metrics.md)
    metrics_port: int = 0  # scheduler, results and worker export /metrics here; 0: no exporter
    metrics_host: str = "127.0.0.1"  # the exporter's address; 0.0.0.0 to be scraped from other hosts
    metrics_refresh_interval: float = 15.0  # how often the scheduler recounts task states and queues

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'hareflow.db'}"

    @property
    def effective_executor(self) -> str:
        if self.executor != "auto":
            return self.executor
        return "rabbitmq" if self.broker_url else "local"

    def effective_dags_folder(self, cwd: Path | None = None) -> Path:
        """The configured folder, else ``./dags``, else ``<home>/dags`` (where ``hareflow standalone``
        copies the examples on its first start), whichever exists first, else the bundled examples.
        Every command applies this one rule, so they all agree on the same ``home``."""
        if self.dags_folder is not None:
            return self.dags_folder
        for candidate in ((cwd or Path.cwd()) / "dags", self.home_dags_folder):
            if candidate.is_dir():
                return candidate
        return bundled_examples_folder()

    @property
    def home_dags_folder(self) -> Path:
        return self.home / "dags"

    def replace(self, **changes: typing.Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def as_environment(self) -> dict[str, str]:
        """The settings that differ from the defaults as ``HAREFLOW_*`` variables: a child process
        given them (over the parent's environment) loads these same settings."""
        defaults = Settings()
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != getattr(defaults, f.name) and value is not None:
                out[ENV_PREFIX + f.name.upper()] = (
                    str(value).lower() if isinstance(value, bool) else str(value)
                )
        return out

    def as_display_dict(self) -> dict[str, str]:
        """Effective values as strings, secrets masked, for ``hareflow config show``."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("database_url", "broker_url"):
                value = mask_url(str(value)) if value else value
            if f.name in ("secret_key", "admin_password", "fernet_key") and value:
                value = "***"
            out[f.name] = "" if value is None else str(value)
        out["database_url (effective)"] = mask_url(self.effective_database_url)
        out["executor (effective)"] = self.effective_executor
        out["dags_folder (effective)"] = str(self.effective_dags_folder())
        return out


_VALID_CHOICES = {
    "executor": ("auto", "local", "rabbitmq"),
    "queue_type": ("classic", "quorum"),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def bundled_examples_folder(package_root: Path | None = None) -> Path:
    """The example DAGs: ``examples/dags`` when run from a checkout (``package_root`` is the
    repository), else ``hareflow/example_dags`` inside the installed package (``package_root`` is
    the installed ``hareflow`` folder, where this module is ``common/config/settings.py``)."""
    here = package_root or Path(__file__).resolve().parents[2]
    for candidate in (here / "examples" / "dags", here / "example_dags"):
        if candidate.is_dir():
            return candidate
    return here / "example_dags"


def mask_url(url: str) -> str:
    """Hide the password in a URL: ``amqp://guest:***@host/``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _convert(key: str, raw: object, annotation: str, source: str) -> object:
    if raw is None:
        return None
    try:
        if annotation in ("int",):
            return int(raw)  # type: ignore[arg-type]
        if annotation == "float":
            return float(raw)  # type: ignore[arg-type]
        if annotation == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if annotation.startswith("Path"):
            text = str(raw)
            return Path(text).expanduser() if text else None
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {key} = {raw!r} is not a valid {annotation}: {exc}") from None


def load_settings(
    env: Mapping[str, str] | None = None, *, overrides: Mapping[str, object] | None = None
) -> Settings:
    """Build the settings from ``env`` (default: ``os.environ``), its TOML file and ``overrides``."""
    env = os.environ if env is None else env
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, object] = {}

    config_path = env.get(ENV_PREFIX + "CONFIG")
    if config_path:
        path = Path(config_path).expanduser()
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"HAREFLOW_CONFIG: file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        table = data.get("hareflow", data)
        for key, raw in table.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _convert(key, raw, str(known[key].type), str(path))

    for key, f in known.items():
        env_key = ENV_PREFIX + key.upper()
        if env_key in env:
            values[key] = _convert(key, env[env_key], str(f.type), env_key)

    for key, raw in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        if raw is not None:
            values[key] = _convert(key, raw, str(known[key].type), "option")

    settings = Settings(**values)  # type: ignore[arg-type]
    _validate(settings)
    return settings


#: HAREFLOW_* variables that are not settings but are read on purpose: the file name, and the test
#: suite's service addresses and switches.
_NOT_SETTINGS = (
    "HAREFLOW_CONFIG",
    "HAREFLOW_TEST_",
    "HAREFLOW_REQUIRE_SERVICES",
    "HAREFLOW_SCREENSHOTS",
    "HAREFLOW_CONN_",  # connections and variables from the environment (common.secrets.backends)
    "HAREFLOW_VAR_",
)


def unknown_variables(env: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``HAREFLOW_*`` variables in ``env`` that no setting reads (a typo would otherwise be ignored
    without a word), each with the closest real name when one is close."""
    import difflib

    env = os.environ if env is None else env
    keys = [f.name.upper() for f in fields(Settings)]
    found: list[tuple[str, str | None]] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name.startswith(_NOT_SETTINGS):
            continue
        key = name[len(ENV_PREFIX) :]
        if key in keys:
            continue
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
        found.append((name, ENV_PREFIX + close[0] if close else None))
    return found


def _validate(settings: Settings) -> None:
    for key, choices in _VALID_CHOICES.items():
        value = getattr(settings, key)
        if value not in choices:
            raise ConfigError(f"{key} = {value!r}: expected one of {', '.join(choices)}")
    if not _NAME_RE.match(settings.broker_prefix):
        raise ConfigError(f"broker_prefix = {settings.broker_prefix!r}: use letters, digits, _ . -")
    if settings.effective_executor == "rabbitmq" and not settings.broker_url:
        raise ConfigError("executor = 'rabbitmq' needs broker_url (HAREFLOW_BROKER_URL)")
    for key in (
        "worker_concurrency",
        "worker_prefetch_multiplier",
        "max_deliveries",
        "results_batch_size",
        "event_batch_size",
        "event_prefetch",
        "max_result_bytes",
        "max_map_length",
        "web_threads",
    ):
        if getattr(settings, key) < 1:
            raise ConfigError(f"{key} = {getattr(settings, key)!r}: must be at least 1")
    if not settings.retention_days >= 0:
        raise ConfigError(f"retention_days = {settings.retention_days!r}: 0 (keep everything) or more")
    if settings.api_token_expiry_days < 0:
        raise ConfigError(f"api_token_expiry_days = {settings.api_token_expiry_days!r}: 0 (never) or more")
    if settings.web_session_hours < 1:
        raise ConfigError(f"web_session_hours = {settings.web_session_hours!r}: must be at least 1")
    if settings.web_proxy_count < 0:
        raise ConfigError(f"web_proxy_count = {settings.web_proxy_count!r}: 0 (no proxy) or more")
    if settings.lookup_timeout <= 0:
        raise ConfigError(f"lookup_timeout = {settings.lookup_timeout!r}: must be more than 0 seconds")
    if not 0 <= settings.metrics_port <= 65535:
        raise ConfigError(f"metrics_port = {settings.metrics_port!r}: a TCP port, or 0 for no exporter")
