"""What ``hareflow standalone`` does for a new user: its own copy of the example DAGs, the example
DAGs active, the first admin account, and one quiet first screen that says where everything is.

The DAG folder rule lives in ``Settings.effective_dags_folder`` (the configured folder, else
``./dags``, else ``$HAREFLOW_HOME/dags``, else the bundled examples), so every command agrees with
standalone. Standalone adds one step before it: on its first start, when no folder is configured
and neither ``./dags`` nor ``$HAREFLOW_HOME/dags`` exists, it copies the bundled examples into
``$HAREFLOW_HOME/dags``. From then on that folder is the user's: it is never written again, so an
edit stays and a deleted file stays deleted, and re-installing the package cannot move it.

New DAGs start paused (``dags_are_paused_at_creation``). The copied examples are meant to show
runs at once, so the first start unpauses the DAGs of the files it copied, once: the files waiting
for that are listed in ``$HAREFLOW_HOME/examples_to_unpause.json`` until it is done (a start that
fails before the scheduler parsed them finishes it the next time). A DAG someone already paused or
unpaused by hand is left as it is.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from hareflow.cli.common import UserError

PENDING_FILE = "examples_to_unpause.json"
FIRST_ADMIN = "admin"


@dataclass(frozen=True)
class DagsFolder:
    """The folder standalone reads DAGs from, and whether this start filled it with the examples."""

    path: Path
    copied_examples: bool = False


def prepare_dags_folder(settings: Any, cwd: Path | None = None) -> tuple[Any, DagsFolder]:
    """Copy the bundled examples into ``$HAREFLOW_HOME/dags`` on the first start (see the module
    docstring) and return the settings with that folder pinned, so a ``./dags`` created later does
    not change what a running standalone reads."""
    from hareflow.common.config.settings import bundled_examples_folder

    target = settings.home_dags_folder
    copy = (
        settings.dags_folder is None and not ((cwd or Path.cwd()) / "dags").is_dir() and not target.exists()
    )
    if copy:
        _copy_examples(bundled_examples_folder(), target, settings.home / PENDING_FILE)
    folder = settings.effective_dags_folder(cwd)
    return settings.replace(dags_folder=folder), DagsFolder(folder, copied_examples=copy)


def _copy_examples(source: Path, target: Path, pending: Path) -> None:
    """Copy the example files beside ``target`` first and rename the folder into place, so a start
    interrupted half-way never leaves a half-filled folder that later starts would take as the user's."""
    files = sorted(p for p in source.glob("*.py") if not p.name.startswith("__"))
    if not files:  # a broken installation: say so rather than start with an empty folder for good
        raise UserError(f"no example DAGs in {source}: re-install hareflow, or set HAREFLOW_DAGS_FOLDER")
    staging = target.with_name(target.name + ".copying")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for path in files:
            shutil.copyfile(path, staging / path.name)
        pending.write_text(json.dumps({"files": [str((target / p.name).resolve()) for p in files]}))
        staging.rename(target)
    except OSError as exc:
        raise UserError(f"cannot copy the example DAGs from {source} to {target}: {exc.strerror}") from None


def _wait_until_parsed(sessions: Any, files: set[str], timeout: float) -> bool:
    """Whether every file in ``files`` was parsed (its source or an import error stored) in time."""
    from sqlalchemy import select

    from hareflow.common.db import DagCode, ImportError_

    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            done = set(session.scalars(select(DagCode.fileloc))) | set(
                session.scalars(select(ImportError_.filename))
            )
        if files <= {str(Path(f).resolve()) for f in done}:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def unpause_copied_examples(sessions: Any, home: Path, timeout: float = 60.0) -> list[str]:
    """Unpause the DAGs of the example files the first start copied, once; return their ids.

    Call it once the scheduler runs: it waits (up to ``timeout`` seconds) until the DAG processor,
    which parses in the background, has stored each of those files. A DAG with a pause or unpause
    in its audit log was set by someone and keeps its state."""
    from sqlalchemy import select

    from hareflow.common.db import AuditLog, Dag
    from hareflow.common.operations import set_paused

    pending = home / PENDING_FILE
    try:
        files = set(json.loads(pending.read_text())["files"])
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError):
        files = set()  # unreadable: do nothing rather than guess, and do not try again
    if not _wait_until_parsed(sessions, files, timeout):
        return []  # still listed in the pending file: the next start finishes the job
    unpaused = []
    with sessions() as session, session.begin():
        touched = set(
            session.scalars(select(AuditLog.dag_id).where(AuditLog.action.in_(("pause", "unpause"))))
        )
        for dag in session.scalars(select(Dag).where(Dag.is_active.is_(True), Dag.is_paused.is_(True))):
            if str(Path(dag.fileloc).resolve()) in files and dag.dag_id not in touched:
                set_paused(session, dag.dag_id, False, username="standalone")
                unpaused.append(dag.dag_id)
    pending.unlink(missing_ok=True)
    return sorted(unpaused)


def create_first_admin(sessions: Any) -> str | None:
    """On a metastore with no users, create ``admin`` with a random password and return it (shown
    once, on the first screen); return None when users exist."""
    import secrets

    from sqlalchemy import func, select

    from hareflow.common.db import User
    from hareflow.common.users import create_user

    with sessions() as session, session.begin():
        if session.scalar(select(func.count()).select_from(User)):
            return None
        password = secrets.token_urlsafe(12)
        create_user(session, FIRST_ADMIN, password, "admin", created_by="standalone")
    return password


def quiet_start(level: str) -> Callable[[], None]:
    """Log only warnings and errors until the first screen is shown (migrations, plugin set-up and
    each component's start are noise to a new user); return the function that restores ``level``.
    At DEBUG everything is logged, as asked."""
    root = logging.getLogger()
    if root.getEffectiveLevel() <= logging.DEBUG or level.upper() == "DEBUG":
        return lambda: None
    previous = root.level
    root.setLevel(logging.WARNING)
    return lambda: root.setLevel(previous)


def first_screen(
    url: str,
    folder: DagsFolder,
    *,
    password: str | None,
    metastore: str,
    executor: str,
    unpaused: list[str] | None = None,
) -> str:
    """The lines standalone prints once it serves: where the UI is, who logs in, where the DAGs are
    and how to stop."""
    lines = ["hareflow standalone is running.", "", f"  Web UI:      {url}"]
    if password is not None:
        lines += [
            f"  User:        {FIRST_ADMIN}",
            f"  Password:    {password}",
            "               (shown this once; change it with Change password at the top right of the UI,",
            f"               or with `hareflow users set-password {FIRST_ADMIN}`)",
        ]
    lines.append(f"  DAG folder:  {folder.path}")
    if folder.copied_examples:
        lines.append(
            "               (the bundled examples, copied here on this first start: edit them freely)"
        )
    if unpaused:
        lines.append(f"               (examples unpaused: {', '.join(unpaused)})")
    lines += [f"  Metastore:   {metastore} (executor {executor})", "", "  Stop: Ctrl-C (twice: at once)."]
    return "\n".join(lines)


def show_first_screen(text: str, restore_logging: Callable[[], None]) -> None:
    click.echo(text)
    restore_logging()
