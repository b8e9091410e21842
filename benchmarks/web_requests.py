"""In-process cost of one web request: CPU time and SQL statements per request, no server, no
network client. One JSON object per line on stdout.

    python -m benchmarks.web_requests [--requests 200] [--repeat 5] [--profile DIR]

Builds the same temporary PostgreSQL database as ``benchmarks.web_load`` (100 small DAGs and one
DAG of 50 tasks with 100 finished runs), then sends each address ``--requests`` times through
Flask's test client with an API token, one request at a time, ``--repeat`` times. Reported per
address: the median over the repeats of the mean wall time and of the mean process CPU time per
request, and the SQL statements a request sends (counted with SQLAlchemy's
``before_cursor_execute`` event, transaction ends included). Less sensitive to other load on the
machine than ``web_load``: one thread, and CPU time is the process's own.

``--profile DIR`` also writes a pyinstrument HTML profile per address into DIR (pyinstrument must
be installed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from hareflow.common.config import load_settings
from hareflow.common.db import create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.web.runtime import EXTENSION
from hareflow.web.security import issue_token
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

from benchmarks.web_pages import ADMIN_URL, BIG, populate

ADDRESSES = (
    ("run list API (50 runs)", f"/api/v1/dags/{BIG}/runs"),
    ("dag list page (100 of 101)", "/dags"),
    ("dag list API (100 of 101)", "/api/v1/dags"),
    ("grid API (100 x 50)", f"/api/v1/dags/{BIG}/grid?limit=100"),
    ("grid page (100 runs x 50 tasks)", f"/dags/{BIG}/grid?runs=100"),
)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


class StatementCounter:
    """Counts the statements engines send, and the commits and rollbacks they end them with."""

    def __init__(self, *engines: Engine) -> None:
        self.statements = 0
        self.commits = 0
        self.rollbacks = 0
        for engine in dict.fromkeys(engines):  # the application's engine and its read engine
            event.listen(engine, "before_cursor_execute", self._statement)
            event.listen(engine, "commit", self._commit)
            event.listen(engine, "rollback", self._rollback)

    def _statement(self, *_args: Any) -> None:
        self.statements += 1

    def _commit(self, *_args: Any) -> None:
        self.commits += 1

    def _rollback(self, *_args: Any) -> None:
        self.rollbacks += 1

    def snapshot(self) -> tuple[int, int, int]:
        return self.statements, self.commits, self.rollbacks


def measure(client: Any, path: str, headers: dict[str, str], n: int) -> tuple[float, float]:
    """Mean wall and CPU seconds per request over ``n`` requests."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        response = client.get(path, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}")
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def run(app: Any, counter: StatementCounter, token: str, args: argparse.Namespace) -> None:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for label, path in ADDRESSES:
        measure(client, path, headers, 10)  # templates, caches, pool
        before = counter.snapshot()
        measure(client, path, headers, 1)
        statements, commits, rollbacks = (a - b for a, b in zip(counter.snapshot(), before, strict=True))
        results = [measure(client, path, headers, args.requests) for _ in range(args.repeat)]
        emit(
            {
                "type": "request",
                "address": label,
                "wall_ms": round(statistics.median(w for w, _ in results) * 1000, 2),
                "cpu_ms": round(statistics.median(c for _, c in results) * 1000, 2),
                "statements": statements,
                "commits": commits,
                "rollbacks": rollbacks,
                "loadavg": _loadavg(),
            }
        )
        if args.profile:
            _profile(client, path, headers, args.requests, Path(args.profile), label)


def _profile(client: Any, path: str, headers: dict[str, str], n: int, folder: Path, label: str) -> None:
    from pyinstrument import Profiler

    folder.mkdir(parents=True, exist_ok=True)
    profiler = Profiler(interval=0.0005)
    with profiler:
        measure(client, path, headers, n)
    name = "".join(c if c.isalnum() else "_" for c in label).strip("_")
    (folder / f"{name}.html").write_text(profiler.output_html())
    (folder / f"{name}.txt").write_text(profiler.output_text(unicode=False, show_all=False))


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[0]
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", default=None, help="write a pyinstrument profile per address here")
    args = parser.parse_args(argv)

    from hareflow.web import create_app

    admin_url = os.environ.get("HAREFLOW_TEST_DATABASE_URL", ADMIN_URL)
    name = f"hfbench_req_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine_for(url)
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        populate(sessions, 100, 100, 50)
        with sessions() as s, s.begin():
            token = issue_token(s, "bench")
        with tempfile.TemporaryDirectory() as home:
            env = {"HAREFLOW_HOME": home, "HAREFLOW_DATABASE_URL": url, "HAREFLOW_EXECUTOR": "local"}
            app = create_app(load_settings(env=env), sessions=sessions)
            emit({"type": "setup", "cpus": os.cpu_count(), "loadavg": _loadavg()})
            read_engine = app.extensions[EXTENSION].request_bind()
            run(app, StatementCounter(engine, read_engine), token, args)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
