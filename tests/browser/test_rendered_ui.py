"""The task-instance page's Rendered section follows the try live, in headless Chromium: a try's
rendered template fields appear when it ends, without a reload."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import TaskInstance
from sqlalchemy import select

from tests.browser.conftest import LiveSystem, poll
from tests.browser.test_ui import assert_not_reloaded, mark_no_reload

pytestmark = pytest.mark.browser

RENDERED_DAG = '''
    """A templated command that takes a few seconds."""
    from hareflow import DAG, BashTask

    with DAG("rendered_dag", params={"region": "eu"}):
        BashTask("report", "sleep 4; echo report for {{ params.region }} on {{ ds }}",
                 env={"REGION": "{{ params.region }}"})
'''


def _state(live_system: LiveSystem, run_id: str) -> str | None:
    with live_system.cluster.sessions() as session:
        return session.scalar(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == "rendered_dag",
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == "report",
            )
        )


def test_the_rendered_fields_appear_when_the_try_ends_without_a_reload(
    open_as: Any, live_system: LiveSystem
) -> None:
    cluster = live_system.cluster
    (Path(str(cluster.settings.dags_folder)) / "rendered_dag.py").write_text(textwrap.dedent(RENDERED_DAG))
    cluster.wait_for_dag("rendered_dag")
    run_id = cluster.trigger("rendered_dag", conf={"region": "north"})
    poll(lambda: _state(live_system, run_id), lambda s: s == "running", what="the try running")

    page = open_as("viewer")
    page.goto(f"{live_system.url}/dags/rendered_dag/runs/{run_id}/tasks/report")
    page.wait_for_selector("#ti-view")
    mark_no_reload(page)
    assert page.locator("#ti-rendered-box").is_hidden()  # nothing rendered is stored before the try ends

    page.wait_for_selector('#ti-state[data-state="success"]', timeout=30_000)
    page.wait_for_selector("#ti-rendered-box", state="visible")
    command = page.inner_text('#ti-rendered pre[data-field="bash_command"]')
    env = page.inner_text('#ti-rendered pre[data-field="env"]')

    assert command.startswith("sleep 4; echo report for north on ") and "{{" not in command
    assert '"REGION": "north"' in env
    assert_not_reloaded(page)
    assert live_system.wait_run("rendered_dag", run_id) == "success"
