"""DAG processing: parse each DAG file in a child process, store what it defines.

The scheduler never imports user code itself: each changed file is parsed under a timeout in a
child forked from the parse server (``scheduler.warm_parse``, ``common.dag.parse_server``), or, while
that server is down, by ``python -P -m hareflow.common.dag.processor_child FILE DAGS_FOLDER``. On
the first scan after a start, a file unchanged since its last clean parse (``dag_code.parse_record``)
is not parsed again. A file's DAGs
are upserted, DAGs that left the file (or whose file is gone) are deactivated, and its import errors
(file, line, message) replace the previous ones. One broken file never touches the DAGs of another.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from hareflow.common.assets import sync_dag_assets
from hareflow.common.config import Settings
from hareflow.common.dag.assets import describe as describe_assets
from hareflow.common.dag.loader import find_dag_files
from hareflow.common.dag.processor_child import file_digest, read_source
from hareflow.common.dag.serialize import dag_hash
from hareflow.common.dag.triggers import describe_trigger
from hareflow.common.dag_versions import record_version, source_hash
from hareflow.common.db import Dag, DagCode, ImportError_
from hareflow.common.db.upsert import lock_row, locked_row
from hareflow.common.messages import StateEvent
from hareflow.common.runs import refresh_next_run
from hareflow.scheduler.warm_parse import WarmParser
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileReport:
    file: str
    dags: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    source: str | None = None
    #: seconds the child spent importing the file and serializing its DAGs (None: it did not say)
    import_duration: float | None = None
    #: modules from the DAG folder the import loaded, with their digests (None: it did not say)
    imports: dict[str, str | None] | None = None


@dataclass
class ProcessReport:
    parsed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    dags_changed: list[str] = field(default_factory=list)
    errors: int = 0


#: A parse running this long stops counting against dag_file_processor_parallelism (it goes on until
#: its timeout), so a few files that hang at import never hold up the others; at most MAX_SLOW_PARSES
#: such parses run at once beside the regular ones.
SLOW_AFTER = 5.0
MAX_SLOW_PARSES = 8
TIMEOUT_MESSAGE = "parsing took longer than {timeout:g}s (dag_file_processor_timeout) and was stopped"
TIMEOUT_PREFIX = TIMEOUT_MESSAGE.split("{", 1)[0]  # how a stored import error says it was a timeout


def parse_file(
    path: str,
    timeout: float,
    dags_folder: str | None = None,
    running: set[subprocess.Popen[bytes]] | None = None,
    *,
    on_slow: Callable[[], None] | None = None,
    warm: WarmParser | None = None,
    closing: threading.Event | None = None,
) -> FileReport:
    """Parse one file in a child process; a hang or crash becomes an import error.

    ``warm``: fork the child from that parse server (``common.dag.parse_server``: an interpreter
    that has imported hareflow once, never user code); without it, or while that server is down,
    the child is a fresh interpreter, ``python -P -m hareflow.common.dag.processor_child``. Either
    way the child runs the same code with the same ``sys.path``.

    ``-P``: the scheduler's working directory is not put on the child's ``sys.path`` (a folder there
    named like one of the user's or hareflow's modules must not change what the DAG file imports);
    the DAG folder is, so helper modules beside the DAGs import.

    The child writes to temporary files, not pipes, and only its own exit is awaited: a thread or a
    process the DAG file starts at import cannot hold the parse open. The child leads a process group
    of its own, killed when it is done, so whatever the file started goes with it. ``running``: a set
    a fresh-interpreter child is kept in while it runs (so a stopping processor can kill it; the
    parse server kills its own children when it stops). ``on_slow`` is called once the parse has
    taken ``SLOW_AFTER`` seconds (the processor then frees its slot). ``closing``: once set (the
    processor is stopping), a parse the server lost is not started again in a fresh interpreter,
    and no fresh interpreter is started: ParseCancelled is raised instead."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        code: int | None = None
        child = warm.spawn(path, dags_folder, out.fileno(), err.fileno()) if warm is not None else None
        if child is not None:
            try:
                code = _wait(child, timeout, on_slow)
            finally:
                if code is None:
                    child.kill()
            if closing is not None and closing.is_set():
                raise ParseCancelled(path)  # killed because the processor is stopping
            if child.lost:  # the server died under this parse: parse it again, in a fresh interpreter
                out.truncate(0)
                err.truncate(0)
                child = None
                on_slow = None  # the slot, if freed, stays freed
        if child is None:
            code = _parse_in_fresh_interpreter(
                path, timeout, dags_folder, running, on_slow, out, err, closing
            )
        if code is None:
            message = TIMEOUT_MESSAGE.format(timeout=timeout)
            return FileReport(path, [], [{"file": path, "line": None, "message": message}])
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        tail = stderr.strip().splitlines()[-5:]
        message = f"DAG processor exited with code {code}: {' / '.join(tail)}"
        return FileReport(path, [], [{"file": path, "line": None, "message": message}])
    data = json.loads(lines[-1])
    return FileReport(
        path,
        data.get("dags", []),
        data.get("errors", []),
        data.get("source"),
        data.get("import_duration"),
        data.get("imports"),
    )


def _parse_in_fresh_interpreter(
    path: str,
    timeout: float,
    dags_folder: str | None,
    running: set[subprocess.Popen[bytes]] | None,
    on_slow: Callable[[], None] | None,
    out: IO[bytes],
    err: IO[bytes],
    closing: threading.Event | None = None,
) -> int | None:
    """The child's exit code, or None if it ran past ``timeout`` (it is killed then)."""
    if closing is not None and closing.is_set():
        raise ParseCancelled(path)
    command = [sys.executable, "-P", "-m", "hareflow.common.dag.processor_child", path]
    if dags_folder is not None:
        command.append(dags_folder)
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
    if running is not None:
        running.add(proc)
    try:
        # Checked again once the child is in ``running``: a close() that began meanwhile either
        # found it there (and killed it) or is seen here.
        if closing is not None and closing.is_set():
            raise ParseCancelled(path)
        return _wait(proc, timeout, on_slow)
    finally:
        _kill_group(proc.pid)
        proc.wait()
        if running is not None:
            running.discard(proc)


class ParseCancelled(Exception):
    """The processor stopped while the file was being parsed: nothing is stored for it (it is
    parsed again when a processor next starts)."""


class _Waitable(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


def _wait(proc: _Waitable, timeout: float, on_slow: Callable[[], None] | None) -> int | None:
    """The child's exit code, or None if it ran past ``timeout``."""
    first = min(SLOW_AFTER, timeout) if on_slow is not None else timeout
    try:
        return proc.wait(first)
    except subprocess.TimeoutExpired:
        if on_slow is None or first >= timeout:
            return None
    on_slow()
    try:
        return proc.wait(timeout - first)
    except subprocess.TimeoutExpired:
        return None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def store_source(session: Session, fileloc: str, source: str, now: datetime) -> tuple[DagCode, bool]:
    """Keep the file's source for the web (which never opens a DAG's path itself), and lock the
    file's row for this transaction: several schedulers storing the same file take turns. Also
    says whether the stored source changed (or was stored for the first time)."""
    digest = source_hash(source)
    key = DagCode.key(fileloc)
    code = lock_row(session, DagCode, key)
    if code is None:
        values = {"fileloc_hash": key, "fileloc": fileloc, "source": source, "source_hash": digest}
        return locked_row(session, DagCode, key, {**values, "updated_at": now}), True
    if code.source_hash != digest:
        code.source, code.source_hash, code.updated_at = source, digest, now
        return code, True
    return code, False


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
        self._lock = threading.Lock()
        parallelism = settings.dag_file_processor_parallelism
        self._slots = threading.Semaphore(parallelism)
        self._pool = ThreadPoolExecutor(
            max_workers=parallelism + MAX_SLOW_PARSES, thread_name_prefix="hareflow-parse"
        )
        self._in_flight: dict[str, Future[ProcessReport]] = {}
        self._running: set[subprocess.Popen[bytes]] = set()
        #: Parse children are forked from this warm server (fresh interpreters while it is down).
        self.parse_server = WarmParser()
        self._closing = threading.Event()
        #: Files whose last parse timed out: parsed after the others, so they never hold them up.
        self._slow: set[str] = set()
        #: Files parsed so far (for benchmarks and tests: a file found unchanged is not counted).
        self.files_parsed = 0

    def run(self, stop: threading.Event) -> None:
        """Scan the folder every ``dag_dir_list_interval`` until ``stop``; parses run in the
        background and each file's result is stored the moment that file is done."""
        try:
            while not stop.is_set():
                try:
                    self.run_once(wait=False)
                except Exception:
                    log.exception("DAG processing failed; retrying")
                stop.wait(self._settings.dag_dir_list_interval)
        finally:
            self.close()

    def close(self) -> None:
        """Stop parsing: queued files are dropped, running parse children killed (and not started
        again in a fresh interpreter when their server goes)."""
        self._closing.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(self._running):
            _kill_group(proc.pid)
        self.parse_server.close()

    def idle(self) -> bool:
        """True when no parse is queued or running."""
        with self._lock:
            return not self._in_flight

    def run_once(self, now: datetime | None = None, *, wait: bool = True) -> ProcessReport:
        """Parse new and changed files, forget removed ones. The first call parses everything.

        ``wait``: return when every file this call started is stored (the report then covers them);
        without it, parsing goes on in the background (the scheduler's mode)."""
        report = ProcessReport()
        stamps = self._scan()
        with self._lock:
            changed = [
                p for p, stamp in stamps.items() if self._seen.get(p) != stamp and p not in self._in_flight
            ]
            removed = [p for p in self._seen if p not in stamps]
            for path in removed:
                del self._seen[path]
        if self._first:
            self._slow |= self._timed_out_before()
            unchanged = self._unchanged_since_stored(changed)
            with self._lock:
                for path in unchanged:
                    self._seen[path] = stamps[path]
            changed = [p for p in changed if p not in unchanged]
        changed.sort(key=lambda p: p in self._slow)
        # Forget what left the folder first: a DAG id that moved here from a file outside it (the
        # folder itself moved) is then free for the file that defines it now, on this same pass.
        if removed or self._first:
            self._deactivate_missing(set(stamps), now or datetime.now(UTC), report)
            report.removed = removed
            self._notify(report.dags_changed)
        self._first = False
        futures = [self._submit(path, stamps[path], now) for path in changed]
        if wait:
            for future in futures:
                done = future.result()
                report.parsed += done.parsed
                report.dags_changed += done.dags_changed
                report.errors += done.errors
        return report

    def _scan(self) -> dict[str, tuple[int, int]]:
        files = find_dag_files(self.folder) if self.folder.is_dir() else []
        stamps = {}
        for p in files:
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            stamps[str(p.resolve())] = (st.st_mtime_ns, st.st_size)
        return stamps

    def _submit(self, path: str, stamp: tuple[int, int], now: datetime | None) -> Future[ProcessReport]:
        future = self._pool.submit(self._parse_and_store, path, stamp, now)
        with self._lock:
            self._in_flight[path] = future
        future.add_done_callback(lambda _: self._forget(path))
        return future

    def _forget(self, path: str) -> None:
        with self._lock:
            self._in_flight.pop(path, None)

    def _parse_and_store(self, path: str, stamp: tuple[int, int], now: datetime | None) -> ProcessReport:
        started = time.monotonic()
        self._slots.acquire()
        held = [True]

        def free_slot() -> None:
            if held[0]:
                held[0] = False
                self._slots.release()

        try:
            file_report = parse_file(
                path,
                self._settings.dag_file_processor_timeout,
                str(self.folder),
                self._running,
                on_slow=free_slot,
                warm=self.parse_server,
                closing=self._closing,
            )
        except ParseCancelled:
            return ProcessReport()
        finally:
            free_slot()
        report = ProcessReport(parsed=[path])
        with self._lock:
            self.files_parsed += 1
        try:
            self._store(file_report, now or datetime.now(UTC), report)
        except Exception:
            # A metastore outage, or a deadlock with another scheduler storing the same DAG ids
            # from another file: nothing was stored, and the next scan parses the file again.
            log.exception("storing what %s defines failed; it is parsed again on the next scan", path)
            raise
        timed_out = any(e["message"].startswith(TIMEOUT_PREFIX) for e in file_report.errors)
        with self._lock:
            self._seen[path] = stamp  # only once stored: a failed store is tried again next scan
            (self._slow.add if timed_out else self._slow.discard)(path)
        log.debug("parsed %s in %.2fs", path, time.monotonic() - started)
        self._notify(report.dags_changed)
        return report

    def _notify(self, dag_ids: Sequence[str]) -> None:
        if dag_ids and self._on_change is not None:
            self._on_change(
                [
                    StateEvent(kind="dag", dag_id=d, run_id=None, state="parsed", at=time.time())
                    for d in dag_ids
                ]
            )

    def _unchanged_since_stored(self, paths: Sequence[str]) -> set[str]:
        """Of ``paths``, the files a restart need not parse: the source and every module from the
        DAG folder its last parse imported are unchanged (by content), that parse had no errors,
        and the DAGs it defined are still stored active for this file. Anything else is parsed."""
        wanted = set(paths)
        with self._sessions() as session:
            rows = session.execute(
                select(DagCode.fileloc, DagCode.source_hash, DagCode.parse_record).where(
                    DagCode.parse_record.is_not(None)
                )
            )  # not the sources themselves: only their hashes are compared
            records = {fileloc: (digest, record) for fileloc, digest, record in rows if fileloc in wanted}
            if not records:
                return set()
            broken = set(session.scalars(select(ImportError_.filename)))
            stored = {
                (d, f)
                for d, f in session.execute(select(Dag.dag_id, Dag.fileloc).where(Dag.is_active.is_(True)))
            }
        digests: dict[str, str | None] = {}  # a module shared by many files is read once

        def digest(path: str) -> str | None:
            if path not in digests:
                digests[path] = file_digest(path)
            return digests[path]

        unchanged = set()
        for path, (source_digest, record) in records.items():
            if path in broken or not isinstance(record, dict):
                continue
            imports, dag_ids = record.get("imports"), record.get("dags")
            if not isinstance(imports, dict) or not isinstance(dag_ids, list):
                continue
            if any((dag_id, path) not in stored for dag_id in dag_ids):
                continue
            if any(d is None or digest(m) != d for m, d in imports.items()):
                continue
            source = read_source(path)
            if source is not None and source_hash(source) == source_digest:
                unchanged.add(path)
        return unchanged

    def _timed_out_before(self) -> set[str]:
        """Files whose stored import error says their parse timed out (before a restart)."""
        with self._sessions() as session:
            rows = session.scalars(
                select(ImportError_.filename).where(ImportError_.message.like(TIMEOUT_PREFIX + "%"))
            )
            return set(rows)

    def _store(self, file_report: FileReport, now: datetime, report: ProcessReport) -> None:
        """Store one file's DAGs, source and import errors in one transaction. Several schedulers
        may parse the same file at the same moment: the file's ``dag_code`` row, written first and
        held locked, makes them take turns, and every row is inserted only if absent."""
        path = file_report.file
        errors = list(file_report.errors)
        # A parse that crashed or timed out sends no source: read it here (text only, never run).
        source = file_report.source if file_report.source is not None else read_source(path)
        with self._sessions() as session, session.begin():
            code: DagCode | None = None
            source_changed = False
            if source is not None:
                code, source_changed = store_source(session, path, source, now)
            existing = {d.dag_id: d for d in session.scalars(select(Dag).where(Dag.fileloc == path))}
            defined: set[str] = set()
            for data in file_report.dags:
                dag_id = data["dag_id"]
                unsupported = self._unsupported_triggers(data)
                if unsupported:
                    errors.append({"file": path, "line": data.get("lineno"), "message": unsupported})
                    continue
                dag = self._dag_row(session, dag_id, path, now)
                if dag.fileloc != path and dag.is_active and Path(dag.fileloc).exists():
                    errors.append(
                        {
                            "file": path,
                            "line": data.get("lineno"),
                            "message": f"DAG id {dag_id!r} is already defined in {dag.fileloc}",
                        }
                    )
                    continue
                defined.add(dag_id)
                data["fileloc"] = path
                if self._upsert(session, dag, data, now, code, source_changed=source_changed):
                    report.dags_changed.append(dag_id)
            for dag_id, dag in existing.items():
                if dag_id not in defined and dag.is_active:
                    dag.is_active = False
                    report.dags_changed.append(dag_id)
            if code is not None:
                clean = not errors and file_report.imports is not None
                record = {"dags": sorted(defined), "imports": file_report.imports} if clean else None
                if code.parse_record != record:
                    code.parse_record = record
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

    def _unsupported_triggers(self, data: dict[str, Any]) -> str | None:
        """Why this deployment cannot honour the DAG's triggers (a BrokerTrigger needs a broker)."""
        if self._settings.effective_executor != "local":
            return None
        if any(t.get("kind") == "broker" for t in data.get("triggers") or ()):
            return (
                f"DAG {data['dag_id']!r} has a BrokerTrigger, but this deployment uses the local "
                f"executor, which has no broker: set executor = rabbitmq (and broker_url), or use a "
                f"WebhookTrigger"
            )
        return None

    def _dag_row(self, session: Session, dag_id: str, path: str, now: datetime) -> Dag:
        """The DAG's row, locked; inserted first (inactive, to be filled in) if it does not exist.
        Another scheduler inserting the same DAG at the same moment makes the insert wait for it
        and do nothing; the locking read then returns that scheduler's row."""
        # Only a DAG seen for the first time takes the setting: re-parsing never changes the flag.
        placeholder = {
            "dag_id": dag_id,
            "fileloc": path,
            "is_paused": self._settings.dags_are_paused_at_creation,
            "is_active": False,
            "serialized": {},
            "dag_hash": "",
            "created_at": now,
        }
        return locked_row(session, Dag, dag_id, placeholder)

    def _upsert(
        self,
        session: Session,
        dag: Dag,
        data: dict[str, Any],
        now: datetime,
        code: DagCode | None,
        *,
        source_changed: bool,
    ) -> bool:
        """Bring the (locked) row up to date with the parsed DAG; True if anything changed. The
        DAG's version (``common.dag_versions``) is looked up or recorded only when its serialized
        form or its file's source changed: an unchanged parse costs no version query."""
        digest = dag_hash(data)
        if dag.dag_hash == digest and dag.is_active and dag.dag_version_id is not None and not source_changed:
            dag.last_parsed_at = now
            return False
        if dag.dag_hash == digest and dag.is_active:  # the source alone changed (a comment...)
            self._record_version(session, dag, code, now)
            dag.last_parsed_at = now
            return False
        dag.fileloc = data["fileloc"]
        dag.is_active = True
        dag.schedule = _schedule_text(data)
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
        self._record_version(session, dag, code, now)
        refresh_next_run(session, dag, now)
        sync_dag_assets(session, dag.dag_id, data, now)
        return True

    @staticmethod
    def _record_version(session: Session, dag: Dag, code: DagCode | None, now: datetime) -> None:
        # No source (the file could not be read as text): the version is the serialized form alone.
        record_version(
            session,
            dag,
            source=code.source if code is not None else None,
            source_digest=code.source_hash if code is not None else "",
            now=now,
        )

    def _deactivate_missing(self, present: set[str], now: datetime, report: ProcessReport) -> None:
        with self._sessions() as session, session.begin():
            for dag in session.scalars(select(Dag).where(Dag.is_active.is_(True))):
                if dag.fileloc not in present:
                    dag.is_active = False
                    report.dags_changed.append(dag.dag_id)
            for err in session.scalars(select(ImportError_)):
                if err.filename not in present:
                    session.delete(err)
            for code in session.scalars(select(DagCode)):
                if code.fileloc not in present:
                    session.delete(code)


def _schedule_text(data: dict[str, Any]) -> str | None:
    """The schedule column: the time schedule, the asset expression, or both (at most 100 chars)."""
    parts = [data.get("schedule")]
    if data.get("asset_schedule"):
        parts.append(f"assets: {describe_assets(data['asset_schedule'])}")
    text = " or ".join(p for p in parts if p)
    # Then its event triggers: "0 2 * * * + on event: orders/order.created".
    text = " + ".join(x for x in [text, *(describe_trigger(t) for t in data.get("triggers") or ())] if x)
    return (text if len(text) <= 100 else text[:99] + "…") or None
