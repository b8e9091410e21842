"""Profiling the measured runs with py-spy, and summarising py-spy's raw (folded) output.

``Spy`` attaches py-spy to this very process (and its subprocesses: the worker pool children) only
for the measured window, so start-up, migrations and the warm-up run stay out of the profile.

``summarize`` groups samples by process kind and by thread (slot threads folded together), and for
each group lists what costs most: self time per function, inclusive time per hareflow function and
per library (SQLAlchemy, psycopg2, aio-pika/aiormq/pamqp, json, ...).

Run ``python -m benchmarks.profile FILE.raw`` to print the summary of a saved profile.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks")

OUR_PACKAGES = ("common/", "scheduler/", "worker/", "hareflow/", "web/", "benchmarks/")

_LIBS = [
    ("sqlalchemy", "sqlalchemy"),
    ("psycopg2", "psycopg2"),
    ("sqlite3", "sqlite3"),
    ("aio_pika", "amqp (aio-pika/aiormq/pamqp)"),
    ("aiormq", "amqp (aio-pika/aiormq/pamqp)"),
    ("pamqp", "amqp (aio-pika/aiormq/pamqp)"),
    ("asyncio/", "asyncio"),
    ("json/", "json"),
    ("multiprocessing/", "multiprocessing (pipes to pool children)"),
    ("logging/", "logging"),
    ("threading.py", "threading"),
    ("queue.py", "queue"),
    ("dataclasses.py", "dataclasses"),
]


class Spy:
    """py-spy attached to this process for a window: ``start()`` ... ``stop()``."""

    def __init__(self, output: Path, *, gil: bool, rate: int = 100) -> None:
        self.output = output
        self.gil = gil
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("py-spy") is not None

    def start(self) -> None:
        cmd = [
            "py-spy",
            "record",
            "--pid",
            str(os.getpid()),
            "--subprocesses",
            "--threads",
            "--function",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            str(self.rate),
            "-o",
            str(self.output),
        ]
        if self.gil:
            cmd.append("--gil")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.5)  # let it attach before the measured window opens
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"py-spy exited at once: {err.strip()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_PROC_PREFIX = re.compile(r'^process (?P<pid>\d+):"(?P<cmd>.*?)"(?:;|$)(?=process \d+:"|thread \(|$)')
_THREAD = re.compile(r"^thread \((?P<tid>[0-9a-fA-Fx]+)\)(?:: (?P<name>.*))?$")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _process_kind(cmd: str, root_pid: str, pid: str) -> str:
    if pid == root_pid:
        return "benchmark process (scheduler, results consumer, DAG processor thread, workers' threads)"
    if "benchmarks.worker_proc" in cmd:
        return "worker process (benchmarks.worker_proc = hareflow worker)"
    if "forkserver" in cmd or "multiprocessing" in cmd:
        return "pool children / forkserver"
    if "processor_child" in cmd or "dag" in cmd.lower():
        return "DAG file processor children"
    return "other subprocess"


def _thread_group(name: str) -> str:
    name = name or "?"
    name = re.sub(r"-slot-\d+$", "-slot-*", name)
    name = re.sub(r"^hareflow-slot-\d+$", "hareflow-slot-*", name)
    name = re.sub(r"^Thread-\d+.*$", "Thread-*", name)
    name = re.sub(r"^asyncio_\d+$", "asyncio_*", name)
    return name


def _frame_label(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    if not m:
        return frame, ""
    return f"{m['func']} ({m['file']})", m["file"]


def _library(file: str) -> str | None:
    for needle, lib in _LIBS:
        if needle in file:
            return lib
    return None


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    lines = raw.read_text().splitlines()
    root_pid = None
    per_group: dict[tuple[str, str], dict[str, Any]] = {}
    total = 0
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        count = int(m["count"])
        stack = m["stack"]
        pid, cmd = "?", ""
        depth = 0
        # with --subprocesses: process root;process child;...;thread;frames. A command line may
        # itself hold ';' (the forkserver's does), so process frames are peeled off with a regex.
        while pm := _PROC_PREFIX.match(stack):
            pid, cmd = pm["pid"], pm["cmd"]
            if depth == 0 and root_pid is None:
                root_pid = pid
            depth += 1
            stack = stack[pm.end() :]
        parts = stack.split(";")
        tname = "?"
        if parts and (tm := _THREAD.match(parts[0])):
            tname = tm["name"] or tm["tid"]
            parts = parts[1:]
        kind = _process_kind(cmd, root_pid or pid, pid)
        key = (kind, _thread_group(tname))
        g = per_group.setdefault(
            key, {"samples": 0, "self": Counter(), "incl": Counter(), "libs": Counter(), "pids": set()}
        )
        g["samples"] += count
        g["pids"].add(pid)
        total += count
        labels = [_frame_label(f) for f in parts]
        if labels:
            g["self"][labels[-1][0]] += count
        seen: set[str] = set()
        seen_libs: set[str] = set()
        for label, file in labels:
            if file.startswith(OUR_PACKAGES) and label not in seen:
                seen.add(label)
                g["incl"][label] += count
            lib = _library(file)
            if lib and lib not in seen_libs:
                seen_libs.add(lib)
                g["libs"][lib] += count
    groups = []
    for (kind, thread), g in sorted(per_group.items(), key=lambda kv: -kv[1]["samples"]):
        n = g["samples"]

        def pct(c: int, n: int = n) -> float:
            return round(100.0 * c / n, 1)

        groups.append(
            {
                "process": kind,
                "thread": thread,
                "processes": len(g["pids"]),
                "samples": n,
                "share_of_all_pct": round(100.0 * n / max(1, total), 1),
                "top_self": [[f, c, pct(c)] for f, c in g["self"].most_common(top)],
                "top_inclusive_hareflow": [[f, c, pct(c)] for f, c in g["incl"].most_common(top)],
                "libraries_inclusive": [[lib, c, pct(c)] for lib, c in g["libs"].most_common()],
            }
        )
    return {"file": str(raw), "total_samples": total, "groups": groups}


def render(summary: dict[str, Any], min_share: float = 1.0, top: int = 12) -> str:
    out = [f"profile {summary['file']}: {summary['total_samples']} samples"]
    for g in summary["groups"]:
        if g["share_of_all_pct"] < min_share:
            continue
        out.append("")
        out.append(
            f"== {g['thread']}  [{g['process']}, {g['processes']} process(es)]  "
            f"{g['samples']} samples = {g['share_of_all_pct']}% of all"
        )
        out.append(
            "  libraries (inclusive): " + ", ".join(f"{lib} {p}%" for lib, _, p in g["libraries_inclusive"])
        )
        out.append("  hareflow functions (inclusive):")
        for f, c, p in g["top_inclusive_hareflow"][:top]:
            out.append(f"    {p:5.1f}%  {c:6d}  {f}")
        out.append("  self time:")
        for f, c, p in g["top_self"][:top]:
            out.append(f"    {p:5.1f}%  {c:6d}  {f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Summarise a py-spy raw profile written by benchmarks.run")
    ap.add_argument("raw", type=Path)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument(
        "--min-share", type=float, default=1.0, help="hide thread groups under this %% of samples"
    )
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args(argv)
    summary = summarize(args.raw, top=max(args.top, 15))
    if args.json:
        print(json.dumps(summary))
    else:
        print(render(summary, args.min_share, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
