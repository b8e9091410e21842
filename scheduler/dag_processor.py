"""DAG processing: parse each DAG file in a child process, store what it defines.

The scheduler never imports user code itself: each changed file is parsed by
``python -m hareflow.common.dag.processor_child FILE`` under a timeout. A file's DAGs are upserted, DAGs
that left the file (or whose file is gone) are deactivated, and its import errors (file, line,
message) replace the previous ones. One broken file never touches the DAGs of another.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hareflow.common.config import Settings
from hareflow.common.dag.loader import find_dag_files
from hareflow.common.dag.serialize import dag_hash
from hareflow.common.db import Dag, ImportError_
from hareflow.common.messages import StateEvent
from hareflow.common.runs import refresh_next_run
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileReport:
    file: str
    dags: list[dict[str, Any]]
    errors: list[dict[str, Any]]


@dataclass
class ProcessReport:
    parsed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    dags_changed: list[str] = field(default_factory=list)
    errors: int = 0


def parse_file(path: str, timeout: float) -> FileReport:
    """Parse one file in a fresh child interpreter; a hang or crash becomes an import error."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hareflow.common.dag.processor_child", path],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        message = f"parsing took longer than {timeout:g}s (dag_file_processor_timeout) and was stopped"
        return FileReport(path, [], [{"file": path, "line": None, "message": message}])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        message = f"DAG processor exited with code {proc.returncode}: {' / '.join(tail)}"
        return FileReport(path, [], [{"file": path, "line": None, "message": message}])
    data = json.loads(lines[-1])
    return FileReport(path, data.get("dags", []), data.get("errors", []))


class DagProcessor:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        on_change: Callable[[Sequence[StateEvent]], None] | None = None,
        folder: Path | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._on_change = on_change
        self.folder = (folder or settings.effective_dags_folder()).resolve()
        self._seen: dict[str, tuple[int, int]] = {}
        self._first = True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("DAG processing failed; retrying")
            stop.wait(self._settings.dag_dir_list_interval)

    def run_once(self, now: datetime | None = None) -> ProcessReport:
        """Parse new and changed files, forget removed ones. The first call parses everything."""
        now = now or datetime.now(UTC)
        report = ProcessReport()
        files = {str(p.resolve()): p for p in find_dag_files(self.folder)} if self.folder.is_dir() else {}
        stamps = {}
        for path, p in files.items():
            try:
                st = p.stat()
                stamps[path] = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                continue
        changed = [path for path, stamp in stamps.items() if self._seen.get(path) != stamp]
        removed = [path for path in self._seen if path not in stamps]
        # Forget what left the folder first: a DAG id that moved here from a file outside it (the
        # folder itself moved) is then free for the file that defines it now, on this same pass.
        if removed or self._first:
            self._deactivate_missing(set(stamps), now, report)
            report.removed = removed
        if changed:
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=self._settings.dag_file_processor_parallelism) as pool:
                reports = list(
                    pool.map(lambda p: parse_file(p, self._settings.dag_file_processor_timeout), changed)
                )
            for file_report in reports:
                self._store(file_report, now, report)
                report.parsed.append(file_report.file)
            log.info("parsed %d DAG file(s) in %.2fs", len(changed), time.monotonic() - started)
        self._seen = {path: stamp for path, stamp in stamps.items()}
        self._first = False
        if report.dags_changed and self._on_change is not None:
            self._on_change(
                [
                    StateEvent(kind="dag", dag_id=d, run_id=None, state="parsed", at=time.time())
                    for d in report.dags_changed
                ]
            )
        return report

    def _store(self, file_report: FileReport, now: datetime, report: ProcessReport) -> None:
        path = file_report.file
        errors = list(file_report.errors)
        with self._sessions() as session, session.begin():
            existing = {d.dag_id: d for d in session.scalars(select(Dag).where(Dag.fileloc == path))}
            defined: set[str] = set()
            for data in file_report.dags:
                dag_id = data["dag_id"]
                other = session.get(Dag, dag_id)
                if (
                    other is not None
                    and other.fileloc != path
                    and other.is_active
                    and Path(other.fileloc).exists()
                ):
                    errors.append(
                        {
                            "file": path,
                            "line": data.get("lineno"),
                            "message": f"DAG id {dag_id!r} is already defined in {other.fileloc}",
                        }
                    )
                    continue
                defined.add(dag_id)
                if self._upsert(session, other, data, now):
                    report.dags_changed.append(dag_id)
            for dag_id, dag in existing.items():
                if dag_id not in defined and dag.is_active:
                    dag.is_active = False
                    report.dags_changed.append(dag_id)
            session.execute(delete(ImportError_).where(ImportError_.filename == path))
            for err in errors:
                session.add(
                    ImportError_(
                        filename=err.get("file") or path,
                        line=err.get("line"),
                        message=err["message"],
                        timestamp=now,
                    )
                )
                log.warning(
                    "import error in %s:%s: %s", path, err.get("line"), err["message"].splitlines()[0]
                )
            report.errors += len(errors)

    def _upsert(self, session: Session, dag: Dag | None, data: dict[str, Any], now: datetime) -> bool:
        digest = dag_hash(data)
        if dag is not None and dag.dag_hash == digest and dag.is_active:
            dag.last_parsed_at = now
            return False
        if dag is None:
            # Only a DAG seen for the first time takes the setting: re-parsing never changes the flag.
            paused = self._settings.dags_are_paused_at_creation
            dag = Dag(dag_id=data["dag_id"], created_at=now, is_paused=paused)
            session.add(dag)
        dag.fileloc = data["fileloc"]
        dag.is_active = True
        dag.schedule = data.get("schedule")
        dag.timezone = data.get("timezone") or "UTC"
        dag.owner = data.get("owner") or "hareflow"
        dag.tags = list(data.get("tags") or [])
        dag.description = data.get("description")
        dag.max_active_runs = int(data.get("max_active_runs") or 16)
        dag.max_active_tasks = int(data.get("max_active_tasks") or 16)
        dag.serialized = data
        dag.dag_hash = digest
        dag.last_parsed_at = now
        session.flush()
        refresh_next_run(session, dag, now)
        return True

    def _deactivate_missing(self, present: set[str], now: datetime, report: ProcessReport) -> None:
        with self._sessions() as session, session.begin():
            for dag in session.scalars(select(Dag).where(Dag.is_active.is_(True))):
                if dag.fileloc not in present:
                    dag.is_active = False
                    report.dags_changed.append(dag.dag_id)
            for err in session.scalars(select(ImportError_)):
                if err.filename not in present:
                    session.delete(err)
