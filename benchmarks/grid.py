"""The DAG grid in a real browser: 100 runs x 500 tasks; one JSON object per line on stdout.

    python -m benchmarks.grid [--runs 100] [--tasks 500] [--repeat 7]

Builds a temporary PostgreSQL database (``HAREFLOW_TEST_DATABASE_URL``, default the local
``postgres`` superuser) holding one DAG of ``--tasks`` tasks (the last one mapped into 8 instances)
with ``--runs`` runs, the newest one running; serves the application with the real server and the
local executor on a free port; drives headless Chromium (``/usr/bin/chromium``) with Playwright and
prints the medians of:

- ``json``: ``GET /api/v1/dags/<dag>/grid`` from the page (request to last byte) and its size,
  in the full form (``states``: run -> task -> state) and the compact one the page uses
  (``?compact=true``: a letter per task and run), where the server has it;
- ``first_render``: navigation start to the grid's table in the DOM (``dom``) and to the frame
  after it (``painted``: a ``requestAnimationFrame`` then a task, so layout and paint are done),
  with the part spent in grid.js (``script``: its ``hareflow:grid-start`` to
  ``hareflow:grid-rendered`` marks, where it has them: the first screen's rows), when it started,
  when the HTML had arrived, and when the last row was in (``complete``: the grid adds the rows
  below the first screen after its first frame; its ``hareflow:grid-complete`` mark);
- ``live_event``: one state event of a task instance, from its arrival on the socket to the
  grid's DOM showing the new state (``apply``), and from its publication on the server
  (``end_to_end``: the relay batches events for up to 50 ms); once for a plain task and once for
  an instance of the mapped task. Each event first updates the metastore, as the results
  consumer does, so a page that refetches sees the new state too. ``grid_requests`` counts the
  grid JSON requests the events caused.

The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hareflow.common.broker.local import LocalExecutor
from hareflow.common.config import load_settings
from hareflow.common.dag.serialize import SerializedDag, SerializedTask, dag_hash
from hareflow.common.db import Dag, DagRun, TaskInstance, User, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.common.messages import StateEvent
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.engine import make_url
from werkzeug.security import generate_password_hash

from benchmarks.env import plain_task

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
CHROMIUM = "/usr/bin/chromium"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAG_ID = "grid_bench"
MAPPED = "fan_out"
INSTANCES = 8
RUN_TYPES = ("scheduled", "scheduled", "scheduled", "manual", "backfill")

#: Installed before any page script: when the grid's table appears, note the time, then the time
#: after the next frame (layout and paint of the first screen done).
FIRST_RENDER = """
window.__grid = {};
new MutationObserver(function (list, observer) {
  if (!document.getElementById("gridtable")) return;
  observer.disconnect();
  window.__grid.dom = performance.now();
  requestAnimationFrame(function () {
    setTimeout(function () { window.__grid.painted = performance.now(); }, 0);
  });
}).observe(document, { childList: true, subtree: true });
"""

#: True until the first frame is painted and every row is in (grid.js sets ``#grid[data-rendered]``).
NOT_DRAWN = "window.__grid.painted === undefined || document.getElementById('grid').dataset.rendered === ''"

#: The state the grid shows for one cell, in the DOM of this version or the previous one.
CELL_STATE = """
window.__cellState = function (runId, taskId) {
  const old = document.querySelector('#grid span.cell[data-run="' + CSS.escape(runId) + '"][data-task="'
    + CSS.escape(taskId) + '"]:not([data-map-index])');
  if (old) return old.dataset.state;
  const heads = Array.from(document.querySelectorAll("#gridtable .run-col"));
  const col = heads.findIndex(function (h) { return h.dataset.run === runId; });
  const row = document.querySelector('#gridtable .grid-row[data-task="' + CSS.escape(taskId) + '"]');
  if (col < 0 || !row) return null;
  const cell = row.querySelectorAll(".cell")[col];
  return cell ? cell.dataset.state : null;
};
"""

#: Wait for the next event batch on the page's socket and for ``taskId``'s cell in ``runId`` to
#: show ``state``; resolves with the arrival time and the time the DOM showed it.
WATCH = """
([runId, taskId, state]) => { window.__watch = new Promise(function (resolve) {
  const result = {};
  const check = function () {
    if (result.arrived !== undefined && window.__cellState(runId, taskId) === state) {
      result.applied = performance.now();
      result.applied_epoch = performance.timeOrigin + result.applied;
      observer.disconnect();
      resolve(result);
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.getElementById("grid"), { subtree: true, childList: true, attributes: true });
  const onAny = function () {
    if (result.arrived !== undefined) return;
    result.arrived = performance.now();
    window.hf.socket.offAny(onAny);
    Promise.resolve().then(check);
  };
  window.hf.socket.prependAny(onAny);
}); }
"""


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def _task(task_id: str, upstream: tuple[str, ...]) -> SerializedTask:
    return plain_task(task_id, upstream)  # type: ignore[no-any-return]


def serialized(n_tasks: int) -> dict[str, Any]:
    tasks = [_task(f"task_{i:03d}", (f"task_{i - 1:03d}",) if i % 5 else ()) for i in range(n_tasks - 1)]
    tasks.append(_task(MAPPED, (tasks[-1].task_id,)))
    data = SerializedDag(
        dag_id=DAG_ID,
        fileloc=f"/dags/{DAG_ID}.py",
        lineno=1,
        schedule="@daily",
        timezone="UTC",
        start_date=T0,
        end_date=None,
        catchup=False,
        max_active_runs=16,
        max_active_tasks=16,
        params={},
        tags=("bench",),
        owner="bench",
        description="the grid benchmark's DAG",
        doc_md=None,
        tasks=tuple(tasks),
    ).to_dict()
    data["tasks"][-1]["expand"] = {"kind": "product", "args": [{"name": "x", "task": tasks[-2].task_id}]}
    return data


def populate(sessions: Any, n_runs: int, n_tasks: int) -> tuple[str, str]:
    """The DAG and its runs; returns the newest run's id and a plain task still running in it."""
    now = datetime.now(UTC)
    data = serialized(n_tasks)
    with sessions() as s, s.begin():
        s.add(
            User(
                username="bench",
                password_hash=generate_password_hash("benchmark"),
                role="admin",
                created_at=now,
            )
        )
        s.add(
            Dag(
                dag_id=DAG_ID,
                fileloc=data["fileloc"],
                is_paused=False,
                is_active=True,
                schedule=data["schedule"],
                timezone="UTC",
                owner="bench",
                tags=["bench"],
                description=data["description"],
                max_active_runs=16,
                max_active_tasks=16,
                serialized=data,
                dag_hash=dag_hash(data),
                next_logical_date=now,
                next_run_after=now,
                last_parsed_at=now,
                created_at=now,
            )
        )
        runs = []
        for r in range(n_runs):
            when = T0 + timedelta(days=r)
            last = r == n_runs - 1
            kind = RUN_TYPES[r % len(RUN_TYPES)]
            runs.append(
                {
                    "dag_id": DAG_ID,
                    "run_id": f"{kind}__{when.isoformat()}",
                    "run_type": kind,
                    "state": "running" if last else ("failed" if r % 7 == 3 else "success"),
                    "logical_date": when,
                    "interval_key": when if kind == "scheduled" else None,
                    "data_interval_start": when,
                    "data_interval_end": when + timedelta(days=1),
                    "conf": {},
                    "queued_at": when,
                    "start_date": when + timedelta(seconds=5),
                    "end_date": None if last else when + timedelta(seconds=60 + 7 * (r % 13)),
                }
            )
        s.execute(insert(DagRun), runs)
        pks = s.execute(select(DagRun.id, DagRun.run_id, DagRun.state).where(DagRun.dag_id == DAG_ID)).all()
        tis = []
        for pk, run_id, run_state in pks:
            for i, t in enumerate(data["tasks"]):
                state = "success"
                if run_state == "failed" and i >= n_tasks - 3:
                    state = "failed" if i == n_tasks - 3 else "upstream_failed"
                if run_state == "running":
                    state = "success" if i < n_tasks // 2 else ("running" if i == n_tasks // 2 else "none")
                if t["task_id"] == MAPPED:
                    for index in range(INSTANCES):
                        tis.append(_ti(pk, run_id, MAPPED, index, "success"))
                else:
                    tis.append(_ti(pk, run_id, t["task_id"], -1, state))
        s.execute(insert(TaskInstance), tis)
        newest = s.scalar(select(DagRun.run_id).where(DagRun.dag_id == DAG_ID, DagRun.state == "running"))
    assert newest is not None
    return newest, data["tasks"][n_tasks // 2]["task_id"]


def _ti(run_pk: int, run_id: str, task_id: str, map_index: int, state: str) -> dict[str, Any]:
    return {
        "run_pk": run_pk,
        "dag_id": DAG_ID,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "state": state,
        "try_number": 0 if state == "none" else 1,
        "max_tries": 1,
        "queue": "default",
        "priority": 1,
        "pool_slots": 1,
        "hostname": "bench-host",
        "start_date": T0,
        "end_date": T0,
        "duration": 1.0,
    }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def measure_json(page: Any, url: str, repeat: int, form: str) -> dict[str, Any]:
    timings, size = [], 0
    for _ in range(repeat + 1):  # the first is a warm-up
        took, size = page.evaluate(
            """async (url) => { const t = performance.now(); const r = await fetch(url);
               const body = await r.text(); return [performance.now() - t, body.length]; }""",
            url,
        )
        timings.append(took)
    return {
        "type": "json",
        "form": form,
        "median_ms": median(timings[1:]),
        "min_ms": round(min(timings[1:]), 1),
        "bytes": size,
    }


def measure_first_render(page: Any, url: str, repeat: int) -> dict[str, Any]:
    dom, painted, html, script, started, complete = [], [], [], [], [], []
    for i in range(repeat + 1):
        page.goto(url)
        deadline = time.monotonic() + 30
        while page.evaluate(NOT_DRAWN):
            if time.monotonic() > deadline:
                raise RuntimeError("the grid did not render within 30 s")
            time.sleep(0.02)
        times = page.evaluate(
            """[window.__grid.dom, window.__grid.painted,
                performance.getEntriesByType('navigation')[0].responseEnd,
                (performance.getEntriesByName('hareflow:grid-rendered')[0] || {}).startTime -
                (performance.getEntriesByName('hareflow:grid-start')[0] || {}).startTime,
                (performance.getEntriesByName('hareflow:grid-start')[0] || {}).startTime,
                (performance.getEntriesByName('hareflow:grid-complete')[0] || {}).startTime]"""
        )
        if i:  # the first is a warm-up
            dom.append(times[0])
            painted.append(times[1])
            html.append(times[2])
            if times[3] is not None:
                script.append(times[3])
                started.append(times[4])
            if times[5] is not None:
                complete.append(times[5])
    size = page.evaluate("document.documentElement.outerHTML.length")
    return {
        "type": "first_render",
        "dom_ms": median(dom),
        "painted_ms": median(painted),
        "html_received_ms": median(html),
        "script_started_ms": median(started) if started else None,
        "script_ms": median(script) if script else None,
        "complete_ms": median(complete) if complete else None,
        "page_bytes": size,
        "cells": page.evaluate("document.querySelectorAll('#grid .cell').length"),
    }


def wait_connected(page: Any) -> None:
    deadline = time.monotonic() + 30
    while not page.evaluate("!!(window.hf && window.hf.socket && window.hf.socket.connected)"):
        if time.monotonic() > deadline:
            raise RuntimeError("the page's socket did not connect")
        time.sleep(0.05)
    page.wait_for_load_state("networkidle")
    time.sleep(1.0)  # the resync after connecting refetches once (debounced): let it land


def measure_events(
    page: Any, sessions: Any, executor: LocalExecutor, run_id: str, task_id: str, map_index: int, repeat: int
) -> dict[str, Any]:
    """Flip one task instance between two states ``repeat`` times, as the results consumer would."""
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/grid" in r.url and "/api/" in r.url else None)
    wait_connected(page)
    requests.clear()
    applied, end_to_end = [], []
    with sessions() as s:
        run_pk = s.scalar(select(DagRun.id).where(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id))
    for i in range(repeat + 1):
        state = "success" if i % 2 == 0 else "running"
        shown = state  # a mapped task's summary too: running while one instance is
        with sessions() as s, s.begin():
            s.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.run_pk == run_pk,
                    TaskInstance.task_id == task_id,
                    TaskInstance.map_index == map_index,
                )
                .values(state=state)
            )
        page.evaluate(WATCH, [run_id, task_id, shown])
        published = time.time()
        executor.publish_events(
            [
                StateEvent(
                    kind="task",
                    dag_id=DAG_ID,
                    run_id=run_id,
                    task_id=task_id,
                    map_index=map_index,
                    try_number=1,
                    state=state,
                    at=published,
                )
            ]
        )
        result = page.evaluate("window.__watch")
        if i:
            applied.append(result["applied"] - result["arrived"])
            end_to_end.append(result["applied_epoch"] - published * 1000)
        page.wait_for_load_state("networkidle")
        time.sleep(0.3)
    return {
        "type": "live_event",
        "task": "mapped instance" if map_index >= 0 else "plain task",
        "apply_ms": median(applied),
        "end_to_end_ms": median(end_to_end),
        "events": repeat + 1,
        "grid_requests": len(requests),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    admin_url = os.environ.get("HAREFLOW_TEST_DATABASE_URL", ADMIN_URL)
    name = f"hfbench_grid_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine_for(url)
    stop = threading.Event()
    executor = LocalExecutor()
    executor.start()
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        started = time.perf_counter()
        run_id, task_id = populate(sessions, args.runs, args.tasks)
        emit(
            {
                "type": "setup",
                "runs": args.runs,
                "tasks": args.tasks,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        from hareflow.web.server import make_web_server, serve_until

        with tempfile.TemporaryDirectory() as home:
            settings = load_settings(env={}, overrides={"database_url": url, "home": str(Path(home))})
            server = make_web_server(settings, sessions=sessions, executor=executor, host="127.0.0.1", port=0)
            thread = threading.Thread(target=serve_until, args=(server, stop), daemon=True)
            thread.start()
            base = f"http://127.0.0.1:{server.server_port}"
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM,
                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
                )
                try:
                    context = browser.new_context(viewport={"width": 1400, "height": 900})
                    context.add_init_script(FIRST_RENDER + CELL_STATE)
                    page = context.new_page()
                    page.set_default_timeout(60_000)
                    page.goto(base + "/login")
                    page.fill("input[name=username]", "bench")
                    page.fill("input[name=password]", "benchmark")
                    page.click("button[type=submit]")
                    page.wait_for_url("**/dags")
                    grid_page = f"{base}/dags/{DAG_ID}/grid?runs={args.runs}"
                    api = f"/api/v1/dags/{DAG_ID}/grid?limit={args.runs}"
                    emit(measure_json(page, api, args.repeat, "full"))
                    emit(measure_json(page, api + "&compact=true", args.repeat, "compact"))
                    emit(measure_first_render(page, grid_page, args.repeat))
                    page.goto(grid_page)
                    emit(measure_events(page, sessions, executor, run_id, task_id, -1, args.repeat))
                    page.goto(grid_page)
                    emit(measure_events(page, sessions, executor, run_id, MAPPED, 0, args.repeat))
                finally:
                    browser.close()
            stop.set()
            thread.join(timeout=10)
    finally:
        stop.set()
        executor.close()
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
