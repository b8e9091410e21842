"""The Gantt of a run and the Durations of a DAG: their JSON endpoints, their pages, and what the
durations read costs (bounded by the latest N runs, whatever the history)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hareflow.common.db import DagRun, TaskInstance, TaskTry
from hareflow.web.runtime import EXTENSION
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client, path_of

VENDOR = Path(__file__).resolve().parents[2] / "web" / "static" / "vendor"
CHART_JS = "chart-4.6.1.umd.min.js"


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("viewer")


def _ti(
    run: DagRun,
    task_id: str,
    state: str,
    *,
    map_index: int = -1,
    queued: float | None = 0,
    start: float | None = None,
    end: float | None = None,
    try_number: int = 1,
) -> TaskInstance:
    """A task instance of ``run`` whose times are seconds after the run's logical date."""

    def at(seconds: float | None) -> datetime | None:
        assert run.logical_date is not None
        return None if seconds is None else run.logical_date + timedelta(seconds=seconds)

    return TaskInstance(
        run_pk=run.id,
        dag_id=run.dag_id,
        run_id=run.run_id,
        task_id=task_id,
        map_index=map_index,
        state=state,
        try_number=try_number,
        max_tries=3,
        queue="default",
        priority=1,
        pool_slots=1,
        hostname="host-1" if start is not None else None,
        queued_at=at(queued),
        start_date=at(start),
        end_date=at(end),
        duration=None if start is None or end is None else end - start,
    )


def _run(
    sessions: sessionmaker[Session],
    dag_id: str,
    day: int,
    tis: Sequence[dict[str, Any]],
    *,
    state: str = "success",
    took: float | None = 60,
) -> str:
    logical = T0 + timedelta(days=day)
    run_id = f"scheduled__{logical.isoformat()}"
    with sessions() as s, s.begin():
        run = DagRun(
            dag_id=dag_id,
            run_id=run_id,
            run_type="scheduled",
            state=state,
            logical_date=logical,
            interval_key=logical,
            data_interval_start=logical,
            data_interval_end=logical,
            conf={},
            queued_at=logical,
            start_date=logical + timedelta(seconds=1),
            end_date=None if took is None else logical + timedelta(seconds=1 + took),
        )
        s.add(run)
        s.flush()
        s.add_all([_ti(run, **ti) for ti in tis])
    return run_id


# -- Gantt ------------------------------------------------------------------------------------------


def test_the_gantt_has_one_bar_per_task_instance_in_task_order_with_its_queued_and_running_times(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(
        tasks=(("extract", ()), ("fan", ("extract",)), ("load", ("fan",)), ("report", ("load",)))
    )
    run_id = _run(
        web_sessions,
        dag_id,
        0,
        [
            {"task_id": "load", "state": "running", "queued": 20, "start": 22, "try_number": 2},
            {"task_id": "fan", "state": "success", "map_index": 1, "queued": 5, "start": 7, "end": 19},
            {"task_id": "extract", "state": "success", "queued": 1, "start": 2, "end": 5},
            {"task_id": "fan", "state": "failed", "map_index": 0, "queued": 5, "start": 6, "end": 9},
        ],
        state="running",
        took=None,
    )

    data = client.api("GET", path_of("dags", dag_id, "runs", run_id) + "/gantt").json

    rows = [(t["task_id"], t["map_index"], t["state"]) for t in data["task_instances"]]
    assert rows == [
        ("extract", -1, "success"),
        ("fan", 0, "failed"),
        ("fan", 1, "success"),
        ("load", -1, "running"),
    ]
    extract, load = data["task_instances"][0], data["task_instances"][3]
    assert extract["queued_at"] == (T0 + timedelta(seconds=1)).isoformat()
    assert extract["start_date"] == (T0 + timedelta(seconds=2)).isoformat()
    assert extract["end_date"] == (T0 + timedelta(seconds=5)).isoformat()
    assert load["end_date"] is None and load["try_number"] == 2 and load["max_tries"] == 3
    assert load["hostname"] == "host-1" and load["next_retry_at"] is None
    assert data["missing"] == ["report"]
    assert data["run_state"] == "running" and data["now"] and data["end_date"] is None
    assert extract["earlier_tries"] == [] and load["earlier_tries"] == []  # try 1 of load not kept


def test_the_gantt_gives_each_instance_its_earlier_tries_as_they_ended(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(tasks=(("load", ()),))
    run_id = _run(
        web_sessions,
        dag_id,
        0,
        [{"task_id": "load", "state": "success", "queued": 20, "start": 22, "end": 30, "try_number": 3}],
    )
    with web_sessions() as s, s.begin():
        ti = s.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id)).one()
        for number, start in ((1, 2), (2, 10)):
            s.add(
                TaskTry(
                    ti_id=ti.id,
                    try_number=number,
                    state="up_for_retry",
                    hostname=f"h{number}",
                    queued_at=T0 + timedelta(seconds=start - 1),
                    start_date=T0 + timedelta(seconds=start),
                    end_date=T0 + timedelta(seconds=start + 3),
                )
            )

    [load] = client.api("GET", path_of("dags", dag_id, "runs", run_id) + "/gantt").json["task_instances"]

    assert [(t["try_number"], t["state"], t["hostname"]) for t in load["earlier_tries"]] == [
        (1, "up_for_retry", "h1"),
        (2, "up_for_retry", "h2"),
    ]
    assert load["earlier_tries"][1]["start_date"] == (T0 + timedelta(seconds=10)).isoformat()
    assert load["earlier_tries"][1]["end_date"] == (T0 + timedelta(seconds=13)).isoformat()


def test_the_gantt_of_an_unknown_run_or_dag_is_a_404(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory()
    no_run = client.api("GET", path_of("dags", dag_id, "runs", "nope") + "/gantt")
    no_dag = client.api("GET", path_of("dags", "no_such_dag", "runs", "nope") + "/gantt")
    assert (no_run.status_code, no_run.json["error"]) == (404, f"DAG {dag_id!r} has no run 'nope'")
    assert (no_dag.status_code, no_dag.json["error"]) == (404, "no DAG named 'no_such_dag'")


def test_the_gantt_page_embeds_its_data_and_the_vendored_chart_library_and_the_run_page_links_to_it(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, tis={"extract": "success", "transform": "running"})
    run_path = path_of("dags", dag_id, "runs", run_id)

    html = client.get(run_path + "/gantt").text

    data = json.loads(html.split('id="gantt-data">')[1].split("</script>")[0])
    assert [t["task_id"] for t in data["task_instances"]] == ["extract", "transform"]
    assert data["missing"] == ["load"]
    assert f"vendor/{CHART_JS}" in html and 'src="/static/js/gantt.js?v=' in html
    assert 'id="gantt-chart"' in html
    assert f'href="/dags/{dag_id}/runs/{run_id}/gantt" class="" id="gantt-link"' in client.get(run_path).text


# -- durations --------------------------------------------------------------------------------------


def test_durations_cover_the_latest_runs_oldest_first_with_each_tasks_queued_and_running_seconds(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(tasks=(("extract", ()), ("fan", ("extract",)), ("load", ("fan",))))
    for day in range(4):
        _run(
            web_sessions,
            dag_id,
            day,
            [
                {"task_id": "extract", "state": "success", "queued": 1, "start": 3, "end": 3 + day},
                {"task_id": "fan", "state": "success", "map_index": 0, "queued": 5, "start": 6, "end": 9},
                {"task_id": "fan", "state": "success", "map_index": 1, "queued": 5, "start": 8, "end": 20},
            ],
        )
    latest = _run(
        web_sessions,
        dag_id,
        4,
        [
            {"task_id": "extract", "state": "success", "queued": 1, "start": 2, "end": 4},
            {"task_id": "fan", "state": "success", "map_index": 0, "queued": 5, "start": 6, "end": 9},
            {"task_id": "fan", "state": "running", "map_index": 1, "queued": 5, "start": 8},
            {"task_id": "load", "state": "queued", "queued": 21, "start": None},
        ],
        state="running",
        took=None,
    )

    data = client.api("GET", path_of("dags", dag_id) + "/durations?limit=3").json

    assert [r["logical_date"] for r in data["runs"]] == [
        (T0 + timedelta(days=d)).isoformat() for d in (2, 3, 4)
    ]
    assert data["runs"][-1]["run_id"] == latest
    assert [r["duration"] for r in data["runs"]] == [60.0, 60.0, None]
    assert [r["queued"] for r in data["runs"]] == [1.0, 1.0, 1.0]
    assert data["tasks"] == ["extract", "fan", "load"]
    assert data["task_durations"]["extract"] == [2.0, 3.0, 2.0]
    # a mapped task: from its first instance's start to its last one's end; not over: no duration
    assert data["task_durations"]["fan"] == [14.0, 14.0, None]
    assert data["task_queued"]["fan"] == [1.0, 1.0, 1.0]
    assert data["task_durations"]["load"] == [None, None, None]
    assert data["task_queued"]["load"] == [None, None, None]


def test_durations_of_a_dag_without_runs_and_bad_limits(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory()
    data = client.api("GET", path_of("dags", dag_id) + "/durations").json
    assert data == {
        "dag_id": dag_id,
        "limit": 25,
        "runs": [],
        "tasks": [],
        "task_durations": {},
        "task_queued": {},
    }
    assert client.api("GET", path_of("dags", dag_id) + "/durations?limit=0").status_code == 400
    assert client.api("GET", path_of("dags", dag_id) + "/durations?limit=366").status_code == 400
    assert client.api("GET", "/dags/no_such_dag/durations").status_code == 404


def test_the_durations_read_is_two_statements_bounded_by_the_latest_runs(
    app: Flask, client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    for day in range(12):
        _run(
            web_sessions,
            dag_id,
            day,
            [{"task_id": t, "state": "success", "start": 1, "end": 2} for t in ("extract", "load")],
        )
    engines: list[Engine] = [web_sessions.kw["bind"], app.extensions[EXTENSION].request_bind()]
    seen: list[tuple[str, Any]] = []

    def statement(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        seen.append((sql, params))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", statement)
    try:
        response = client.api("GET", path_of("dags", dag_id) + "/durations?limit=5")
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", statement)

    assert response.status_code == 200 and len(response.json["runs"]) == 5
    runs = [(sql, p) for sql, p in seen if "FROM dag_run" in sql]
    tis = [(sql, p) for sql, p in seen if "FROM task_instance" in sql]
    assert len(runs) == 1 and "LIMIT" in runs[0][0]
    assert len(tis) == 1 and "GROUP BY" in tis[0][0]
    with web_sessions() as s:
        latest = set(
            s.scalars(
                select(DagRun.id).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date.desc()).limit(5)
            )
        )
    bound = {v for v in (tis[0][1] or {}).values() if isinstance(v, int)}
    assert bound == latest  # only the task instances of the latest five runs are read


def test_the_durations_tab_embeds_the_chosen_number_of_runs_and_offers_the_choices(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    for day in range(3):
        _run(web_sessions, dag_id, day, [{"task_id": "extract", "state": "success", "start": 1, "end": 4}])
    dag_path = path_of("dags", dag_id)

    html = client.get(dag_path + "/durations?runs=2").text

    data = json.loads(html.split('id="durations-data">')[1].split("</script>")[0])
    assert len(data["runs"]) == 2 and data["task_durations"]["extract"] == [3.0, 3.0]
    assert (
        'data-runs="2"' in html and f"vendor/{CHART_JS}" in html and 'src="/static/js/durations.js?v=' in html
    )
    for n in (25, 50, 100, 365):
        assert f'href="{dag_path}/durations?runs={n}"' in html
    assert f'href="{dag_path}/durations"' in client.get(dag_path + "/grid").text


def test_the_chart_library_is_vendored_with_its_license_and_served_locally(client: Client) -> None:
    assert (VENDOR / "chart-4.6.1.LICENSE").read_text().startswith("The MIT License")
    assert CHART_JS in (VENDOR / "README.md").read_text()
    response = client.get(f"/static/vendor/{CHART_JS}")
    assert response.status_code == 200 and b"Chart.js v4.6.1" in response.data[:200]
    response.close()
