"""Page weight and latency of the web UI on a large metastore; one JSON object per line on stdout.

    python -m benchmarks.web_pages [--dags 500] [--history 10] [--runs 100] [--tasks 50] [--repeat 7]

Builds a temporary PostgreSQL database (``HAREFLOW_TEST_DATABASE_URL``, default the local
``postgres`` superuser) holding ``--dags`` DAGs with ``--history`` runs each, plus one DAG of ``--tasks``
tasks with ``--runs`` finished runs (``runs x tasks`` task instances), serves the application with
the real server on a free port, logs in over HTTP and times each page ``--repeat`` times
(median, min, max of the full response, and its size). The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hareflow.common.config import load_settings
from hareflow.common.dag.serialize import SerializedDag, dag_hash
from hareflow.common.db import Dag, DagRun, TaskInstance, User, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url
from werkzeug.security import generate_password_hash

from benchmarks.env import plain_task

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BIG = "big_grid_dag"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def serialized(dag_id: str, n_tasks: int) -> dict[str, Any]:
    tasks = tuple(
        plain_task(f"task_{i:03d}", (f"task_{i - 1:03d}",) if i % 5 else ()) for i in range(n_tasks)
    )
    return SerializedDag(
        dag_id=dag_id,
        fileloc=f"/dags/{dag_id}.py",
        lineno=1,
        schedule="@daily",
        timezone="UTC",
        start_date=T0,
        end_date=None,
        catchup=False,
        max_active_runs=16,
        max_active_tasks=16,
        params={},
        tags=("bench", f"group{hash(dag_id) % 7}"),
        owner="bench",
        description=f"benchmark DAG {dag_id}",
        doc_md=None,
        tasks=tasks,
    ).to_dict()


def populate(sessions: Any, n_dags: int, n_runs: int, n_tasks: int, history: int = 10) -> None:
    now = datetime.now(UTC)
    with sessions() as s, s.begin():
        s.add(
            User(
                username="bench",
                password_hash=generate_password_hash("benchmark"),
                role="admin",
                created_at=now,
            )
        )
        dags, runs = [], []
        for i in range(n_dags):
            dag_id = f"dag_{i:04d}"
            data = serialized(dag_id, 5)
            dags.append(_dag_row(dag_id, data, now))
            for r in range(history):
                when = T0 + timedelta(days=r)
                runs.append(_run_row(dag_id, when, "success" if r % 4 else "failed"))
        big = serialized(BIG, n_tasks)
        dags.append(_dag_row(BIG, big, now))
        s.execute(insert(Dag), dags)
        s.execute(
            insert(DagRun), runs + [_run_row(BIG, T0 + timedelta(days=r), "success") for r in range(n_runs)]
        )
        big_runs = s.execute(select(DagRun.id, DagRun.run_id).where(DagRun.dag_id == BIG)).all()
        tis = [
            {
                "run_pk": pk,
                "dag_id": BIG,
                "run_id": run_id,
                "task_id": t["task_id"],
                "map_index": -1,
                "state": "success",
                "try_number": 1,
                "max_tries": 1,
                "queue": "default",
                "priority": 1,
                "pool_slots": 1,
                "hostname": "bench-host",
                "start_date": T0,
                "end_date": T0,
                "duration": 1.0,
            }
            for pk, run_id in big_runs
            for t in big["tasks"]
        ]
        s.execute(insert(TaskInstance), tis)


def _dag_row(dag_id: str, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "fileloc": data["fileloc"],
        "is_paused": False,
        "is_active": True,
        "schedule": data["schedule"],
        "timezone": "UTC",
        "owner": "bench",
        "tags": data["tags"],
        "description": data["description"],
        "max_active_runs": 16,
        "max_active_tasks": 16,
        "serialized": data,
        "dag_hash": dag_hash(data),
        "next_logical_date": now,
        "next_run_after": now,
        "last_parsed_at": now,
        "created_at": now,
    }


def _run_row(dag_id: str, when: datetime, state: str) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "run_id": f"scheduled__{when.isoformat()}",
        "run_type": "scheduled",
        "state": state,
        "logical_date": when,
        "interval_key": when,
        "data_interval_start": when,
        "data_interval_end": when,
        "conf": {},
        "queued_at": when,
        "start_date": when,
        "end_date": when + timedelta(seconds=30),
    }


class Browser:
    """Cookies and the CSRF token over plain HTTP, like a browser without JavaScript."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> bytes:
        with self.opener.open(self.base + path, timeout=60) as response:
            return response.read()

    def login(self, username: str, password: str) -> None:
        page = self.get("/login").decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        body = urllib.parse.urlencode(
            {"username": username, "password": password, "csrf_token": token.group(1)}
        )
        with self.opener.open(self.base + "/login", data=body.encode(), timeout=60) as response:
            assert response.url.endswith("/dags"), response.url


def measure(browser: Browser, name: str, path: str, repeat: int) -> dict[str, Any]:
    times, size = [], 0
    browser.get(path)  # warm-up: template compilation, connection pool
    for _ in range(repeat):
        started = time.perf_counter()
        size = len(browser.get(path))
        times.append((time.perf_counter() - started) * 1000)
    return {
        "type": "measurement",
        "page": name,
        "path": path,
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "bytes": size,
        "repeat": repeat,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dags", type=int, default=500)
    parser.add_argument("--history", type=int, default=10, help="runs of each of the --dags DAGs")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    import logging
    import os

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no request log lines on stderr
    admin_url = os.environ.get("HAREFLOW_TEST_DATABASE_URL", ADMIN_URL)
    name = f"hfbench_web_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine_for(url)
    stop = threading.Event()
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        started = time.perf_counter()
        populate(sessions, args.dags, args.runs, args.tasks, args.history)
        emit(
            {
                "type": "setup",
                "dags": args.dags + 1,
                "runs_per_dag": args.history,
                "grid_runs": args.runs,
                "grid_tasks": args.tasks,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        from hareflow.web.server import make_web_server, serve_until

        with tempfile.TemporaryDirectory() as home:
            settings = load_settings(env={}, overrides={"database_url": url, "home": str(Path(home))})
            server = make_web_server(settings, sessions=sessions, host="127.0.0.1", port=0)
            thread = threading.Thread(target=serve_until, args=(server, stop), daemon=True)
            thread.start()
            browser = Browser(f"http://127.0.0.1:{server.server_port}")
            browser.login("bench", "benchmark")
            pages = [
                (f"dag list (first page of {args.dags + 1} DAGs)", "/dags"),
                (f"dag list API (500 of {args.dags + 1} DAGs)", "/api/v1/dags?limit=500"),
                (f"grid page ({args.runs} runs x {args.tasks} tasks)", f"/dags/{BIG}/grid?runs={args.runs}"),
                (f"grid API ({args.runs} x {args.tasks})", f"/api/v1/dags/{BIG}/grid?limit={args.runs}"),
                ("graph page (25 runs)", f"/dags/{BIG}/graph"),
                ("runs page (50 of 100)", f"/dags/{BIG}/runs"),
                ("run page (50 task instances)", f"/dags/{BIG}/runs/scheduled__{T0.isoformat()}"),
            ]
            for label, path in pages:
                emit(measure(browser, label, urllib.parse.quote(path, safe="/?=&"), args.repeat))
            stop.set()
            thread.join(timeout=10)
    finally:
        stop.set()
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
