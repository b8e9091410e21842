"""Loading DAG files: import a user's file safely and report any failure with its file and line.

Each file is imported as a fresh, uniquely named module. The DAG folder is on ``sys.path`` (appended,
as Airflow does, so a helper module in it can never shadow the standard library or an installed
package), and the file's own directory is on it while the file runs, so helper modules beside DAGs
import: ``from common.helpers import greet`` finds ``<dags>/common/helpers.py``. hareflow itself lives
only under the ``hareflow`` package, so a user's ``common``, ``utils``, ``web`` or ``worker`` never
collides with it. Every DAG created during the import is recorded, whether or not it is bound to a
variable. Loading never raises: failures are returned.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from hareflow.common.dag.dag import DAG, collect_dags
from hareflow.common.dag.errors import DagDefinitionError, DagNotFound, TaskNotFound
from hareflow.common.dag.mapping import check_all_expanded
from hareflow.common.dag.task import BaseTask

_module_counter = itertools.count(1)
_HINTS = (b"DAG", b"hareflow")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class ImportErrorInfo:
    """A DAG file that failed to load: where, and why (first line a summary, then a short traceback)."""

    file: str
    line: int | None
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass
class LoadResult:
    """The DAGs a file defines, or the errors that stopped it from loading."""

    dags: list[DAG] = field(default_factory=list)
    errors: list[ImportErrorInfo] = field(default_factory=list)


def _is_internal_frame(filename: str) -> bool:
    return filename.startswith("<frozen ") or os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)


def _line_in_file(tb: TracebackType | None, path: str) -> int | None:
    """Line of the last traceback frame that executes ``path``."""
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if os.path.abspath(frame.f_code.co_filename) == path:
            line = lineno
    return line


def _describe(exc: BaseException, path: str) -> ImportErrorInfo:
    line: int | None = None
    if isinstance(exc, SyntaxError) and exc.filename and os.path.abspath(exc.filename) == path:
        line = exc.lineno
    elif isinstance(exc, DagDefinitionError) and exc.file == path:
        line = exc.line
    if line is None:
        line = _line_in_file(exc.__traceback__, path)
    text = str(exc).strip()
    summary = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_internal_frame(f.filename)]
    tail = "".join(traceback.format_exception_only(type(exc), exc))
    if frames:
        tail = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) + tail
    message = f"{summary}\n\n{tail}"
    return ImportErrorInfo(file=path, line=line, message=message.rstrip())


def add_dags_folder_to_path(folder: str | os.PathLike[str] | None) -> None:
    """Put the DAG folder on ``sys.path`` (at the end, once) so modules beside the DAGs import.

    Called by every process that imports DAG files: the DAG processor's child, a worker before its
    pool starts (its children inherit the path), and the CLI commands that load DAGs in-process."""
    if folder is None:
        return
    entry = os.path.abspath(os.fspath(folder))
    if os.path.isfile(entry):  # a DAG "folder" may be a single file
        entry = os.path.dirname(entry)
    if entry not in sys.path:
        sys.path.append(entry)


def load_dag_file(
    path: str | os.PathLike[str], *, dags_folder: str | os.PathLike[str] | None = None
) -> LoadResult:
    """Import the DAG file at ``path`` and return its DAGs, or the errors that stopped it. Never raises.

    ``dags_folder``: the DAG folder ``path`` belongs to; it is added to ``sys.path`` first."""
    add_dags_folder_to_path(dags_folder)
    abs_path = os.path.abspath(os.fspath(path))
    module_name = f"_hareflow_dagfile_{next(_module_counter)}"
    directory = os.path.dirname(abs_path)
    result = LoadResult()
    sys.path.insert(0, directory)
    try:
        spec = importlib.util.spec_from_file_location(module_name, abs_path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {abs_path}: not a Python source file")
        module = importlib.util.module_from_spec(spec)
        # Registered only while it runs, so dataclasses, enums and typing inside the file work.
        sys.modules[module_name] = module
        with collect_dags() as dags:
            spec.loader.exec_module(module)
        check_all_expanded(dags)
        result.dags = dags
    except (Exception, SystemExit) as exc:  # a broken user file must not stop the caller
        result.errors.append(_describe(exc, abs_path))
    finally:
        sys.modules.pop(module_name, None)
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)
    return result


def _skipped(relative: Path) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.parts)


def python_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Every ``.py`` file under ``folder``, following symlinked folders (a DAG folder may link to
    folders kept elsewhere), each real folder walked once, so a symlink loop ends."""
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        for name in files:
            if name.endswith(".py"):
                yield Path(root, name)


def find_dag_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Python files under ``folder`` that look like DAG files (mention "DAG" or "hareflow"), sorted.

    Names starting with "_" or "." (files or directories) are skipped; symlinked folders are
    followed.
    """
    root = Path(folder)
    if root.is_file():
        return [root] if root.suffix == ".py" else []
    found: list[Path] = []
    for path in sorted(python_files(root)):
        if _skipped(path.relative_to(root)) or not path.is_file():
            continue
        try:
            content = path.read_bytes()
        except OSError:
            continue
        if any(hint in content for hint in _HINTS):
            found.append(path)
    return found


_cache: dict[str, tuple[int, int, LoadResult]] = {}
_cache_lock = threading.Lock()


def load_dag_file_cached(path: str | os.PathLike[str]) -> LoadResult:
    """Like ``load_dag_file`` but reuses the last result while the file's mtime and size are unchanged."""
    abs_path = os.path.abspath(os.fspath(path))
    stat = os.stat(abs_path)
    with _cache_lock:
        cached = _cache.get(abs_path)
        if cached is not None and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
            return cached[2]
        result = load_dag_file(abs_path)
        _cache[abs_path] = (stat.st_mtime_ns, stat.st_size, result)
        return result


def get_dag(path: str | os.PathLike[str], dag_id: str) -> DAG:
    """Return DAG ``dag_id`` defined in ``path`` (cached); raise DagNotFound if it is not there any more."""
    try:
        result = load_dag_file_cached(path)
    except OSError as exc:
        raise DagNotFound(f"DAG '{dag_id}': cannot read DAG file {path}: {exc}") from None
    for dag in result.dags:
        if dag.dag_id == dag_id:
            return dag
    if result.errors:
        first = result.errors[0]
        where = f"{first.file}:{first.line}" if first.line else first.file
        raise DagNotFound(f"DAG '{dag_id}' could not be loaded: {where}: {first.message.splitlines()[0]}")
    raise DagNotFound(f"DAG '{dag_id}' is not defined in {path} any more")


def get_task(path: str | os.PathLike[str], dag_id: str, task_id: str) -> BaseTask:
    """Return task ``task_id`` of DAG ``dag_id`` in ``path``; raise DagNotFound or TaskNotFound."""
    dag = get_dag(path, dag_id)
    try:
        return dag.get_task(task_id)
    except KeyError:
        raise TaskNotFound(f"task '{task_id}' is not in DAG '{dag_id}' ({path}) any more") from None
