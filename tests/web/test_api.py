"""The JSON API, route by route, and its OpenAPI document."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hareflow.common.config import Settings
from hareflow.common.db import Backfill, DagRun, ImportError_, SchedulerHeartbeat, TaskInstance
from hareflow.web.openapi import openapi_document
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client, path_of, unique


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("op")


def test_listing_dags_filters_pages_and_includes_recent_runs(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    marker = unique("api")
    first = dag_factory(f"{marker}_a", tags=["t1"])
    second = dag_factory(f"{marker}_b", tags=["t2"], paused=True)
    run_factory(first, state="failed")

    everything = client.api("GET", f"/dags?q={marker}").json
    paged = client.api("GET", f"/dags?q={marker}&limit=1&offset=1").json
    tagged = client.api("GET", f"/dags?q={marker}&tag=t2").json
    active = client.api("GET", f"/dags?q={marker}&paused=false").json
    by_id = client.api("GET", f"/dags?dag_id={second}").json

    assert [d["dag_id"] for d in everything["dags"]] == [first, second] and everything["total"] == 2
    assert [d["dag_id"] for d in paged["dags"]] == [second] and paged["total"] == 2
    assert [d["dag_id"] for d in tagged["dags"]] == [second]
    assert [d["dag_id"] for d in active["dags"]] == [first]
    assert [d["dag_id"] for d in by_id["dags"]] == [second]
    assert everything["dags"][0]["recent_states"] == {"failed": 1}
    assert everything["dags"][0]["last_run"]["state"] == "failed"


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "paused=maybe", "offset=-1"])
def test_bad_query_parameters_are_a_400_naming_them(client: Client, query: str) -> None:
    response = client.api("GET", f"/dags?{query}")

    assert response.status_code == 400
    assert query.split("=")[0] in response.json["error"]


def test_getting_a_dag_returns_its_serialized_tasks_and_params(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory(params={"parts": 3})

    dag = client.api("GET", f"/dags/{dag_id}").json

    assert dag["params"] == {"parts": 3}
    assert [t["task_id"] for t in dag["tasks"]] == ["extract", "transform", "load"]
    assert dag["tasks"][1]["upstream"] == ["extract"]


def test_errors_are_json_with_the_status(client: Client) -> None:
    missing_dag = client.api("GET", "/dags/no_such_dag")
    missing_route = client.api("GET", "/no/such/route")
    wrong_method = client.api("DELETE", "/dags")

    assert missing_dag.status_code == 404 and missing_dag.json == {
        "error": "no DAG named 'no_such_dag'",
        "status": 404,
    }
    assert missing_route.status_code == 404 and missing_route.json["status"] == 404
    assert wrong_method.status_code == 405 and wrong_method.json["status"] == 405


def test_pausing_and_unpausing_through_patch(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory()

    paused = client.api("PATCH", f"/dags/{dag_id}", {"is_paused": True})
    again = client.api("PATCH", f"/dags/{dag_id}", {"is_paused": True})
    bad = client.api("PATCH", f"/dags/{dag_id}", {"owner": "me"})
    not_bool = client.api("PATCH", f"/dags/{dag_id}", {"is_paused": "yes"})

    assert paused.json["is_paused"] is True and paused.json["changed"] is True
    assert again.json["changed"] is False
    assert bad.status_code == not_bool.status_code == 400


def test_the_grid_returns_runs_oldest_first_and_states(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    runs = [
        run_factory(dag_id, logical_date=T0 + timedelta(days=d), tis={"extract": "success"}) for d in range(3)
    ]

    grid = client.api("GET", f"/dags/{dag_id}/grid?limit=2").json

    assert [r["run_id"] for r in grid["runs"]] == runs[1:]
    assert grid["states"][runs[2]] == {"extract": "success"}
    assert grid["tasks"] == ["extract", "transform", "load"]


def test_triggering_a_run_with_conf(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory(params={"parts": 3, "label": "x", "flags": [], "anything": None})

    created = client.api(
        "POST",
        f"/dags/{dag_id}/runs",
        {
            "conf": {"parts": 4.5, "label": "y", "flags": [1], "anything": {"a": 1}, "unknown": True},
            "run_id": "r1",
        },
    )
    duplicate = client.api("POST", f"/dags/{dag_id}/runs", {"run_id": "r1"})
    listed = client.api("GET", f"/dags/{dag_id}/runs").json

    assert created.status_code == 201
    assert created.json["run_id"] == "r1" and created.json["state"] == "queued"
    assert created.json["conf"]["unknown"] is True and created.json["triggered_by"] == "op"
    assert duplicate.status_code == 409 and "already has a run" in duplicate.json["error"]
    assert [r["run_id"] for r in listed["runs"]] == ["r1"] and listed["total"] == 1


def test_a_listed_run_has_the_same_form_as_the_run_itself(client: Client, dag_factory: Any) -> None:
    """The list formats rows by position, the detail a ``DagRun``: both give the same JSON."""
    dag_id = dag_factory()
    client.api("POST", f"/dags/{dag_id}/runs", {"conf": {"b": [1, "é"], "a": None}, "run_id": "with_conf"})
    client.api(
        "POST", f"/dags/{dag_id}/runs", {"run_id": "dated", "logical_date": "2026-02-03T04:05:06.789+00:00"}
    )

    listed = client.api("GET", f"/dags/{dag_id}/runs").json["runs"]
    details = [client.api("GET", path_of("dags", dag_id, "runs", r["run_id"])).json for r in listed]

    assert [r["run_id"] for r in listed] == ["with_conf", "dated"]
    assert listed == [{k: v for k, v in d.items() if k != "task_states"} for d in details]


def test_a_run_id_with_a_slash_is_refused_with_a_clear_error(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory()

    refused = client.api("POST", f"/dags/{dag_id}/runs", {"run_id": "a/b"})

    assert refused.status_code == 400
    assert "run_id 'a/b'" in refused.json["error"] and "no spaces or slashes" in refused.json["error"]
    assert client.api("GET", f"/dags/{dag_id}/runs").json["total"] == 0


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"parts": "3"}, "conf.parts"),
        ({"parts": True}, "conf.parts"),
        ({"label": 5}, "conf.label"),
        ({"flags": {}}, "conf.flags"),
        ([1, 2], "conf"),
    ],
)
def test_a_conf_value_of_the_wrong_type_is_a_400_naming_the_field(
    client: Client, dag_factory: Any, conf: Any, field: str
) -> None:
    dag_id = dag_factory(params={"parts": 3, "label": "x", "flags": []})

    response = client.api("POST", f"/dags/{dag_id}/runs", {"conf": conf})

    assert response.status_code == 400
    assert response.json["field"] == field
    assert field in response.json["error"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"run_id": "a/b"}, 400, "run_id"),
        ({"logical_date": "yesterday"}, 400, "logical_date"),
        ({"colour": "red"}, 400, None),
    ],
)
def test_bad_trigger_fields_are_refused(
    client: Client, dag_factory: Any, body: Any, status: int, field: Any
) -> None:
    response = client.api("POST", f"/dags/{dag_factory()}/runs", body)

    assert response.status_code == status
    assert response.json.get("field") == field


def test_triggering_an_unknown_or_paused_dag(client: Client, dag_factory: Any) -> None:
    assert client.api("POST", "/dags/nope/runs", {}).status_code == 404
    paused = client.api("POST", f"/dags/{dag_factory(paused=True)}/runs", {})
    assert paused.status_code == 409 and "paused" in paused.json["error"]


def test_a_trigger_with_a_logical_date_uses_it(client: Client, dag_factory: Any) -> None:
    response = client.api(
        "POST", f"/dags/{dag_factory()}/runs", {"logical_date": "2026-02-03T04:05:06+00:00"}
    )

    assert response.status_code == 201
    assert response.json["logical_date"] == "2026-02-03T04:05:06+00:00"
    assert response.json["run_id"] == "manual__2026-02-03T04:05:06+00:00"


def test_listing_runs_filters_by_state(client: Client, dag_factory: Any, run_factory: Any) -> None:
    dag_id = dag_factory()
    run_factory(dag_id, state="failed")
    ok = run_factory(dag_id, state="success", logical_date=T0 + timedelta(days=1))

    runs = client.api("GET", f"/dags/{dag_id}/runs?state=success").json["runs"]

    assert [r["run_id"] for r in runs] == [ok]


def test_a_run_and_its_task_instances(client: Client, dag_factory: Any, run_factory: Any) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, state="running", tis={"transform": "running", "extract": "success"})

    run = client.api("GET", path_of("dags", dag_id, "runs", run_id)).json
    tis = client.api("GET", path_of("dags", dag_id, "runs", run_id, "tasks")).json

    assert run["state"] == "running" and run["task_states"] == {"extract": "success", "transform": "running"}
    assert [t["task_id"] for t in tis["task_instances"]] == ["extract", "transform"]
    assert tis["task_instances"][1]["hostname"] == "worker-host-1"


def test_a_task_instance_with_its_tries_and_return_value(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(
        dag_id, tis={"extract": "success"}, results={"extract": [1, 2]}, logs={"extract": [(1, 1, "x\n")]}
    )

    ti = client.api("GET", path_of("dags", dag_id, "runs", run_id, "tasks", "extract")).json
    missing = client.api("GET", path_of("dags", dag_id, "runs", run_id, "tasks", "load"))

    assert ti["state"] == "success" and ti["tries"] == [1] and ti["result"] == [1, 2]
    assert missing.status_code == 404 and "has no task" in missing.json["error"]


def test_logs_are_read_by_try_and_tailed_with_the_offset(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(
        dag_id,
        state="running",
        tis={"extract": "running"},
        logs={"extract": [(1, 1, "one\n"), (1, 2, "two\n"), (1, 3, "three\n")]},
    )
    base = path_of("dags", dag_id, "runs", run_id, "tasks", "extract", "logs")

    everything = client.api("GET", f"{base}/1").json
    tail = client.api("GET", f"{base}/1?offset=2").json
    nothing_new = client.api("GET", f"{base}/1?offset=3").json
    other_try = client.api("GET", f"{base}/2").json

    assert [c["text"] for c in everything["chunks"]] == ["one\n", "two\n", "three\n"]
    assert everything["offset"] == 3 and everything["finished"] is False and everything["more"] is False
    assert [c["seq"] for c in tail["chunks"]] == [3]
    assert nothing_new["chunks"] == [] and nothing_new["offset"] == 3
    assert other_try["chunks"] == [] and other_try["finished"] is True


def test_a_whole_log_downloads_as_a_text_file_with_every_delivery_and_a_tail_past_32_bits(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    second_delivery = 2**32 + 1
    run_id = run_factory(
        dag_id,
        state="running",
        tis={"extract": "running"},
        logs={"extract": [(1, 1, "one\n"), (1, 2, "two\n"), (1, second_delivery, "again\n")]},
    )
    base = path_of("dags", dag_id, "runs", run_id, "tasks", "extract", "logs")

    download = client.api("GET", f"{base}/1/download")
    tail = client.api("GET", f"{base}/1?offset=2").json
    missing = client.api(
        "GET", path_of("dags", dag_id, "runs", run_id, "tasks", "nope", "logs") + "/1/download"
    )

    assert download.status_code == 200 and download.mimetype == "text/plain"
    assert download.text == "one\ntwo\nagain\n"
    assert download.headers["Content-Disposition"].startswith(f'attachment; filename="{dag_id}.')
    assert download.headers["Content-Disposition"].endswith('.extract.try1.log"')
    assert [c["seq"] for c in tail["chunks"]] == [second_delivery]
    assert client.api("GET", f"{base}/1?offset={second_delivery}").json["chunks"] == []
    assert missing.status_code == 404


def test_clearing_through_the_api_with_upstream_and_downstream(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(
        dag_id, state="failed", tis={"extract": "success", "transform": "failed", "load": "failed"}
    )
    base = path_of("dags", dag_id, "runs", run_id)

    dry = client.api("POST", f"{base}/tasks/transform/clear", {"downstream": True, "dry_run": True}).json
    cleared = client.api("POST", f"{base}/clear", {"task_ids": ["transform"], "upstream": True}).json
    unknown = client.api("POST", f"{base}/clear", {"task_ids": ["nope"]})

    assert sorted(r["task_id"] for r in dry["cleared"]) == ["load", "transform"] and dry["dry_run"] is True
    assert sorted(r["task_id"] for r in cleared["cleared"]) == ["extract", "transform"]
    assert cleared["runs_requeued"] == [run_id]
    assert unknown.status_code == 404 and unknown.json["field"] == "task_ids"
    with web_sessions() as s:
        states = dict(
            s.execute(select(TaskInstance.task_id, TaskInstance.state).where(TaskInstance.dag_id == dag_id))
            .tuples()
            .all()
        )
    assert states == {"extract": "none", "transform": "none", "load": "failed"}


def test_clearing_a_whole_dag_only_failed(client: Client, dag_factory: Any, run_factory: Any) -> None:
    dag_id = dag_factory()
    run_factory(dag_id, state="failed", tis={"extract": "failed"})
    run_factory(dag_id, state="success", tis={"extract": "success"}, logical_date=T0 + timedelta(days=1))

    result = client.api("POST", f"/dags/{dag_id}/clear", {"only_failed": True}).json

    assert [r["state"] for r in result["cleared"]] == ["failed"]


def test_marking_through_the_api(client: Client, dag_factory: Any, run_factory: Any) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, state="failed", tis={"extract": "failed"})
    url = path_of("dags", dag_id, "runs", run_id, "tasks", "extract")

    marked = client.api("PATCH", url, {"state": "success"})
    wrong = client.api("PATCH", url, {"state": "running"})
    extra = client.api("PATCH", url, {"state": "success", "note": "x"})

    assert marked.status_code == 200 and marked.json["state"] == "success"
    assert wrong.status_code == 400 and wrong.json["field"] == "state"
    assert extra.status_code == 400


def test_workers_queues_and_import_errors(client: Client, web_sessions: sessionmaker[Session]) -> None:
    with web_sessions() as s, s.begin():
        s.add(ImportError_(filename="/dags/bad.py", line=3, message="boom", timestamp=T0))
    try:
        errors = client.api("GET", "/import-errors").json["import_errors"]
    finally:
        with web_sessions() as s, s.begin():
            s.query(ImportError_).delete()
    queues = client.api("GET", "/queues").json
    workers = client.api("GET", "/workers").json

    assert {"filename": "/dags/bad.py", "line": 3, "message": "boom"}.items() <= errors[0].items()
    assert queues["executor"] == "local" and "default" in [q["name"] for q in queues["queues"]]
    assert isinstance(workers["workers"], list)


def test_health_reports_database_broker_and_scheduler_heartbeat_age(
    client: Client, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s, s.begin():
        s.query(SchedulerHeartbeat).delete()
    no_scheduler = client.api("GET", "/health")
    now = datetime.now(UTC)
    with web_sessions() as s, s.begin():
        s.add(
            SchedulerHeartbeat(
                id="h:1", hostname="h", pid=1, started_at=now, last_heartbeat=now - timedelta(seconds=2)
            )
        )
    try:
        healthy = client.api("GET", "/health")
    finally:
        with web_sessions() as s, s.begin():
            s.query(SchedulerHeartbeat).delete()

    assert no_scheduler.status_code == 503 and no_scheduler.json["scheduler"]["ok"] is False
    assert healthy.status_code == 200 and healthy.json["ok"] is True
    assert healthy.json["database"] == {"ok": True}
    assert healthy.json["broker"]["ok"] is True and healthy.json["broker"]["executor"] == "local"
    assert 1.5 < healthy.json["scheduler"]["heartbeat_age"] < 10


def test_backfills_are_listed_with_progress_and_cancelled(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    with web_sessions() as s, s.begin():
        backfill = Backfill(dag_id=dag_id, from_date=T0, to_date=T0, state="running", created_at=T0)
        s.add(backfill)
        s.flush()
        backfill_id = backfill.id
    run_factory(dag_id, state="queued", backfill_id=backfill_id)

    listed = client.api("GET", f"/backfills?dag_id={dag_id}").json["backfills"]
    cancelled = client.api("POST", f"/backfills/{backfill_id}/cancel")
    again = client.api("POST", f"/backfills/{backfill_id}/cancel")
    missing = client.api("POST", "/backfills/999999/cancel")

    assert listed[0]["id"] == backfill_id and listed[0]["progress"]["queued"] == 1
    assert cancelled.json == {"backfill_id": backfill_id, "state": "cancelled", "runs_dropped": 1}
    assert again.status_code == 409 and missing.status_code == 404
    with web_sessions() as s:
        assert s.scalar(select(DagRun).where(DagRun.dag_id == dag_id)) is None


def test_a_non_json_body_is_a_400(client: Client, dag_factory: Any) -> None:
    response = client.http.post(
        f"/api/v1/dags/{dag_factory()}/runs", data="not json", headers={"X-CSRF-Token": client.csrf}
    )

    assert response.status_code == 400 and "JSON object" in response.json["error"]


# -- OpenAPI ----------------------------------------------------------------------------------------------


def _openapi_path(rule: str) -> str:
    path = rule.removeprefix("/api/v1")
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)


def test_every_api_route_and_method_is_in_the_openapi_document(app: Flask, client: Client) -> None:
    served = client.api("GET", "/openapi.json").json
    paths = served["paths"]
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        documented = paths.get(_openapi_path(rule.rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method.lower() not in documented:
                missing.append(f"{method} {rule.rule}")
    assert missing == []
    assert served == openapi_document()


def test_the_openapi_document_names_no_route_that_does_not_exist(app: Flask) -> None:
    routes = {(_openapi_path(r.rule), m.lower()) for r in app.url_map.iter_rules() for m in (r.methods or ())}
    documented = {(p, m) for p, ops in openapi_document()["paths"].items() for m in ops}

    assert documented - routes == set()
    assert openapi_document()["openapi"].startswith("3.")


def test_public_health_needs_no_login_and_hides_error_texts(
    anon: FlaskClient, web_settings: Settings
) -> None:
    from hareflow.web import create_app

    served = anon.get("/health")
    assert served.status_code in (200, 503) and set(served.json) >= {"ok", "database", "broker", "scheduler"}

    broken = create_app(
        web_settings.replace(database_url="postgresql+psycopg2://nobody:s3cret@127.0.0.1:1/nothing")
    ).test_client()
    down = broken.get("/health")
    assert down.status_code == 503
    assert down.json["database"] == {"ok": False}
    assert "s3cret" not in down.get_data(as_text=True) and "nobody" not in down.get_data(as_text=True)


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("conf_text", "message"),
    [
        (_nested(5000), "nests too deeply"),  # deeper than the JSON decoder goes
        (_nested(40), "more than 32 levels deep"),
        ('{"big": "' + "x" * (300 * 1024) + '"}', "at most 262144 are allowed"),
    ],
)
def test_a_conf_nested_too_deep_or_too_large_is_a_400_and_creates_no_run(
    client: Client, dag_factory: Any, conf_text: str, message: str
) -> None:
    dag_id = dag_factory()

    response = client.http.post(
        f"/api/v1/dags/{dag_id}/runs",
        data='{"conf": ' + conf_text + "}",
        headers={"X-CSRF-Token": client.csrf, "Content-Type": "application/json"},
    )

    assert response.status_code == 400, response.text
    assert message in response.json["error"]
    assert client.api("GET", f"/dags/{dag_id}/runs").json["total"] == 0


def test_the_trigger_form_refuses_a_conf_nested_too_deep_with_the_error_beside_the_field(
    client: Client, dag_factory: Any
) -> None:
    dag_id = dag_factory()

    response = client.form(
        f"/dags/{dag_id}/trigger", {"conf": _nested(5000), "run_id": "", "logical_date": ""}
    )

    assert response.status_code == 400
    assert "more than 32 levels deep" in response.text
    assert client.api("GET", f"/dags/{dag_id}/runs").json["total"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/dags/a%00b",
        "/api/v1/dags/a%00b/runs",
        "/api/v1/runs?dag_id=x%00",
        "/api/v1/dags?tag=%00",
        "/api/v1/dags/x/runs?state=success%00",
        "/dags/a%00b/grid",
        "/dags?q%00=1",
    ],
)
def test_a_nul_character_in_a_path_or_query_parameter_is_a_400(client: Client, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 400, (response.status_code, response.text[:200])
    assert "NUL character" in response.text
