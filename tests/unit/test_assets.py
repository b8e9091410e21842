"""Assets at parse time (URIs, expressions, outlets, schedules and their errors), their serialized
form, the pure "is this consumer ready" decision, and the wire fields that carry asset events."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hareflow.common.dag import DagDefinitionError, SerializedDag, serialize_dag
from hareflow.common.dag.assets import (
    AssetAll,
    AssetAny,
    AssetError,
    OutletEventAccessors,
    condition_met,
    describe,
    outlet_payload,
    uris_of,
)
from hareflow.common.dag.context import context_from_message
from hareflow.common.messages import ResultMessage, TaskKey, TaskMessage, decode

from hareflow import DAG, Asset, AssetOrTimeSchedule, BashTask, Dataset, DatasetOrTimeSchedule, task

A, B, C = Asset("warehouse://sales/orders"), Asset("s3://bucket/customers"), Asset("files:///tmp/x")
START = datetime(2026, 1, 1)


# -- assets and expressions -------------------------------------------------------------------------


def test_an_asset_is_named_by_its_uri_and_dataset_is_the_same_class() -> None:
    assert Asset("warehouse://sales/orders", name="orders").name == "orders"
    assert Asset("warehouse://sales/orders").name == "warehouse://sales/orders"
    assert Dataset is Asset and DatasetOrTimeSchedule is AssetOrTimeSchedule
    assert Dataset("warehouse://sales/orders") == A and len({A, Asset(A.uri)}) == 1


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "non-empty"),
        (" warehouse://x", "surrounding spaces"),
        ("warehouse://a b", "spaces"),
        ("hareflow://x", "reserved"),
        ("airflow://x", "reserved"),
        ("9bad://x", "bad scheme"),
        ("warehouse://", "nothing after the scheme"),
        ("x" * 501, "at most 500"),
        (42, "must be a string"),
    ],
)
def test_a_bad_uri_is_refused_when_the_asset_is_created(uri: object, message: str) -> None:
    with pytest.raises(AssetError, match=message):
        Asset(uri)  # type: ignore[arg-type]


def test_an_asset_extra_must_be_a_json_object() -> None:
    with pytest.raises(AssetError, match="JSON object"):
        Asset("warehouse://x", extra=[1])  # type: ignore[arg-type]
    with pytest.raises(AssetError, match="JSON-serialisable"):
        Asset("warehouse://x", extra={"when": object()})


@pytest.mark.parametrize(
    ("expression", "serialized", "text"),
    [
        (A, {"asset": A.uri}, A.uri),
        (A & B, {"all": [{"asset": A.uri}, {"asset": B.uri}]}, f"{A.uri} & {B.uri}"),
        (A | B, {"any": [{"asset": A.uri}, {"asset": B.uri}]}, f"{A.uri} | {B.uri}"),
        (
            (A & B) | C,
            {"any": [{"all": [{"asset": A.uri}, {"asset": B.uri}]}, {"asset": C.uri}]},
            f"({A.uri} & {B.uri}) | {C.uri}",
        ),
        (
            AssetAll(A, AssetAny(B, C)),
            {"all": [{"asset": A.uri}, {"any": [{"asset": B.uri}, {"asset": C.uri}]}]},
            None,
        ),
    ],
)
def test_expressions_serialize_to_nested_all_and_any(
    expression: object, serialized: dict, text: str | None
) -> None:
    assert expression.to_dict() == serialized  # type: ignore[attr-defined]
    if text is not None:
        assert describe(serialized) == text


def test_combining_an_asset_with_something_else_fails_clearly() -> None:
    with pytest.raises(AssetError, match="both sides must be Assets"):
        A | "warehouse://b"  # type: ignore[operator]
    with pytest.raises(AssetError, match="at least one asset"):
        AssetAll()


# -- the readiness decision -------------------------------------------------------------------------

ALL_AB = {"all": [{"asset": "a"}, {"asset": "b"}]}
ANY_AB = {"any": [{"asset": "a"}, {"asset": "b"}]}
NESTED = {"any": [{"all": [{"asset": "a"}, {"asset": "b"}]}, {"asset": "c"}]}


@pytest.mark.parametrize(
    ("expression", "updated", "ready"),
    [
        ({"asset": "a"}, set(), False),
        ({"asset": "a"}, {"a"}, True),
        ({"asset": "a"}, {"b"}, False),
        (ALL_AB, {"a"}, False),
        (ALL_AB, {"b"}, False),
        (ALL_AB, {"a", "b"}, True),
        (ALL_AB, {"a", "b", "z"}, True),
        (ANY_AB, set(), False),
        (ANY_AB, {"a"}, True),
        (ANY_AB, {"b"}, True),
        (NESTED, {"a"}, False),
        (NESTED, {"a", "b"}, True),
        (NESTED, {"c"}, True),
        (NESTED, {"b", "z"}, False),
    ],
)
def test_a_consumer_is_ready_when_its_expression_holds_over_the_updated_assets(
    expression: dict, updated: set[str], ready: bool
) -> None:
    assert condition_met(expression, updated) is ready


def test_the_uris_of_an_expression_are_listed_once_in_order() -> None:
    assert uris_of({"any": [NESTED, {"asset": "a"}, {"asset": "d"}]}) == ["a", "b", "c", "d"]


# -- DAGs: schedules, outlets, serialized form ------------------------------------------------------


def test_a_list_schedule_means_all_of_the_assets_and_needs_no_start_date() -> None:
    with DAG("consumer", schedule=[A, B]) as dag:
        pass
    data = serialize_dag(dag)
    assert data["asset_schedule"] == {"all": [{"asset": A.uri}, {"asset": B.uri}]}
    assert data["schedule"] is None and data["timetable"] is None
    assert [a["uri"] for a in data["assets"]] == [A.uri, B.uri]
    assert SerializedDag.from_dict(data).to_dict() == data


def test_asset_or_time_schedule_keeps_the_cron_and_the_assets() -> None:
    with DAG(
        "both", schedule=AssetOrTimeSchedule(timetable="0 2 * * *", assets=A | B), start_date=START
    ) as dag:
        pass
    data = serialize_dag(dag)
    assert data["schedule"] == "0 2 * * *"
    assert data["asset_schedule"] == {"any": [{"asset": A.uri}, {"asset": B.uri}]}


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([], "at least one Asset"),
        ([A, "warehouse://b"], "only Assets"),
        (AssetOrTimeSchedule(timetable="0 2 * * *", assets=[A]), "no start_date"),
    ],
)
def test_a_bad_asset_schedule_fails_at_parse_time_naming_the_dag(schedule: object, message: str) -> None:
    with pytest.raises(DagDefinitionError, match=message) as caught:
        DAG("bad", schedule=schedule)
    assert "'bad'" in str(caught.value)


def test_outlets_are_stored_on_the_task_and_absent_when_there_are_none() -> None:
    with DAG("producer") as dag:

        @task(outlets=[A, A, B])
        def write() -> int:
            return 1

        @task
        def other() -> int:
            return 2

        write() >> other()
    tasks = {t["task_id"]: t for t in serialize_dag(dag)["tasks"]}
    assert tasks["write"]["outlets"] == [A.uri, B.uri]
    assert "outlets" not in tasks["other"]
    assert "asset_schedule" not in serialize_dag(dag)


def test_outlets_must_be_assets() -> None:
    with pytest.raises(DagDefinitionError, match="outlets of task 'write' must hold only Assets, not str"):
        with DAG("producer"):
            BashTask("write", "true", outlets=["warehouse://sales/orders"])


# -- at run time and on the wire ---------------------------------------------------------------------


def test_the_extra_a_task_sets_goes_with_its_outlet_and_must_be_json() -> None:
    accessors = OutletEventAccessors()
    accessors[A].extra = {"rows": 3}
    assert outlet_payload([A, B], accessors) == [
        {"uri": A.uri, "extra": {"rows": 3}},
        {"uri": B.uri, "extra": {}},
    ]
    accessors[B].extra = {"bad": object()}
    with pytest.raises(AssetError, match="JSON-serialisable"):
        outlet_payload([B], accessors)


KEY = TaskKey(1, "d", "r", "t", -1, 1)


def test_a_result_without_outlet_events_encodes_as_before_and_one_with_them_round_trips() -> None:
    plain = ResultMessage(key=KEY, outcome="success", worker="w", hostname="h", pid=1, at=1.0)
    assert "outlet_events" not in json.loads(plain.encode())
    with_events = ResultMessage(
        key=KEY,
        outcome="success",
        worker="w",
        hostname="h",
        pid=1,
        at=1.0,
        outlet_events=[{"uri": A.uri, "extra": {"rows": 3}}],
    )
    assert decode(with_events.encode()) == with_events


def test_a_result_with_malformed_outlet_events_is_refused() -> None:
    body = json.loads(
        ResultMessage(key=KEY, outcome="success", worker="w", hostname="h", pid=1, at=1.0).encode()
    )
    body["outlet_events"] = [{"extra": {}}]
    with pytest.raises(ValueError, match="outlet_events"):
        decode(json.dumps(body))


def _task_message(**kw: object) -> TaskMessage:
    return TaskMessage(
        key=KEY,
        max_tries=1,
        dag_file="/d.py",
        queue="default",
        execution_timeout=None,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
        **kw,  # type: ignore[arg-type]
    )


def test_only_task_messages_of_asset_triggered_runs_carry_their_events_and_are_stamped_4() -> None:
    assert json.loads(_task_message().encode())["v"] == 1
    assert "triggering_asset_events" not in json.loads(_task_message().encode())
    event = {
        "uri": A.uri,
        "extra": {"rows": 3},
        "source_dag_id": "p",
        "source_run_id": "r1",
        "source_task_id": "write",
        "source_map_index": -1,
        "timestamp": "2026-01-01T00:00:00+00:00",
    }
    message = _task_message(triggering_asset_events={A.uri: [event]})
    body = json.loads(message.encode())
    assert body["v"] == 4 and decode(message.encode()) == message
    ctx = context_from_message(body)
    (seen,) = ctx.triggering_asset_events[A.uri]
    assert (seen.source_dag_id, seen.source_task_id, seen.extra) == ("p", "write", {"rows": 3})
    assert seen.timestamp == datetime.fromisoformat("2026-01-01T00:00:00+00:00")


def test_airflow_asset_watchers_and_groups_are_refused_with_what_to_write_instead() -> None:
    with pytest.raises(DagDefinitionError, match=r"watchers .* not supported.*BrokerTrigger"):
        Asset("queue://orders", watchers=["a watcher"])
    with pytest.raises(DagDefinitionError, match="asset groups are not supported"):
        Asset("s3://bucket/x", group="ml")
