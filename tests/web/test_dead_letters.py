"""The Dead letters page and API on recorded rows: listing, detail, filters, requeue and discard
(op and admin only, audited, refused for a task try that has ended), and the queues page's depth."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from hareflow.common import dead_letters
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.db import AuditLog, DeadLetter, TaskInstance
from hareflow.common.messages import TaskKey, TaskMessage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import make_dag, make_run, unique

NOW = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)


def task_body(ti: TaskInstance, queue: str) -> bytes:
    return TaskMessage(
        key=TaskKey(ti.id, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number),
        max_tries=2,
        dag_file="/dags/x.py",
        queue=queue,
        execution_timeout=None,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
    ).encode()


def record(
    sessions: sessionmaker[Session], body: bytes, *, queue: str, reason: str = "malformed message: not JSON"
) -> int:
    headers = {
        "x-hareflow-reason": reason,
        "x-hareflow-queue": queue,
        "x-hareflow-deliveries": 2,
        "x-hareflow-dead-id": uuid.uuid4().hex,
        "x-custom": "kept",
    }
    values = dead_letters.describe(
        body, headers, message_id="mid-1", content_type="application/json", now=NOW
    )
    with sessions() as s, s.begin():
        (row,) = dead_letters.record(s, [values])
        return row.id


@pytest.fixture
def run_tis(web_sessions: sessionmaker[Session]) -> dict[str, TaskInstance]:
    dag_id = make_dag(web_sessions, unique("dl"))
    run_id = make_run(web_sessions, dag_id, state="running", tis={"extract": "failed", "transform": "queued"})
    with web_sessions() as s:
        rows = s.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        )
        return {ti.task_id: ti for ti in rows}


def test_the_page_lists_a_dead_letter_with_its_reason_queue_deliveries_task_instance_and_escaped_preview(
    web_sessions: sessionmaker[Session], as_role: Any
) -> None:
    queue = f"dl_{uuid.uuid4().hex[:6]}"
    dl_id = record(
        web_sessions, b"<script>alert(1)</script>\x00\xff", queue=queue, reason="malformed <b>message</b>"
    )
    page = as_role("viewer").get(f"/deadletters?queue={queue}")
    assert page.status_code == 200
    html = page.text
    assert f'data-dead-letter="{dl_id}"' in html
    assert "malformed &lt;b&gt;message&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\x00\\xff" in html and "<script>alert(1)" not in html
    assert 'data-live-rooms="deadletters"' in html and 'data-live-kinds="deadletter"' in html
    assert "Requeue</button>" not in html and "Discard</button>" not in html  # a viewer reads only
    assert 'href="/deadletters"' in html  # the nav entry
    op_html = as_role("op").get(f"/deadletters?queue={queue}").text
    assert "Requeue</button>" in op_html and "Discard</button>" in op_html and 'name="csrf_token"' in op_html


def test_the_detail_page_and_the_api_show_headers_and_the_whole_payload(
    web_sessions: sessionmaker[Session], as_role: Any, run_tis: dict[str, TaskInstance]
) -> None:
    ti = run_tis["extract"]
    body = task_body(ti, "default")
    dl_id = record(web_sessions, body, queue="hareflow.q.default")
    page = as_role("viewer").get(f"/deadletters/{dl_id}").text
    assert "x-custom" in page and "/dags/x.py" in page
    assert f"/dags/{ti.dag_id}/runs/" in page  # the task instance it belongs to
    shown = as_role("viewer").api("GET", f"/deadletters/{dl_id}").get_json()
    assert shown["headers"]["x-custom"] == "kept"
    assert (shown["dag_id"], shown["task_id"], shown["try_number"]) == (ti.dag_id, "extract", ti.try_number)
    assert (
        shown["message_type"] == "task"
        and shown["deliveries"] == 2
        and shown["queue"] == "hareflow.q.default"
    )
    import base64

    assert base64.b64decode(shown["body_base64"]) == body
    listed = as_role("viewer").api("GET", "/deadletters?queue=hareflow.q.default").get_json()["deadletters"]
    assert dl_id in [d["id"] for d in listed]
    assert as_role("viewer").api("GET", "/deadletters/999999999").status_code == 404
    assert as_role("viewer").get("/deadletters/999999999").status_code == 404
    assert as_role("viewer").api("GET", "/deadletters?state=nope").status_code == 400


def test_a_viewer_cannot_requeue_or_discard(web_sessions: sessionmaker[Session], as_role: Any) -> None:
    dl_id = record(web_sessions, b"garbage", queue="default")
    viewer = as_role("viewer")
    assert viewer.api("POST", f"/deadletters/{dl_id}/requeue").status_code == 403
    assert viewer.api("POST", f"/deadletters/{dl_id}/discard").status_code == 403
    assert viewer.form(f"/deadletters/{dl_id}/discard").status_code == 403
    with web_sessions() as s:
        assert s.get(DeadLetter, dl_id).state == "dead"  # type: ignore[union-attr]


def test_discard_hides_it_by_default_keeps_it_listed_as_discarded_and_audits_it(
    web_sessions: sessionmaker[Session], as_role: Any
) -> None:
    queue = f"dl_{uuid.uuid4().hex[:6]}"
    dl_id = record(web_sessions, b"garbage", queue=queue)
    op = as_role("op")
    done = op.api("POST", f"/deadletters/{dl_id}/discard")
    assert done.status_code == 200, done.text
    assert done.get_json()["state"] == "discarded" and done.get_json()["state_by"] == "op"
    assert op.api("GET", f"/deadletters?queue={queue}").get_json()["deadletters"] == []
    discarded = op.api("GET", f"/deadletters?queue={queue}&state=discarded").get_json()["deadletters"]
    assert [d["id"] for d in discarded] == [dl_id]
    again = op.api("POST", f"/deadletters/{dl_id}/discard")
    assert again.status_code == 409 and "already discarded" in again.get_json()["error"]
    with web_sessions() as s:
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "dead_letter_discard")).all()
    assert any(a.details and a.details["dead_letter_id"] == dl_id and a.username == "op" for a in audit)


def test_the_page_forms_requeue_and_discard_with_csrf(
    web_sessions: sessionmaker[Session], as_role: Any
) -> None:
    dl_id = record(web_sessions, b"garbage", queue="default")
    admin = as_role("admin")
    assert admin.form(f"/deadletters/{dl_id}/discard", csrf=False).status_code == 400
    response = admin.form(f"/deadletters/{dl_id}/discard")
    assert response.status_code == 302
    with web_sessions() as s:
        assert s.get(DeadLetter, dl_id).state == "discarded"  # type: ignore[union-attr]
    refused = admin.form(f"/deadletters/{record(web_sessions, b'garbage', queue='default')}/requeue")
    assert refused.status_code == 302
    assert "not a JSON object" in admin.get("/deadletters").text  # flashed: why not


def test_a_task_message_whose_try_still_waits_is_requeued_to_its_queue_with_a_fresh_count(
    web_sessions: sessionmaker[Session],
    web_executor: LocalExecutor,
    as_role: Any,
    run_tis: dict[str, TaskInstance],
) -> None:
    queue = f"dl_{uuid.uuid4().hex[:6]}"
    web_executor.declare_queues([queue])
    body = task_body(run_tis["transform"], queue)
    dl_id = record(web_sessions, body, queue=queue)
    response = as_role("op").api("POST", f"/deadletters/{dl_id}/requeue")
    assert response.status_code == 200, response.text
    assert response.get_json()["state"] == "requeued"
    assert list(web_executor._state.queues[queue]) == [(body, 0)]  # delivered as new
    with web_sessions() as s:
        assert s.get(DeadLetter, dl_id).state_by == "op"  # type: ignore[union-attr]
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "dead_letter_requeue")).all()
    assert any(a.details and a.details["dead_letter_id"] == dl_id for a in audit)
    assert as_role("op").api("POST", f"/deadletters/{dl_id}/requeue").status_code == 409


def test_a_task_message_whose_try_has_ended_is_not_requeued_the_user_is_told_to_clear_it(
    web_sessions: sessionmaker[Session],
    web_executor: LocalExecutor,
    as_role: Any,
    run_tis: dict[str, TaskInstance],
) -> None:
    ti = run_tis["extract"]  # failed
    queue = f"dl_{uuid.uuid4().hex[:6]}"
    web_executor.declare_queues([queue])
    dl_id = record(web_sessions, task_body(ti, queue), queue=queue)
    response = as_role("op").api("POST", f"/deadletters/{dl_id}/requeue")
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert "is failed at try 1" in error and f"hareflow tasks clear {ti.dag_id} --run-id {ti.run_id}" in error
    assert list(web_executor._state.queues[queue]) == []
    with web_sessions() as s:
        assert s.get(DeadLetter, dl_id).state == "dead"  # type: ignore[union-attr]


def test_the_queues_page_shows_the_dead_letter_depth_of_each_queue(
    web_sessions: sessionmaker[Session], as_role: Any, app: Flask
) -> None:
    default = app.extensions["hareflow"].settings.default_queue
    before = {q["name"]: q for q in as_role("viewer").api("GET", "/queues").get_json()["queues"]}
    record(web_sessions, b"garbage", queue=default)
    record(web_sessions, b"garbage", queue=default)
    report = {q["name"]: q for q in as_role("viewer").api("GET", "/queues").get_json()["queues"]}
    assert report[default]["dead_letters"] == (before[default]["dead_letters"] or 0) + 2
    assert report["(dead letters)"]["dead_letters"] is None  # the broker queue itself: waiting to be recorded
    html = as_role("viewer").get("/queues").text
    assert "Dead letters</th>" in html and f'href="/deadletters?queue={default}"' in html
