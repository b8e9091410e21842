"""Helpers every command group shares: the user-error exception, settings, the metastore
connection with clear errors, output (aligned tables for people, JSON for scripts), date and conf
parsing, and waking the scheduler.

Nothing here imports SQLAlchemy, a broker client or Flask at import time: each helper imports
what it needs when it is called, so ``hareflow --help`` stays fast and ``hareflow worker`` never
loads the web stack.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from hareflow.common.records import iso

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class UserError(click.ClickException):
    """A mistake the user can fix: one clear line, exit code 2, no traceback."""

    exit_code = 2


#: Exit code after Ctrl-C stopped a command that was watching something (the shell's convention).
INTERRUPTED = 130


# -- settings and logging ---------------------------------------------------------------------------


def get_settings(**overrides: Any) -> Any:
    """The effective settings (env over file over defaults), with command-line ``overrides``."""
    from hareflow.common.config import ConfigError, load_settings
    from hareflow.common.config.settings import unknown_variables

    try:
        settings = load_settings(overrides={k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    for name, close in unknown_variables():
        hint = f" (did you mean {close}?)" if close else ""
        click.echo(f"warning: {name} is not a hareflow setting and is ignored{hint}", err=True)
    return settings


def setup_logging(level: str) -> None:
    """Log to stderr at ``level`` (long-running services only; other commands stay quiet)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)


def stop_on_signals() -> tuple[threading.Event, threading.Event]:
    """First SIGTERM/SIGINT: graceful stop. Second: immediate."""
    stop, immediate = threading.Event(), threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            immediate.set()
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop, immediate


log_level_option = click.option(
    "--log-level",
    default=None,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level (default: the log_level setting, INFO).",
)


# -- the metastore ----------------------------------------------------------------------------------


def _masked(text: str, url: str) -> str:
    """``text`` with the URL's password hidden, in case a driver's message repeats it."""
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


def fail_unreachable(settings: Any, exc: BaseException, what: str = "database") -> NoReturn:
    """Raise the one-line error for a database or broker that cannot be reached (password masked)."""
    from hareflow.common.config import mask_url

    url = settings.effective_database_url if what == "database" else settings.broker_url
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    raise UserError(f"cannot reach the {what} at {mask_url(url)}: {_masked(first, url)}")


@contextmanager
def metastore(settings: Any, *, check_schema: bool = True) -> Iterator[Any]:
    """Yield a session factory for the configured metastore; turn connection failures and an
    unmigrated schema into one clear line (exit 2). The engine is disposed afterwards."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, NoSuchModuleError, OperationalError

    from hareflow.common.config import mask_url
    from hareflow.common.db import create_engine_for, make_session_factory

    url = settings.effective_database_url
    try:
        engine = create_engine_for(url)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UserError(f"database_url {mask_url(url)} is not usable: {exc}") from None
    try:
        if check_schema:
            _require_current_schema(engine, url)
        yield make_session_factory(engine)
    except (OperationalError, InterfaceError) as exc:
        fail_unreachable(settings, exc.orig if exc.orig is not None else exc)
    except DBAPIError as exc:
        first = (str(exc.orig or exc).strip().splitlines() or ["?"])[0]
        raise UserError(f"the database at {mask_url(url)} refused a query: {_masked(first, url)}") from None
    finally:
        engine.dispose()


def _require_current_schema(engine: Any, url: str) -> None:
    from hareflow.common.config import mask_url
    from hareflow.common.db.migrate import status

    st = status(engine)
    if not st.is_current:
        raise UserError(
            f"the metastore at {mask_url(url)} is at schema revision {st.current or 'none'}, "
            f"not {st.head}: run `hareflow db migrate`"
        )


@contextmanager
def user_mistakes() -> Iterator[None]:
    """Turn the shared layer's user-mistake exceptions into one clear line and exit code 2."""
    from hareflow.common.operations import OperationError
    from hareflow.common.runs import RunError

    mistakes: tuple[type[Exception], ...] = (OperationError, RunError)
    try:
        from hareflow.common.backfill import BackfillError

        mistakes += (BackfillError,)
    except ImportError:
        pass
    try:
        yield
    except mistakes as exc:
        raise UserError(str(exc)) from None


# -- waking the scheduler ---------------------------------------------------------------------------


def notify_scheduler(settings: Any, events: Sequence[Mapping[str, Any]]) -> None:
    """Wake schedulers at once over the events exchange after a change (they would notice within
    ``scheduler_idle_wait`` anyway, so a broker hiccup here is not an error). With the local
    executor the scheduler lives in the standalone process and polls: nothing to do."""
    if settings.effective_executor != "rabbitmq" or not events:
        return
    try:
        from hareflow.common.broker import make_executor
        from hareflow.common.messages import StateEvent

        executor = make_executor(settings, connection_name="hareflow-cli")
        executor.start(timeout=5)  # type: ignore[call-arg]
        try:
            executor.publish_events(
                [
                    StateEvent(
                        kind=e["kind"],
                        dag_id=e["dag_id"],
                        run_id=e.get("run_id"),
                        state=e["state"],
                        at=time.time(),
                    )
                    for e in events
                ]
            )
            time.sleep(0.05)  # events are transient and published without confirms: let it leave
        finally:
            executor.close()
    except Exception:  # noqa: BLE001 - best effort, see the docstring
        logging.getLogger(__name__).debug("could not wake the scheduler", exc_info=True)


# -- parsing ----------------------------------------------------------------------------------------


def parse_conf(conf: str | None, option: str = "--conf") -> dict[str, Any] | None:
    """A JSON object from the command line, or a UserError saying what is wrong with it."""
    if conf is None:
        return None
    from hareflow.common.runs import RunError, load_conf

    try:
        return load_conf(conf)
    except RunError as exc:  # "conf is not valid JSON: ..." -> "--conf is not valid JSON: ..."
        message = str(exc).removeprefix("conf ")
        hint = ", like '{\"key\": 1}'" if "JSON object" in message else ""
        raise UserError(f"{option} {message}{hint}") from None


def parse_date(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or date-time (UTC unless it has an offset), or a UserError naming the option."""
    if value is None:
        return None
    from hareflow.common.runs import parse_date as parse

    try:
        return parse(value.strip())
    except ValueError:
        raise UserError(
            f"{option} {value!r} is not a date: use ISO 8601, like 2026-01-31 or 2026-01-31T02:00:00+01:00"
        ) from None


# -- output -----------------------------------------------------------------------------------------


def output_option(f: F) -> F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table for people, json for scripts (keys documented in docs/cli.md).",
    )(f)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default))


def when(value: datetime | None) -> str:
    """A datetime for a table: UTC, to the second."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str | None = None
) -> None:
    """Aligned columns with a header row; ``empty`` is printed (to stderr) when there are no rows."""
    if not rows:
        if empty:
            click.echo(empty, err=True)
        return
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    click.echo(line([h.upper() for h in headers]))
    for row in cells:
        click.echo(line(row))


# -- completion -------------------------------------------------------------------------------------


def complete_dag_id(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of DAG ids from the metastore (nothing if it cannot be reached)."""
    try:
        from sqlalchemy import select

        from hareflow.common.config import load_settings
        from hareflow.common.db import Dag, create_engine_for

        engine = create_engine_for(load_settings().effective_database_url)
        try:
            with engine.connect() as conn:
                ids = conn.execute(
                    select(Dag.dag_id).where(Dag.is_active.is_(True), Dag.dag_id.startswith(incomplete))
                ).scalars()
                return [click.shell_completion.CompletionItem(i) for i in ids]
        finally:
            engine.dispose()
    except Exception:  # noqa: BLE001 - completion must never print a traceback into the shell
        return []


def cli_user(settings: Any = None) -> str:
    """Who runs this command, for the audit log (``hareflow.common.audit.cli_user``)."""
    from hareflow.common.audit import cli_user as who

    return who(settings)
