"""One run per DAG and logical date: the API answers 409 and the trigger form shows the error."""

from __future__ import annotations

import html
from typing import Any

import pytest

from tests.web.conftest import Client

WHEN = "2026-02-03T04:05:06+00:00"


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("op")


def test_an_api_trigger_at_a_logical_date_another_run_has_is_a_409_naming_it(
    client: Client, dag_factory: Any
) -> None:
    dag_id = dag_factory()

    first = client.api("POST", f"/dags/{dag_id}/runs", {"logical_date": WHEN, "run_id": "first"})
    second = client.api("POST", f"/dags/{dag_id}/runs", {"logical_date": WHEN, "run_id": "second"})

    assert first.status_code == 201
    assert second.status_code == 409
    assert f"already has a run at logical date {WHEN} ('first')" in second.json["error"]
    assert [r["run_id"] for r in client.api("GET", f"/dags/{dag_id}/runs").json["runs"]] == ["first"]


def test_the_openapi_document_says_a_trigger_may_answer_409() -> None:
    from hareflow.web.openapi import openapi_document

    responses = openapi_document()["paths"]["/dags/{dag_id}/runs"]["post"]["responses"]
    assert responses["409"] == {"$ref": "#/components/responses/Conflict"}


def test_the_trigger_form_shows_the_taken_logical_date_as_an_error(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory()
    client.api("POST", f"/dags/{dag_id}/runs", {"logical_date": WHEN, "run_id": "first"})

    response = client.form(f"/dags/{dag_id}/trigger", {"conf": "{}", "run_id": "", "logical_date": WHEN})

    assert response.status_code == 409
    text = html.unescape(response.text)
    under_the_date = text.split('id="logical_date-error">', 1)[1].split("</div>", 1)[0]
    assert "already has a run at logical date" in under_the_date  # under its own field
    assert 'id="run_id-error"' not in text
    assert client.api("GET", f"/dags/{dag_id}/runs").json["total"] == 1


def test_the_trigger_form_shows_a_taken_run_id_under_the_run_id_field(
    client: Client, dag_factory: Any
) -> None:
    dag_id = dag_factory()
    client.api("POST", f"/dags/{dag_id}/runs", {"run_id": "taken"})

    response = client.form(f"/dags/{dag_id}/trigger", {"conf": "{}", "run_id": "taken", "logical_date": ""})

    text = html.unescape(response.text)
    assert response.status_code == 409
    assert "already has a run 'taken'" in text.split('id="run_id-error">', 1)[1].split("</div>", 1)[0]
    assert 'id="logical_date-error"' not in text


def test_a_manual_run_of_a_scheduled_dag_covers_the_latest_complete_interval(
    client: Client, dag_factory: Any
) -> None:
    dag_id = dag_factory(schedule="@daily")

    run = client.api("POST", f"/dags/{dag_id}/runs", {"logical_date": "2026-01-25T01:00:00+00:00"}).json

    assert run["logical_date"] == "2026-01-25T01:00:00+00:00"
    assert (run["data_interval_start"], run["data_interval_end"]) == (
        "2026-01-24T00:00:00+00:00",
        "2026-01-25T00:00:00+00:00",
    )
