"""Backfills from the web: the API and the DAG's Backfill form run the CLI's plan and create path
(``common.backfill``), preview without changing anything, and name the field a mistake is in."""

from __future__ import annotations

from typing import Any

import pytest
from hareflow.common.db import AuditLog, Backfill, DagRun
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import Client


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("op")


def _runs(sessions: sessionmaker[Session], dag_id: str) -> list[tuple[str, str, int | None]]:
    with sessions() as s:
        return [
            (r.run_id, r.run_type, r.backfill_id)
            for r in s.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date))
        ]


def test_a_dry_run_returns_the_intervals_and_changes_nothing(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(schedule="@daily")

    response = client.api(
        "POST", "/backfills", {"dag_id": dag_id, "start": "2026-01-02", "end": "2026-01-04", "dry_run": True}
    )

    assert response.status_code == 200, response.json
    plan = response.json["plan"]
    assert response.json["dry_run"] is True and plan["total"] == 3
    assert [i["logical_date"][:10] for i in plan["to_create"]] == ["2026-01-02", "2026-01-03", "2026-01-04"]
    assert _runs(web_sessions, dag_id) == []
    with web_sessions() as s:
        assert s.scalar(select(Backfill).where(Backfill.dag_id == dag_id)) is None


def test_creating_a_backfill_queues_one_run_per_interval_and_audits_it(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(schedule="@daily")

    response = client.api(
        "POST",
        "/backfills",
        {"dag_id": dag_id, "start": "2026-01-02", "end": "2026-01-03", "max_active_runs": 2},
    )
    again = client.api("POST", "/backfills", {"dag_id": dag_id, "start": "2026-01-02", "end": "2026-01-03"})

    assert response.status_code == 201, response.json
    created = response.json["backfill"]
    assert created["max_active_runs"] == 2 and created["state"] == "running"
    runs = _runs(web_sessions, dag_id)
    assert [(t, b) for _, t, b in runs] == [("backfill", created["id"])] * 2
    # The same range again creates no duplicate runs: a finished, empty backfill.
    assert again.status_code == 201 and again.json["plan"]["total"] == 0
    assert again.json["backfill"]["state"] == "success" and len(_runs(web_sessions, dag_id)) == 2
    with web_sessions() as s:
        rows = s.scalars(
            select(AuditLog).where(AuditLog.dag_id == dag_id, AuditLog.action == "backfill")
        ).all()
    assert [r.username for r in rows] == ["op", "op"]
    assert all(r.details["origin"].startswith("web ") for r in rows)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"start": "2026-01-02"}, "end", "give a logical date"),
        ({"start": "yesterday", "end": "2026-01-03"}, "start", "not an ISO 8601 date"),
        ({"start": "2026-01-05", "end": "2026-01-03"}, "end", "before start"),
        ({"start": "2026-01-02", "end": "2026-01-03", "max_active_runs": 0}, "max_active_runs", "at least 1"),
        ({"start": "2026-01-02", "end": "2026-01-03", "max_active_runs": "4"}, None, None),
        (
            {"start": "2026-01-02", "end": "2026-01-03", "rerun_failed": "yes"},
            "rerun_failed",
            "true or false",
        ),
    ],
)
def test_a_bad_field_is_a_400_naming_it_and_creates_nothing(
    client: Client,
    dag_factory: Any,
    web_sessions: sessionmaker[Session],
    body: dict[str, Any],
    field: str | None,
    words: str | None,
) -> None:
    dag_id = dag_factory(schedule="@daily")

    response = client.api("POST", "/backfills", {"dag_id": dag_id, **body})

    if field is None:  # a number given as a string, as a form sends it, is taken
        assert response.status_code == 201 and response.json["backfill"]["max_active_runs"] == 4
        return
    assert response.status_code == 400 and response.json["field"] == field
    assert words in response.json["error"]
    assert _runs(web_sessions, dag_id) == []


def test_unknown_or_unscheduled_dags_and_viewers_are_refused(
    client: Client, as_role: Any, dag_factory: Any
) -> None:
    unscheduled = dag_factory()
    scheduled = dag_factory(schedule="@daily")
    body = {"start": "2026-01-02", "end": "2026-01-03"}

    missing = client.api("POST", "/backfills", {"dag_id": "no_such_dag", **body})
    no_schedule = client.api("POST", "/backfills", {"dag_id": unscheduled, **body})
    viewer = as_role("viewer").api("POST", "/backfills", {"dag_id": scheduled, **body})

    assert missing.status_code == 404
    assert no_schedule.status_code == 400 and "has no schedule" in no_schedule.json["error"]
    assert viewer.status_code == 403


def test_the_backfill_form_previews_then_creates(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(schedule="@daily")
    url = f"/dags/{dag_id}/backfill"
    fields = {"start": "2026-01-02", "end": "2026-01-04", "max_active_runs": "3"}

    page = client.get(url)
    preview = client.form(url, {**fields, "action": "preview"})
    assert _runs(web_sessions, dag_id) == []
    created = client.form(url, {**fields, "action": "create"})

    assert page.status_code == 200 and 'id="backfill-preview"' in page.text
    assert preview.status_code == 200
    assert "3 run(s) to create" in preview.text and preview.text.count('class="plan-create"') == 3
    assert 'value="2026-01-04"' in preview.text  # the form keeps what was typed
    assert created.status_code == 302 and created.headers["Location"].endswith(f"/backfills?dag_id={dag_id}")
    assert "3 run(s) to go" in client.get(created.headers["Location"]).text
    assert len(_runs(web_sessions, dag_id)) == 3


def test_the_backfill_form_shows_a_mistake_under_its_field(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory(schedule="@daily")

    response = client.form(
        f"/dags/{dag_id}/backfill", {"start": "2026-01-09", "end": "2026-01-03", "action": "preview"}
    )

    assert response.status_code == 400
    assert 'id="end-error"' in response.text and "before start" in response.text


def test_the_dag_page_offers_a_backfill_only_for_a_scheduled_dag_and_to_ops(
    client: Client, as_role: Any, dag_factory: Any
) -> None:
    scheduled, unscheduled = dag_factory(schedule="@daily"), dag_factory()

    assert 'id="backfill-button"' in client.get(f"/dags/{scheduled}/grid").text
    assert 'id="backfill-button"' not in client.get(f"/dags/{unscheduled}/grid").text
    assert 'id="backfill-button"' not in as_role("viewer").get(f"/dags/{scheduled}/grid").text
    assert as_role("viewer").get(f"/dags/{scheduled}/backfill").status_code == 403
