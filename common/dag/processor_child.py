"""Parse one DAG file in a child process and print the outcome as a single JSON line.

Usage: ``python -P -m hareflow.common.dag.processor_child FILE [DAGS_FOLDER]``. ``-P`` keeps the
current directory off ``sys.path`` (a ``hareflow/`` folder where the scheduler was started must not
shadow the installed package); ``DAGS_FOLDER`` goes on it instead. Output on stdout, exactly one line::

    {"file": "/abs/path.py", "dags": [<serialized DAG>, ...], "errors": [{"file", "line", "message"}],
     "source": "<the file's text>", "import_duration": <seconds spent importing and serializing>,
     "imports": {"/abs/helper.py": "<file_digest>", ...}}

``imports``: every module from the DAG folder (the file's own folder without one) left loaded by the
import, the DAG file itself aside: a restarted processor re-parses the file when one changed.

The exit status is 0 even for a broken DAG file (the errors say what is wrong); 2 means bad usage.
Anything the DAG file prints while it is imported goes to stderr so it cannot corrupt the output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from hareflow.common.dag.loader import ImportErrorInfo, load_dag_file
from hareflow.common.dag.serialize import serialize_dag


def process_file(path: str, dags_folder: str | None = None) -> dict[str, Any]:
    """Load ``path`` and return the JSON-able report printed by ``main``."""
    abs_path = os.path.abspath(path)
    started = time.perf_counter()
    result = load_dag_file(abs_path, dags_folder=dags_folder)
    dags: list[dict[str, Any]] = []
    errors = [e.to_dict() for e in result.errors]
    for dag in result.dags:
        try:
            serialized = serialize_dag(dag)
            serialized["fileloc"] = abs_path  # the file parsed, whatever the DAG says of itself
            json.dumps(serialized)
        except Exception as exc:  # report it, keep the file's other DAGs
            error = ImportErrorInfo(abs_path, dag.lineno, f"cannot serialize DAG '{dag.dag_id}': {exc}")
            errors.append(error.to_dict())
        else:
            dags.append(serialized)
    elapsed = round(time.perf_counter() - started, 6)
    return {
        "file": abs_path,
        "dags": dags,
        "errors": errors,
        "source": read_source(abs_path),
        "import_duration": elapsed,
        "imports": imported_from(dags_folder or os.path.dirname(abs_path), exclude=abs_path),
    }


def imported_from(folder: str, *, exclude: str) -> dict[str, str | None]:
    """Each loaded module's file under ``folder`` (but ``exclude``), with its ``file_digest``."""
    # Compared as the paths are spelled first: resolving every loaded module's path costs more
    # than the rest of a small file's parse.
    roots = tuple({os.path.join(os.path.abspath(folder), ""), os.path.join(os.path.realpath(folder), "")})
    excluded = os.path.realpath(exclude)
    found: dict[str, str | None] = {}
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if not isinstance(name, str) or not name.startswith(roots):
            continue
        path = os.path.realpath(name)
        if path != excluded:
            found[path] = file_digest(path)
    return found


def file_digest(path: str) -> str | None:
    """sha256 of the file's bytes (None if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


#: Stored in the metastore for the web's source page; a larger file is cut there, with a note.
MAX_SOURCE_CHARS = 2_000_000


def read_source(path: str) -> str | None:
    """The file's text as it was parsed (None if it cannot be read any more)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(MAX_SOURCE_CHARS + 1)
    except OSError:
        return None
    if len(text) > MAX_SOURCE_CHARS:
        text = (
            text[:MAX_SOURCE_CHARS] + f"\n# ... cut: the file is longer than {MAX_SOURCE_CHARS} characters\n"
        )
    return text


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[TextIO]:
    """Send fd 1 and sys.stdout to stderr; yield a writable file for the real stdout."""
    sys.stdout.flush()
    saved_fd = os.dup(1)
    os.dup2(2, 1)
    real_stdout = os.fdopen(saved_fd, "w", encoding="utf-8", closefd=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real_stdout
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        real_stdout.flush()
        os.dup2(saved_fd, 1)
        real_stdout.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        usage = "usage: python -P -m hareflow.common.dag.processor_child DAG_FILE [DAGS_FOLDER]"
        print(usage, file=sys.stderr)
        return 2
    with _stdout_to_stderr() as real_stdout:
        report = process_file(args[0], args[1] if len(args) == 2 else None)
        real_stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: a thread the DAG file started at import must not keep this process alive (its
    # output is written; a process the file started is killed with this one's process group).
    os._exit(status)
