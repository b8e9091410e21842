"""Assets in the web: the API (list, events, lineage, posting an event from outside, who may),
the Assets and lineage pages, the DAG list's asset schedules, and live asset events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask
from hareflow.common.assets import sync_dag_assets
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.dag import DAG, Asset, BashTask, dag_hash, serialize_dag
from hareflow.common.db import AssetDagRunQueue, AuditLog, Dag
from hareflow.common.messages import StateEvent
from hareflow.web import socketio_of
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import Client, make_dag, path_of, unique
from tests.web.test_live import received, wait_for


def store(sessions: sessionmaker[Session], dag: DAG) -> str:
    """``dag`` stored as the DAG processor stores it (row, serialized form, asset references)."""
    data = serialize_dag(dag)
    make_dag(sessions, dag.dag_id)
    with sessions() as s, s.begin():
        row = s.get(Dag, dag.dag_id)
        assert row is not None
        row.serialized, row.dag_hash = data, dag_hash(data)
        row.schedule = f"assets: {dag.asset_schedule.describe()}" if dag.asset_schedule else None
        sync_dag_assets(s, dag.dag_id, data, datetime.now(UTC))
    return dag.dag_id


def producer_and_consumer(sessions: sessionmaker[Session]) -> tuple[str, str, str]:
    """A producer DAG with an outlet and a DAG scheduled on it; return (uri, producer, consumer)."""
    uri = f"warehouse://{unique('sales')}/orders"
    orders = Asset(uri)
    with DAG(unique("make")) as producer:
        BashTask("write", "true", outlets=[orders])
    with DAG(unique("report"), schedule=[orders]) as consumer:
        BashTask("read", "true")
    return uri, store(sessions, producer), store(sessions, consumer)


def asset_of(client: Client, uri: str) -> dict[str, Any]:
    found = client.api("GET", f"/assets?uri={uri}").json["assets"]
    assert len(found) == 1, found
    return found[0]


def test_the_asset_list_names_producers_and_consumers_and_an_op_can_post_an_event(
    web_sessions: sessionmaker[Session], as_role: Any
) -> None:
    uri, producer, consumer = producer_and_consumer(web_sessions)
    viewer, op = as_role("viewer"), as_role("op")
    asset = asset_of(viewer, uri)
    assert asset["producers"] == [f"{producer}.write"] and asset["consumers"] == [consumer]
    assert asset["latest_events"] == []

    posted = op.api("POST", "/assets/events", {"uri": uri, "extra": {"rows": 7}})
    assert posted.status_code == 201, posted.text
    assert posted.json["extra"] == {"rows": 7} and posted.json["created_by"] == "op"

    events = viewer.api("GET", f"/assets/{asset['id']}/events").json
    assert events["total"] == 1 and events["events"][0]["id"] == posted.json["id"]
    assert asset_of(viewer, uri)["latest_events"][0]["extra"] == {"rows": 7}
    with web_sessions() as s:
        queued = s.scalars(select(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == consumer)).all()
        assert [q.last_event_id for q in queued] == [posted.json["id"]]
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "asset_event")).all()
        assert any(
            a.details == {"uri": uri, "event_id": posted.json["id"], "origin": "web 127.0.0.1"}
            and a.username == "op"
            for a in audit
        )


def test_posting_an_event_needs_op_a_known_asset_and_a_json_object_extra(
    web_sessions: sessionmaker[Session], as_role: Any
) -> None:
    uri, _, _ = producer_and_consumer(web_sessions)
    assert as_role("viewer").api("POST", "/assets/events", {"uri": uri}).status_code == 403
    op = as_role("op")
    unknown = op.api("POST", "/assets/events", {"uri": "warehouse://nobody/names/this"})
    assert unknown.status_code == 404 and "no asset" in unknown.json["error"]
    bad = op.api("POST", "/assets/events", {"uri": uri, "extra": [1, 2]})
    assert bad.status_code == 400 and bad.json["field"] == "extra"
    assert op.api("POST", "/assets/events", {"uri": " spaced"}).status_code == 400
    assert op.api("GET", "/assets/999999999/events").status_code == 404


def test_the_lineage_links_producer_dag_to_asset_to_consumer_dag(
    web_sessions: sessionmaker[Session], as_role: Any
) -> None:
    client = as_role("viewer")
    uri, producer, consumer = producer_and_consumer(web_sessions)
    graph = client.api("GET", "/assets/lineage").json
    asset_node = next(n["id"] for n in graph["nodes"] if n.get("uri") == uri)
    assert [f"dag:{producer}", asset_node] in graph["edges"]
    assert [asset_node, f"dag:{consumer}"] in graph["edges"]


def test_the_assets_pages_and_the_dag_list_show_assets(
    web_sessions: sessionmaker[Session], as_role: Any
) -> None:
    client = as_role("viewer")
    uri, producer, consumer = producer_and_consumer(web_sessions)
    page = client.get("/assets").get_data(as_text=True)
    assert uri in page and f"{producer}.write" in page and consumer in page
    assert "lineage-data" in client.get("/assets/lineage").get_data(as_text=True)
    dags = client.get(f"/dags?q={consumer}").get_data(as_text=True)
    assert f"assets: {uri}" in dags


def test_an_asset_event_is_relayed_to_the_assets_room_only(app: Flask, as_role: Any) -> None:
    client = as_role("viewer")
    sockets = socketio_of(app)
    watching = sockets.test_client(app, flask_test_client=client.http)
    dag_room = sockets.test_client(app, flask_test_client=client.http)
    executor: LocalExecutor = app.extensions["hareflow"].executor()
    try:
        assert watching.emit("join", {"rooms": ["assets"]}, callback=True)["ok"]
        assert dag_room.emit("join", {"rooms": ["dag:make_orders", "dags"]}, callback=True)["ok"]
        executor.publish_events(
            [
                StateEvent(kind="asset", dag_id="make_orders", run_id="r", state="updated", at=1.0),
                StateEvent(kind="run", dag_id="other", run_id="r", state="success", at=2.0),
            ]
        )
        events = wait_for(lambda: received(watching), what="the asset event")
        assert [(e["kind"], e["dag_id"]) for e in events] == [("asset", "make_orders")]
        assert [e["kind"] for e in wait_for(lambda: received(dag_room), what="the run event")] == ["run"]
    finally:
        watching.disconnect()
        dag_room.disconnect()


def test_an_asset_triggered_run_page_lists_the_events_that_started_it(
    web_sessions: sessionmaker[Session], as_role: Any
) -> None:
    from hareflow.common.assets import consume_if_ready
    from hareflow.common.dag import SerializedDag

    uri, _, consumer = producer_and_consumer(web_sessions)
    assert as_role("op").api("POST", "/assets/events", {"uri": uri, "extra": {"n": 2}}).status_code == 201
    with web_sessions() as s, s.begin():
        dag = s.get(Dag, consumer)
        assert dag is not None
        run = consume_if_ready(
            s, dag, SerializedDag.from_dict(dag.serialized).asset_schedule, datetime.now(UTC)
        )
        assert run is not None
        run_id = run.run_id

    client = as_role("viewer")
    page = client.get(path_of("dags", consumer, "runs", run_id)).get_data(as_text=True)
    assert "Triggering asset events" in page and uri in page and "posted by op" in page
    run = client.api("GET", path_of("dags", consumer, "runs", run_id)).json
    assert run["run_type"] == "asset_triggered" and run["conf"] == {}
