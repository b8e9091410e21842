"""The Dead letters page in a browser: a malformed task message appears without a reload, and the
Requeue and Discard buttons work. Screenshots (with HAREFLOW_SCREENSHOTS set): deadletters.png at
1400x900 and deadletters_narrow.png 800 px wide."""

from __future__ import annotations

import collections
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from hareflow.common.broker.local import LocalExecutor

from tests.browser.conftest import LiveSystem
from tests.browser.test_ui import SCREENSHOTS_ENV, assert_not_reloaded, mark_no_reload


def send_to_task_queue(
    executor: LocalExecutor, body: bytes, queue: str = "default", delivered: int = 0
) -> None:
    """Put a raw body in an in-process task queue, as a foreign publisher would in a broker's
    (``delivered``: times it was delivered already): the worker consuming it finds it malformed,
    or delivered too often, and dead-letters it."""
    with executor._cond:
        executor._state.queues.setdefault(queue, collections.deque()).append((body, delivered))
        executor._cond.notify_all()


def over_delivered_task(live_system: LiveSystem) -> bytes:
    """A task message of flaky_dag's first task (whose run has finished), as if it had killed its
    worker max_deliveries times: it is dead-lettered, not run."""
    from hareflow.common.db import TaskInstance
    from hareflow.common.messages import TaskKey, TaskMessage
    from sqlalchemy import select

    run_id = live_system.cluster.trigger("flaky_dag")
    live_system.wait_run("flaky_dag", run_id)
    with live_system.cluster.sessions() as s:
        ti = s.scalars(
            select(TaskInstance).where(TaskInstance.run_id == run_id, TaskInstance.task_id == "start")
        ).one()
        # The next try: a copy of the try this worker ran would be settled with that try instead.
        key = TaskKey(ti.id, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number + 1)
    folder = Path(live_system.cluster.settings.dags_folder)
    return TaskMessage(
        key=key,
        max_tries=1,
        dag_file=str((folder / "flaky_dag.py").resolve()),
        queue="default",
        execution_timeout=None,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
    ).encode()


def row_selector(text: str) -> str:
    return f"#deadletters-table tr[data-dead-letter]:has-text('{text}')"


def wait_for_rows(page: Any, selector: str, count: int, timeout: float = 15.0) -> float:
    """Poll the DOM (the page's CSP refuses wait_for_function's string eval) until ``selector``
    matches ``count`` elements; return how long that took."""
    started = time.monotonic()
    while page.locator(selector).count() != count:
        assert time.monotonic() - started < timeout, f"{selector} never matched {count} rows"
        page.wait_for_timeout(25)
    return time.monotonic() - started


def test_a_malformed_message_appears_live_and_requeue_and_discard_work(
    open_as: Any, live_system: LiveSystem, tmp_path: Path
) -> None:
    executor = live_system.cluster.executor
    task_body = over_delivered_task(live_system)
    page = open_as("op")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{live_system.url}/deadletters")
    page.wait_for_load_state("networkidle")
    page.wait_for_selector("#live-status.on", state="attached", timeout=10_000)
    mark_no_reload(page)

    garbage_token = uuid.uuid4().hex[:8]
    send_to_task_queue(executor, b"\x00\xff{not json " + garbage_token.encode() + b"}")
    took = wait_for_rows(page, row_selector(garbage_token), 1)
    assert took < 5.0, f"the dead letter took {took:.2f}s to appear"
    row = page.locator(row_selector(garbage_token))
    assert "malformed message: not JSON" in row.inner_text()
    assert "\\x00\\xff{not json" in row.inner_text()

    # A JSON object of a protocol version this worker does not read: requeueable (an upgraded
    # worker would read it), so Requeue sends it back and, still unreadable here, it comes back.
    future_token = uuid.uuid4().hex[:8]
    future = json.dumps({"type": "task", "v": 99, "note": future_token}).encode()
    send_to_task_queue(executor, future)
    wait_for_rows(page, row_selector(future_token), 1)
    send_to_task_queue(executor, task_body, delivered=live_system.cluster.settings.max_deliveries)
    wait_for_rows(page, row_selector("delivered 6 times"), 1)
    task_row = page.locator(row_selector("delivered 6 times"))
    assert "flaky_dag / start" in task_row.inner_text()
    assert (
        task_row.locator("a", has_text="flaky_dag / start")
        .get_attribute("href")
        .startswith("/dags/flaky_dag/runs/")
    )
    assert_not_reloaded(page)

    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / "deadletters.png"))
    page.set_viewport_size({"width": 800, "height": 900})
    page.screenshot(path=str(target / "deadletters_narrow.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})

    first_id = page.locator(row_selector(future_token)).get_attribute("data-dead-letter")
    page.locator(row_selector(future_token)).get_by_role("button", name="Requeue").click()
    page.wait_for_selector(".flash:has-text('requeued')")
    # Requeued: the worker got it again, found it unreadable again, and a new dead letter came.
    wait_for_rows(page, row_selector(future_token), 1)
    second_id = page.locator(row_selector(future_token)).get_attribute("data-dead-letter")
    assert second_id != first_id

    # The requeue's events redraw the table (debounced): let that finish before the next click,
    # which would otherwise land on a form being replaced.
    page.wait_for_load_state("networkidle")
    page.locator(row_selector(garbage_token)).get_by_role("button", name="Discard").click()
    page.wait_for_selector(".flash:has-text('discarded')")
    assert page.locator(row_selector(garbage_token)).count() == 0
    page.goto(f"{live_system.url}/deadletters?state=discarded")
    assert "discarded" in page.locator(row_selector(garbage_token)).inner_text()
    page.goto(f"{live_system.url}/deadletters?state=requeued")
    assert page.locator(f'tr[data-dead-letter="{first_id}"]').count() == 1
