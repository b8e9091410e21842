"""A sensor in reschedule mode, between two pokes, in headless Chromium: its own colour and legend
entry in the grid and the graph, and its next poke on the task-instance page. A screenshot goes to
docs/screenshots/sensor_reschedule.png when HAREFLOW_SCREENSHOTS names the folder."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import LiveSystem
from tests.browser.test_ui import SCREENSHOTS_ENV
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.browser

SENSOR_DAG = '''
    """Waits for the day's export file, giving its worker slot back between pokes."""
    from hareflow import DAG, FileSensor, task

    with DAG("sensor_dag", tags=["example"]):
        @task
        def prepare():
            return "ready"

        wait = FileSensor(task_id="wait_for_export", filepath={flag!r}, mode="reschedule",
                          poke_interval=4, timeout=600)

        @task
        def load():
            return "loaded"

        prepare() >> wait >> load()
'''


@pytest.fixture(scope="module")
def waiting_run(live_system: LiveSystem, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cluster = live_system.cluster
    flag = tmp_path_factory.mktemp("sensor") / "export.csv"
    folder = Path(str(cluster.settings.dags_folder))
    (folder / "sensor_dag.py").write_text(textwrap.dedent(SENSOR_DAG).format(flag=str(flag)))
    cluster.wait_for_dag("sensor_dag")
    run_id = cluster.trigger("sensor_dag")

    def rescheduled() -> bool:
        from hareflow.common.db import TaskInstance
        from sqlalchemy import select

        with cluster.sessions() as session:
            ti = session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == "sensor_dag",
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == "wait_for_export",
                )
            ).one_or_none()
            return ti is not None and ti.state == "up_for_reschedule"

    wait_until(rescheduled, message="the sensor rescheduled")
    yield run_id
    flag.write_text("done")  # let the run finish
    assert live_system.wait_run("sensor_dag", run_id) == "success"


def test_a_rescheduled_sensor_shows_its_own_state_in_the_grid_graph_and_task_page(
    open_as: Any, live_system: LiveSystem, waiting_run: str, tmp_path: Path
) -> None:
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/sensor_dag/grid")
    page.wait_for_selector('.task-row[data-task="wait_for_export"] > .cell[data-state="up_for_reschedule"]')
    cell = page.locator('.task-row[data-task="wait_for_export"] > .cell').first
    colour = cell.evaluate("el => getComputedStyle(el).backgroundColor")
    assert colour == "rgb(63, 193, 201)"  # --s-up_for_reschedule, not up_for_retry's or queued's
    assert "up_for_reschedule" in page.inner_text("#grid-legend")
    page.click('.task-row[data-task="wait_for_export"] > .cell')
    page.wait_for_selector("#grid-detail h4")
    page.screenshot(path=str(target / "sensor_reschedule.png"), full_page=True)

    page.goto(f"{live_system.url}/dags/sensor_dag/graph?run_id={waiting_run}")
    page.wait_for_selector('g.node.s-up_for_reschedule[data-task="wait_for_export"]')
    assert "up_for_reschedule" in page.inner_text(".graph-toolbar .legend")

    page.goto(f"{live_system.url}/dags/sensor_dag/runs/{waiting_run}/tasks/wait_for_export")
    page.wait_for_selector("#ti-meta")
    text = page.inner_text("#ti-meta")
    assert "up_for_reschedule" in page.inner_text(".ti-title") or "queued" in page.inner_text(".ti-title")
    assert "Reschedules" in text
    assert "Rescheduling: the sensor pokes again" in page.inner_text("#log")
