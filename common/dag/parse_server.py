"""The DAG parse server: a warm interpreter that forks one child per DAG file to parse.

Started by the DAG processor as ``python -P -m hareflow.common.dag.parse_server FD [MODULE ...]``
(``FD``: its end of a ``SOCK_SEQPACKET`` control socket; ``MODULE``: what to import before the first
fork, the processor names ``hareflow``, the authoring API every DAG file imports). It imports those,
the DAG loader and the serializer once, and never a user's module: each child it forks imports
its DAG file (and the helper modules beside it) afresh, so nothing one file's import does reaches
the next file's, and a helper module changed on disk is seen by the next parse.

Protocol (``common.processes.ForkServer``): ``{"op": "spawn", "token": T, "file": F, "folder": D}``
with two file descriptors attached, the child's stdout and stderr (temporary files: a child's
output never goes through a pipe someone must drain); the child runs ``processor_child.main``
exactly as the fresh-interpreter command would. ``{"op": "kill", "token": T}``; end of file: stop.
Answers ``{"op": "exit", "token": T, "status": S, "error": E}`` once the child is reaped.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import socket
import sys
import traceback
from typing import Any

from hareflow.common.dag import processor_child
from hareflow.common.processes import ForkServer, set_subreaper


class _ParseServer(ForkServer):
    def child_main(self, request: dict[str, Any], fds: list[int]) -> int:
        os.setsid()  # leads its own process group, killed when the parse ends
        out, err = fds[0], fds[1]
        for extra in fds[2:]:
            os.close(extra)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        importlib.invalidate_caches()  # a file created since the server started is found
        args = [request["file"]] + ([request["folder"]] if request.get("folder") else [])
        try:
            status = processor_child.main(args)
        except BaseException:  # noqa: BLE001 - reported on stderr, as an interpreter would
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        return status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -P -m hareflow.common.dag.parse_server CONTROL_FD [MODULE ...]", file=sys.stderr)
        return 2
    control = socket.socket(fileno=int(args[0]))
    for name in args[1:]:
        importlib.import_module(name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the processor decides when this ends (end of file)
    set_subreaper()
    gc.freeze()  # what is loaded now stays untouched by the collector: fewer copied pages per fork
    _ParseServer(control).serve()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
