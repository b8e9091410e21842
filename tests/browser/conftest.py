"""A whole system for the browser: PostgreSQL, the scheduler and a worker (``Cluster``, local
executor), the web server on a free port, and headless Chromium driven by Playwright.

Chromium is the system one (``/usr/bin/chromium``; ``playwright install`` cannot download browsers
here). Without it or the ``playwright`` package the tests skip, unless HAREFLOW_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hareflow.cluster import Cluster, WorkerSpec
from tests.conftest import PG_URL, REQUIRE_SERVICES, _temporary_database, fast_settings
from tests.web.conftest import PASSWORD, add_user

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

DAG_FILES = {
    "live_dag.py": '''
        """Logs a line at a time, so a browser can watch the log and the grid change."""
        import time
        from datetime import datetime
        from hareflow import DAG, BashTask, task

        with DAG("live_dag", schedule=None, start_date=datetime(2026, 1, 1),
                 params={"lines": 6, "delay": 0.4}, tags=["demo"], owner="ana",
                 description="Logs a line at a time"):

            @task
            def prepare(ctx):
                print("preparing", flush=True)
                return int(ctx.params["lines"])

            @task
            def slow_logger(n, ctx):
                for i in range(n):
                    print(f"line {i + 1} of {n}", flush=True)
                    time.sleep(float(ctx.params["delay"]))
                return {"lines": n}

            @task
            def check(result):
                return result["lines"]

            done = BashTask("done", "echo finished")
            check(slow_logger(prepare())) >> done
        ''',
    "flaky_dag.py": '''
        """Fans out; one branch fails, so its downstream task never runs."""
        from datetime import datetime
        from hareflow import DAG, task

        with DAG("flaky_dag", schedule=None, start_date=datetime(2026, 1, 1), tags=["demo", "errors"]):

            @task
            def start():
                return 3

            @task
            def ok_branch(n):
                return n * 2

            @task
            def bad_branch(n):
                raise ValueError(f"cannot handle {n} items")

            @task
            def join(a, b):
                return a + b

            n = start()
            join(ok_branch(n), bad_branch(n))
        ''',
    "daily_report.py": '''
        """A daily DAG, for backfills."""
        from datetime import datetime
        from hareflow import DAG, BashTask

        with DAG("daily_report", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False,
                 tags=["reports"], owner="finance"):
            BashTask("build", "echo building the report") >> BashTask("publish", "echo published")
        ''',
    "grouped_dag.py": '''
        """Extract, check and load in task groups; one check fails, so its group shows failed."""
        from datetime import datetime
        from hareflow import BashTask, TaskGroup, chain, dag, task

        @dag(schedule=None, start_date=datetime(2026, 1, 1), tags=["demo", "groups"])
        def grouped_dag():
            with TaskGroup("extract", tooltip="Read every source"):
                with TaskGroup("db"):
                    orders = BashTask("orders", "echo 3")
                    customers = BashTask("customers", "echo 2")
                api = BashTask("api", "echo 1")

            with TaskGroup("checks", tooltip="Data quality"):
                @task
                def not_empty(n):
                    return int(n) > 0

                @task
                def fresh():
                    raise ValueError("orders are two days old")

                passed = not_empty(orders.output)
                stale = fresh()

            load = BashTask("load", "echo loaded", trigger_rule="all_done")
            chain([orders, customers], api, [passed, stale], load)

        grouped_dag()
        ''',
    "broken_dag.py": """
        from hareflow import DAG
        with DAG("broken", schedule="not a cron"):
            pass
        """,
}


def browser_available() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        missing(f"the playwright package is not installed ({exc})")
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} is missing (apt-get install chromium)")


def missing(message: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (HAREFLOW_REQUIRE_SERVICES=1)")
    pytest.skip(message)


#: A Playwright selector engine for one square of the grid, ``grid-cell={"run": ..., "task": ...}``
#: (or ``"group"`` for a group's square, ``"index"`` for a mapped instance's): squares carry no run
#: id of their own (a run is a column), so the engine finds the run's column and the row's square.
GRID_CELL_ENGINE = """({
  query(root, selector) { return this.queryAll(root, selector)[0] || null; },
  queryAll(root, selector) {
    const want = JSON.parse(selector);
    const doc = root.ownerDocument || root;
    const heads = Array.from(doc.querySelectorAll("#gridtable .run-col"));
    const col = heads.findIndex(h => h.dataset.run === want.run);
    if (col < 0) return [];
    let row;
    if (want.group) row = '.group-row[data-group="' + CSS.escape(want.group) + '"]';
    else if (want.index !== undefined && want.index !== null) {
      row = '.instance-row[data-task="' + CSS.escape(want.task) + '"][data-map-index="' + want.index + '"]';
    } else row = '.task-row[data-task="' + CSS.escape(want.task) + '"]';
    const found = doc.querySelector("#gridtable " + row);
    const cell = found && found.children[col + 1];
    return cell ? [cell] : [];
  }
})"""


def grid_cell(
    run_id: str, task_id: str | None = None, *, group: str | None = None, index: int | None = None
) -> str:
    """The selector of one grid square (see ``GRID_CELL_ENGINE``)."""
    import json

    return "grid-cell=" + json.dumps({"run": run_id, "task": task_id, "group": group, "index": index})


def grid_head(run_id: str) -> str:
    return f'#gridtable .run-col[data-run="{run_id}"]'


@dataclass
class LiveSystem:
    url: str
    cluster: Cluster

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 60.0) -> str:
        return self.cluster.wait_for_run(dag_id, run_id, timeout=timeout)


@pytest.fixture(scope="module")
def live_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSystem]:
    browser_available()
    from hareflow.web.server import make_web_server, serve_until

    tmp = tmp_path_factory.mktemp("browser")
    dags = tmp / "dags"
    dags.mkdir()
    for name, source in DAG_FILES.items():
        (dags / name).write_text(textwrap.dedent(source))
    database = _temporary_database(PG_URL, f"hft_browser_{uuid.uuid4().hex[:10]}")
    url = next(database)
    settings = fast_settings(
        tmp, database_url=url, dags_folder=str(dags), secret_key="browser-tests-secret-0123"
    )
    cluster = Cluster(settings, workers=[WorkerSpec(concurrency=4, name="worker-1")])
    stop = threading.Event()
    server_thread = None
    try:
        cluster.migrate()
        for role in ("admin", "op", "viewer"):
            add_user(cluster.sessions, role, role)
        cluster.start()
        for dag_id in ("live_dag", "flaky_dag", "daily_report", "grouped_dag"):
            cluster.wait_for_dag(dag_id)
        server = make_web_server(settings, sessions=cluster.sessions, executor=cluster._shared, port=0)
        server_thread = threading.Thread(target=serve_until, args=(server, stop), daemon=True)
        server_thread.start()
        yield LiveSystem(url=f"http://127.0.0.1:{server.server_port}", cluster=cluster)
    finally:
        stop.set()
        if server_thread is not None:
            server_thread.join(timeout=10)
        cluster.stop()
        next(database, None)


@pytest.fixture(scope="module")
def browser(live_system: LiveSystem) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        p.selectors.register("grid-cell", GRID_CELL_ENGINE)
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_as(browser: Any, live_system: LiveSystem) -> Iterator[Any]:
    """``open_as(role)``: a new browser page logged in as that role (closed after the test)."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_page(role: str) -> Any:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(live_system.url + "/login")
        page.fill("input[name=username]", role)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dags")
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == [], f"JavaScript errors: {errors}"


def now() -> datetime:
    return datetime.now(UTC)


def delivered(page: Any, read: Callable[[], Any]) -> Callable[[], Any]:
    """``read``, called once Playwright has delivered the page's pending events to the handlers
    given to ``page.on`` (its sync API delivers them only while one of its own calls runs, so a
    loop that only reads a list those handlers fill would never see it grow)."""

    def after_events() -> Any:
        page.wait_for_timeout(20)
        return read()

    return after_events


def poll(
    read: Callable[[], Any],
    until: Callable[[Any], bool] = bool,
    timeout: float = 30.0,
    what: str | None = None,
) -> Any:
    """Call ``read`` until ``until`` holds for its value (by default: until it is truthy); return
    that value, or fail after ``timeout`` naming ``what``. (``page.wait_for_function`` with a
    string is an ``eval``, which the pages' CSP refuses.)"""
    deadline = time.monotonic() + timeout
    value = read()
    while not until(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'the condition'}: still {value!r} after {timeout} s")
        time.sleep(0.05)
        value = read()
    return value
