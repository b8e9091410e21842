"""The webhook: POST /api/v1/dags/<dag_id>/events turns a JSON body into one run per event key."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from hareflow.common.db import AuditLog, DagRun
from hareflow.web.security import issue_token
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

WEBHOOK = {"kind": "webhook", "dedupe_key": None}


@pytest.fixture
def post(app: Flask, web_sessions: sessionmaker[Session]) -> Any:
    """POST an event with an op API token (how a sender outside the UI calls the webhook)."""
    with web_sessions() as s, s.begin():
        token = issue_token(s, "op")
    http = app.test_client()

    def send(dag_id: str, body: Any, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return http.post(f"/api/v1/dags/{dag_id}/events", json=body, headers=headers)

    return send


def _runs(sessions: sessionmaker[Session], dag_id: str) -> list[DagRun]:
    with sessions() as s:
        return list(s.scalars(select(DagRun).where(DagRun.dag_id == dag_id)))


def test_a_webhook_retried_with_the_same_idempotency_key_makes_one_run(
    post: Any, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(triggers=[WEBHOOK], params={"amount": 0})

    first = post(dag_id, {"order_id": "o-1", "amount": 5}, key="delivery-42")
    retried = post(dag_id, {"order_id": "o-1", "amount": 5}, key="delivery-42")
    other = post(dag_id, {"order_id": "o-1", "amount": 5}, key="delivery-43")

    assert first.status_code == 201 and first.json["duplicate"] is False
    assert first.json["run_id"] == "event__delivery-42" and first.json["run_type"] == "event"
    assert first.json["conf"] == {"order_id": "o-1", "amount": 5} and first.json["state"] == "queued"
    assert retried.status_code == 200 and retried.json["duplicate"] is True
    assert retried.json["run_id"] == first.json["run_id"]
    assert other.status_code == 201
    assert sorted(r.run_id for r in _runs(web_sessions, dag_id)) == [
        "event__delivery-42",
        "event__delivery-43",
    ]
    with web_sessions() as s:
        audited = s.scalars(
            select(AuditLog).where(AuditLog.dag_id == dag_id, AuditLog.action == "event")
        ).all()
    assert [a.run_id for a in audited].count("event__delivery-42") == 2


def test_the_dedupe_key_body_field_keys_a_webhook_event_without_a_header(
    post: Any, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(triggers=[{"kind": "webhook", "dedupe_key": "order.id"}])

    first = post(dag_id, {"order": {"id": 7}})
    again = post(dag_id, {"order": {"id": 7}, "note": "resent"})
    missing = post(dag_id, {"order": {}})

    assert first.status_code == 201 and first.json["run_id"] == "event__7"
    assert again.status_code == 200 and again.json["run_id"] == "event__7"
    assert missing.status_code == 400 and missing.json["field"] == "order.id"
    assert len(_runs(web_sessions, dag_id)) == 1


def test_a_webhook_body_that_fails_the_params_check_is_a_400_naming_the_field_and_makes_no_run(
    post: Any, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(triggers=[WEBHOOK], params={"amount": 0})

    wrong_type = post(dag_id, {"amount": "five"}, key="k1")
    not_an_object = post(dag_id, [1, 2], key="k2")

    assert wrong_type.status_code == 400 and wrong_type.json["field"] == "conf.amount"
    assert "amount" in wrong_type.json["error"]
    assert not_an_object.status_code == 400
    assert _runs(web_sessions, dag_id) == []


def test_identical_bodies_without_any_key_are_one_event(
    post: Any, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(triggers=[WEBHOOK])

    first = post(dag_id, {"b": 1, "a": 2})
    same = post(dag_id, {"a": 2, "b": 1})
    different = post(dag_id, {"a": 3})

    assert (first.status_code, same.status_code, different.status_code) == (201, 200, 201)
    assert len(_runs(web_sessions, dag_id)) == 2


def test_a_dag_without_a_webhook_trigger_or_paused_refuses_events(post: Any, dag_factory: Any) -> None:
    plain = dag_factory()
    paused = dag_factory(triggers=[WEBHOOK], paused=True)

    assert post(plain, {}, key="x").status_code == 404
    assert post(paused, {}, key="x").status_code == 409
    assert post("no_such_dag", {}, key="x").status_code == 404


def test_a_viewer_token_cannot_send_events(
    app: Flask, web_sessions: sessionmaker[Session], dag_factory: Any
) -> None:
    dag_id = dag_factory(triggers=[WEBHOOK])
    with web_sessions() as s, s.begin():
        token = issue_token(s, "viewer")

    response = app.test_client().post(
        f"/api/v1/dags/{dag_id}/events", json={}, headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 403


def test_the_runs_page_filters_event_runs_by_their_type(
    post: Any, as_role: Any, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory(triggers=[WEBHOOK])
    manual = run_factory(dag_id)
    post(dag_id, {"n": 1}, key="page-1")
    viewer = as_role("viewer")

    events_only = viewer.http.get(f"/dags/{dag_id}/runs?run_type=event").text
    everything = viewer.http.get(f"/dags/{dag_id}/runs").text

    assert "event__page-1" in events_only and manual not in events_only
    assert '<option value="event" selected>' in events_only
    assert "event__page-1" in everything and manual in everything
