"""Which DAG files a worker will import: only files in its own DAG folder.

A task message names the file to import (``dag_file``). Anyone who can publish to a task queue could
otherwise make a worker import any Python file on its host, so the worker checks the path before a
task process sees it. A path is accepted when, with symlinks resolved, it lies inside the resolved
DAG folder, or when it is the resolved path of a file reached through the folder (a DAG folder may
hold symlinks to files or folders kept elsewhere; the scheduler sends resolved paths). Anything
else is refused, and the worker dead-letters the message with the reason.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hareflow.common.dag.loader import python_files


class DagFolder:
    def __init__(self, folder: os.PathLike[str] | str) -> None:
        self.folder = Path(os.path.realpath(folder))
        self._linked: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def refusal(self, dag_file: object) -> str | None:
        """Why the worker will not import ``dag_file``, or None when it may."""
        if not isinstance(dag_file, str) or not dag_file:
            return f"task message names no DAG file (dag_file={dag_file!r})"
        if "\x00" in dag_file or not os.path.isabs(dag_file):
            return f"dag_file {dag_file!r} is not an absolute path"
        if not dag_file.endswith(".py"):
            return f"dag_file {dag_file!r} is not a Python file"
        real = os.path.realpath(dag_file)
        if Path(real).is_relative_to(self.folder) or real in self._linked or real in self._rescan():
            return None
        return f"dag_file {dag_file!r} lies outside this worker's DAG folder {str(self.folder)!r}"

    def _rescan(self) -> frozenset[str]:
        """Resolved paths outside the folder of the ``.py`` files reached through it by symlinks
        (read again on every miss: misses are refusals, which are rare)."""
        linked = set()
        for path in python_files(self.folder):
            real = os.path.realpath(path)
            if not Path(real).is_relative_to(self.folder):
                linked.add(real)
        with self._lock:
            self._linked = frozenset(linked)
        return self._linked
