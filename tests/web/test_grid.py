"""The grid's JSON and page: each run's type, dates and duration parts for its column head, and the
filters (run type, run state, last N runs) applied by the query and kept in the page's URL."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hareflow.common.db import DagRun
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client, path_of


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("viewer")


def _set_type(sessions: sessionmaker[Session], dag_id: str, run_id: str, run_type: str) -> None:
    with sessions() as s, s.begin():
        s.execute(
            update(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id).values(run_type=run_type)
        )


def _runs(dag_factory: Any, run_factory: Any, sessions: sessionmaker[Session]) -> tuple[str, list[str]]:
    """Five runs a day apart: scheduled success, manual failed, backfill success, scheduled
    running, and a manual one still queued."""
    dag_id = dag_factory()
    plan = [
        ("scheduled", "success"),
        ("manual", "failed"),
        ("backfill", "success"),
        ("scheduled", "running"),
        ("manual", "queued"),
    ]
    runs = []
    for day, (run_type, state) in enumerate(plan):
        run_id = run_factory(
            dag_id,
            f"{run_type}__{day}",
            state=state,
            logical_date=T0 + timedelta(days=day),
            tis={"extract": "success" if state != "queued" else "none"},
        )
        _set_type(sessions, dag_id, run_id, run_type)
        runs.append(run_id)
    return dag_id, runs


def test_each_run_carries_its_type_dates_and_the_queued_and_running_parts_of_its_duration(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id, runs = _runs(dag_factory, run_factory, web_sessions)
    with web_sessions() as s, s.begin():  # queued 3 s before it started
        s.execute(
            update(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.run_id == runs[0])
            .values(queued_at=T0 - timedelta(seconds=3))
        )

    grid = client.api("GET", path_of("dags", dag_id, "grid")).json

    first, running, queued = grid["runs"][0], grid["runs"][3], grid["runs"][4]
    assert grid["timezone"] == "UTC"
    assert [r["run_type"] for r in grid["runs"]] == ["scheduled", "manual", "backfill", "scheduled", "manual"]
    assert first["logical_date"] == "2026-03-01T12:00:00+00:00"
    assert (first["queued_duration"], first["duration"]) == (3.0, 5.0)
    assert (
        first["queued_at"] == "2026-03-01T11:59:57+00:00" and first["end_date"] == "2026-03-01T12:00:05+00:00"
    )
    assert running["state"] == "running" and running["duration"] is None and running["start_date"]
    assert queued["start_date"] is None and queued["queued_duration"] is None and queued["duration"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("run_type=manual", [1, 4]),
        ("state=success", [0, 2]),
        ("run_type=scheduled&state=running", [3]),
        ("limit=2", [3, 4]),
        ("limit=1&run_type=backfill", [2]),
        ("run_type=asset_triggered", []),
    ],
)
def test_the_grid_json_filters_runs_by_type_state_and_count(
    client: Client,
    dag_factory: Any,
    run_factory: Any,
    web_sessions: sessionmaker[Session],
    query: str,
    expected: list[int],
) -> None:
    dag_id, runs = _runs(dag_factory, run_factory, web_sessions)

    grid = client.api("GET", path_of("dags", dag_id, "grid") + "?" + query).json

    assert [r["run_id"] for r in grid["runs"]] == [runs[i] for i in expected]
    assert set(grid["states"]) == {runs[i] for i in expected}
    assert grid["tasks"] == ["extract", "transform", "load"]


@pytest.mark.parametrize("query", ["run_type=nightly", "state=broken", "limit=366", "limit=0"])
def test_a_filter_value_the_grid_does_not_know_is_a_400(client: Client, dag_factory: Any, query: str) -> None:
    dag_id = dag_factory()

    response = client.api("GET", path_of("dags", dag_id, "grid") + "?" + query)

    assert response.status_code == 400
    assert query.split("=")[0] in response.json["error"]


def test_the_grid_page_applies_the_filters_in_its_url_and_shows_them_selected(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id, runs = _runs(dag_factory, run_factory, web_sessions)

    html = client.get(path_of("dags", dag_id, "grid") + "?runs=50&run_type=manual&state=failed").text
    unknown = client.get(path_of("dags", dag_id, "grid") + "?run_type=nightly").text

    data = json.loads(html.split('id="grid-data">')[1].split("</script>")[0])
    assert [r["run_id"] for r in data["runs"]] == [runs[1]]
    assert data["filters"] == {"limit": 50, "run_type": "manual", "state": "failed"}
    assert '<option value="manual" selected>' in html
    assert '<option value="failed" selected>' in html
    assert '<option value="50" selected>' in html
    unknown_data = json.loads(unknown.split('id="grid-data">')[1].split("</script>")[0])
    assert len(unknown_data["runs"]) == 5 and unknown_data["filters"]["run_type"] is None


def test_the_grid_page_has_a_legend_naming_every_task_state(client: Client, dag_factory: Any) -> None:
    from hareflow.common.states import TaskState

    html = client.get(path_of("dags", dag_id := dag_factory(), "grid")).text

    legend = html.split('class="legend"')[1].split("</div>")[0]
    for state in TaskState:
        assert f'data-state="{state.value}"' in legend, (dag_id, state)


def test_the_compact_grid_has_a_letter_per_task_and_run_instead_of_a_dict_of_states(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, state="running", tis={"extract": "success", "transform": "up_for_retry"})

    full = client.api("GET", path_of("dags", dag_id, "grid")).json
    compact = client.api("GET", path_of("dags", dag_id, "grid") + "?compact=true").json

    codes = compact["state_codes"]
    assert codes[:5] == ["none", "scheduled", "queued", "running", "success"] and "up_for_retry" in codes
    letters = compact["cells"][run_id]
    assert len(letters) == len(compact["tasks"]) == 3
    decoded = {
        t: codes[ord(c) - ord("a")] for t, c in zip(compact["tasks"], letters, strict=True) if c != "."
    }
    assert decoded == full["states"][run_id] == {"extract": "success", "transform": "up_for_retry"}
    assert "states" not in compact and "group_states" not in compact and "cells" not in full
