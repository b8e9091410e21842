"""A worker in its own process (``--worker-mode process``), as ``hareflow worker`` runs it, plus the
benchmark's counters: SIGUSR1 writes them to ``--stats`` as JSON; SIGTERM stops the worker gracefully.

Settings come from the environment (``HAREFLOW_*``), exactly like the real command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--stats", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s worker-proc %(name)s: %(message)s",
    )

    from hareflow.common.config import load_settings
    from hareflow.worker.service import run_worker

    from benchmarks import instrument

    instrument.install_worker()
    settings = load_settings()
    stop = threading.Event()

    def dump(*_: object) -> None:
        tmp = args.stats.with_suffix(".tmp")
        tmp.write_text(json.dumps(instrument.snapshot()))
        os.replace(tmp, args.stats)

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.current_thread().name = "worker-proc-main"
    run_worker(settings, stop, concurrency=args.concurrency, name=args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
