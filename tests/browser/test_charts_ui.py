"""The charts in headless Chromium: a finished run's Gantt (one bar per task instance, a click on a
bar opens it), a running run's Gantt growing without a reload, the Durations tab (N points, a
click opens the run) — all under the UI's Content-Security-Policy with no console error.
Screenshots go to docs/screenshots/ when HAREFLOW_SCREENSHOTS names it."""

from __future__ import annotations

import os
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import DagRun, TaskInstance
from sqlalchemy import func, select

from tests.browser.conftest import LiveSystem, poll
from tests.browser.test_ui import SCREENSHOTS_ENV, assert_not_reloaded, mark_no_reload

pytestmark = pytest.mark.browser

PIPELINE_DAG = '''
    """Extracts, fans out over four parts, publishes (which fails its first try), then loads."""
    import time
    from datetime import timedelta
    from hareflow import DAG, task

    with DAG("pipeline_dag", tags=["example"], params={"pause": 0.3}):
        @task
        def extract(ctx):
            time.sleep(float(ctx.params["pause"]))
            return ["north", "south", "east", "west"]

        @task
        def transform(part, ctx):
            time.sleep(float(ctx.params["pause"]) * (1 + len(part) % 3))
            return part.upper()

        @task(retries=1, retry_delay=timedelta(seconds=1))
        def publish(parts, ctx):
            time.sleep(float(ctx.params["pause"]))
            if ctx.try_number == 1:
                raise RuntimeError("the target was busy")
            return len(parts)

        @task
        def load(n, ctx):
            time.sleep(float(ctx.params["pause"]) * 2)
            return n

        load(publish(transform.expand(part=extract())))
'''


@pytest.fixture
def console_errors(open_as: Any) -> Any:
    """``console_errors(page)``: the list the page's console errors (a CSP refusal is one) go to."""
    seen: list[list[str]] = []

    def watch(page: Any) -> list[str]:
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        seen.append(errors)
        return errors

    yield watch
    assert [e for errors in seen for e in errors] == []


@pytest.fixture(scope="module")
def pipeline_run(live_system: LiveSystem) -> str:
    cluster = live_system.cluster
    folder = Path(str(cluster.settings.dags_folder))
    (folder / "pipeline_dag.py").write_text(textwrap.dedent(PIPELINE_DAG))
    cluster.wait_for_dag("pipeline_dag")
    run_id = cluster.trigger("pipeline_dag", conf={"pause": 0.2})
    assert live_system.wait_run("pipeline_dag", run_id) == "success"
    return run_id


def bars(page: Any) -> dict[str, Any]:
    """What the Gantt draws: its row labels and, per row, the spans of the datasets that have one."""
    return page.evaluate(
        """() => {
            const chart = window.hf.charts.gantt;
            const rows = chart.data.labels.map((label, i) => ({label: label, spans: {}}));
            for (const ds of chart.data.datasets)
                ds.data.forEach((span, i) => { if (span) rows[i].spans[ds.key] = span; });
            return {rows: rows, state: document.getElementById('run-state').dataset.state};
        }"""
    )


def click_bar(page: Any, chart: str, dataset_key: str, index: int) -> None:
    """Click the middle of one drawn element of a chart (``hf.charts[chart]``)."""
    x, y = page.evaluate(
        """([name, key, index]) => {
            const chart = window.hf.charts[name];
            const at = chart.data.datasets.findIndex(ds => ds.key === key);
            const point = chart.getDatasetMeta(at).data[index].getCenterPoint();
            const box = chart.canvas.getBoundingClientRect();
            return [box.left + point.x, box.top + point.y];
        }""",
        [chart, dataset_key, index],
    )
    page.mouse.click(x, y)


def screenshots() -> Path | None:
    folder = os.environ.get(SCREENSHOTS_ENV)
    return Path(folder) if folder else None


def test_a_finished_runs_gantt_draws_one_bar_per_task_instance_and_a_click_opens_it(
    open_as: Any, console_errors: Any, live_system: LiveSystem, pipeline_run: str
) -> None:
    with live_system.cluster.sessions() as s:
        instances = s.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == "pipeline_dag", TaskInstance.run_id == pipeline_run
            )
        ).all()
    page = open_as("viewer")
    errors = console_errors(page)
    page.goto(f"{live_system.url}/dags/pipeline_dag/runs/{pipeline_run}")
    page.click("#gantt-link")
    page.wait_for_url(re.compile(r".*/gantt$"))

    drawn = poll(lambda: bars(page), lambda d: len(d["rows"]) == len(instances))
    labels = [r["label"] for r in drawn["rows"]]
    assert labels == [
        "extract",
        "transform [0]",
        "transform [1]",
        "transform [2]",
        "transform [3]",
        "publish · try 2",
        "load",
    ]
    assert all(r["spans"].get("success") for r in drawn["rows"]), drawn  # every instance ran and ended
    waited = [r["spans"] for r in drawn["rows"] if "queued" in r["spans"]]
    assert waited and all(s["queued"][1] == s["success"][0] for s in waited)  # queued, then ran
    legend = page.evaluate("() => window.hf.charts.gantt.legend.legendItems.map(i => i.text)")
    assert "success" in legend and "queued" in legend
    # publish failed its first try: that try is drawn on its row, before the one that succeeded.
    publish = drawn["rows"][labels.index("publish · try 2")]["spans"]
    assert publish["earlier:0"][1] <= publish["success"][0], publish
    assert legend.count("earlier tries") == 1
    assert [r["label"] for r in drawn["rows"] if "earlier:0" in r["spans"]] == ["publish · try 2"]
    shots = screenshots()
    if shots:
        page.set_viewport_size({"width": 1400, "height": 900})
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "gantt.png"), full_page=True)
        page.set_viewport_size({"width": 800, "height": 900})
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "gantt_narrow.png"), full_page=True)
        page.set_viewport_size({"width": 1360, "height": 820})
        page.wait_for_timeout(300)

    click_bar(page, "gantt", "success", labels.index("transform [2]"))
    page.wait_for_url(re.compile(r".*/tasks/transform\?map_index=2$"))
    assert errors == []


def test_a_running_runs_gantt_grows_and_gains_bars_without_a_reload(
    open_as: Any, console_errors: Any, live_system: LiveSystem
) -> None:
    run_id = live_system.cluster.trigger("live_dag", conf={"lines": 14, "delay": 0.4})
    page = open_as("viewer")
    errors = console_errors(page)
    page.goto(f"{live_system.url}/dags/live_dag/runs/{run_id}/gantt")
    mark_no_reload(page)

    def row(data: dict[str, Any], label: str) -> dict[str, Any]:
        return next((r for r in data["rows"] if r["label"] == label), {"spans": {}})

    first = poll(lambda: bars(page), lambda d: "running" in row(d, "slow_logger")["spans"])
    assert not row(first, "done")["spans"]  # not started: a row without a bar
    start, end = row(first, "slow_logger")["spans"]["running"]
    grown = poll(
        lambda: bars(page),
        lambda d: (
            "running" in row(d, "slow_logger")["spans"]
            and row(d, "slow_logger")["spans"]["running"][1] > end + 1.0
        ),
        timeout=10,
    )
    assert row(grown, "slow_logger")["spans"]["running"][0] == start  # the same bar, longer
    # a bar that was not there appears, and the run's badge follows
    final = poll(lambda: bars(page), lambda d: "success" in row(d, "done")["spans"], timeout=60)
    assert poll(lambda: bars(page), lambda d: d["state"] == "success")["state"] == "success"
    assert row(final, "slow_logger")["spans"]["success"][1] > end + 1.0
    assert_not_reloaded(page)
    assert errors == []


def _history(live: LiveSystem, dag_id: str, count: int) -> None:
    """``count`` finished runs of ``dag_id`` in the past, with its two tasks, straight into the
    metastore (a long history without waiting for it)."""
    with live.cluster.sessions() as s, s.begin():
        for day in range(count):
            logical = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=day)
            run = DagRun(
                dag_id=dag_id,
                run_id=f"scheduled__{logical.isoformat()}",
                run_type="scheduled",
                state="failed" if day % 7 == 3 else "success",
                logical_date=logical,
                interval_key=logical,
                data_interval_start=logical,
                data_interval_end=logical,
                conf={},
                queued_at=logical,
                start_date=logical + timedelta(seconds=2 + day % 3),
                end_date=logical + timedelta(seconds=30 + (day * 7) % 40),
            )
            s.add(run)
            s.flush()
            for n, task_id in enumerate(("build", "publish")):
                begin = logical + timedelta(seconds=3 + day % 3 + n * 12)
                s.add(
                    TaskInstance(
                        run_pk=run.id,
                        dag_id=dag_id,
                        run_id=run.run_id,
                        task_id=task_id,
                        map_index=-1,
                        state="success",
                        try_number=1,
                        max_tries=1,
                        queue="default",
                        queued_at=begin - timedelta(seconds=1 + day % 2),
                        start_date=begin,
                        end_date=begin + timedelta(seconds=8 + (day * (n + 3)) % 9),
                    )
                )


def test_the_durations_tab_shows_the_chosen_number_of_runs_and_a_click_opens_the_run(
    open_as: Any, console_errors: Any, live_system: LiveSystem
) -> None:
    _history(live_system, "daily_report", 40)
    with live_system.cluster.sessions() as s:
        total = s.scalar(select(func.count()).select_from(DagRun).where(DagRun.dag_id == "daily_report"))
    page = open_as("viewer")
    errors = console_errors(page)
    page.goto(f"{live_system.url}/dags/daily_report/grid")
    page.click(".tabs a:text-is('Durations')")
    page.wait_for_url("**/dags/daily_report/durations")

    def points() -> list[int]:
        return page.evaluate(
            "() => [window.hf.charts.runs.data.labels.length, window.hf.charts.tasks.data.datasets.length,"
            " window.hf.charts.tasks.data.datasets[0].data.length]"
        )

    assert poll(points, lambda p: p[0] == 25) == [25, 2, 25]
    shots = screenshots()
    if shots:
        page.set_viewport_size({"width": 1400, "height": 900})
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "durations.png"), full_page=True)
        page.set_viewport_size({"width": 1360, "height": 820})
    page.click(".pills a:text-is('50')")
    page.wait_for_url("**/durations?runs=50")
    assert poll(points, lambda p: p[0] == min(total, 50))[0] == min(total, 50)

    page.fill("#task-filter", "pub")
    assert poll(points, lambda p: p[1] == 1)[1] == 1
    point = page.evaluate("() => window.hf.charts.tasks.data.datasets[0].data.findLastIndex(v => v !== null)")
    click_bar(page, "tasks", "publish", point)  # a point of the task chart opens that task instance
    page.wait_for_url(re.compile(r".*/dags/daily_report/runs/[^/]+/tasks/publish$"))
    page.go_back()
    page.wait_for_url("**/durations?runs=50")
    poll(points, lambda p: p[0] == min(total, 50))
    latest = page.evaluate("() => window.hf.charts.runs.data.labels.length") - 1
    run_id = page.evaluate(
        "i => JSON.parse(document.getElementById('durations-data').textContent).runs[i].run_id", latest
    )
    key = page.evaluate(
        "i => window.hf.charts.runs.data.datasets.find(ds => ds.data[i] !== null && ds.key !== 'queued').key",
        latest,
    )
    click_bar(page, "runs", key, latest)
    page.wait_for_url(re.compile(r".*/dags/daily_report/runs/[^/]+$"))
    assert page.inner_text("h2 .mono") == run_id
    assert errors == []


def test_the_durations_tab_gains_a_run_live_and_its_bar_when_it_finishes(
    open_as: Any, console_errors: Any, live_system: LiveSystem
) -> None:
    page = open_as("viewer")
    errors = console_errors(page)
    page.goto(f"{live_system.url}/dags/flaky_dag/durations")
    mark_no_reload(page)

    def last_run() -> list[Any]:
        return page.evaluate(
            """() => { const c = window.hf.charts.runs; const i = c.data.labels.length - 1;
                const failed = c.data.datasets.find(ds => ds.key === 'failed');
                return [c.data.labels.length, i >= 0 && !!failed && failed.data[i] !== null]; }"""
        )

    before = poll(last_run, lambda r: r[0] >= 0)[0]
    run_id = live_system.cluster.trigger("flaky_dag")
    assert poll(last_run, lambda r: r[0] == before + 1)[0] == before + 1  # the new run, while it runs
    assert live_system.wait_run("flaky_dag", run_id) == "failed"
    assert poll(last_run, lambda r: r[1] is True)[1] is True  # its bar, in the failed colour, once it ended
    assert_not_reloaded(page)
    assert errors == []
