"""The DAG list's recent runs (``web.queries.recent_runs``): each DAG's latest 25 runs counted by
state and its latest run, read per DAG through the ``(dag_id, logical_date)`` index, the same on
PostgreSQL, MySQL/MariaDB and SQLite, whatever each DAG's history holds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hareflow.common.db import Dag, DagRun, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.web.queries import recent_runs
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

DATABASES = {"postgresql": "postgres_url", "mysql": "mysql_url", "sqlite": "sqlite_url"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=list(DATABASES))
def sessions(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    engine = create_engine_for(request.getfixturevalue(DATABASES[request.param]))
    migrate(engine)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _run(dag_id: str, n: int, state: str, when: datetime, kind: str = "scheduled") -> dict[str, object]:
    return {
        "dag_id": dag_id,
        "run_id": f"{kind}__{n:04d}",
        "run_type": kind,
        "state": state,
        "logical_date": when,
        "interval_key": when if kind == "scheduled" else None,
        "data_interval_start": when,
        "data_interval_end": when,
        "conf": {},
        "queued_at": when,
        "start_date": when,
        "end_date": when + timedelta(seconds=5),
    }


def _dag(dag_id: str) -> dict[str, object]:
    return {
        "dag_id": dag_id,
        "fileloc": f"/dags/{dag_id}.py",
        "is_active": True,
        "is_paused": False,
        "serialized": {},
        "dag_hash": "h",
        "created_at": T0,
    }


def test_each_dag_gets_its_latest_25_runs_counted_and_its_latest_run(sessions: sessionmaker[Session]) -> None:
    runs = []
    # long: 300 runs, one a day; of the latest 25, the 5 oldest failed.
    for n in range(300):
        runs.append(_run("long", n, "failed" if 275 <= n < 280 else "success", T0 + timedelta(days=n)))
    # short: 3 runs, fewer than 25.
    for n in range(3):
        runs.append(_run("short", n, "running" if n == 2 else "success", T0 + timedelta(hours=n)))
    # tied: 30 runs; the 25th latest logical date is shared by two runs (an old manual run kept
    # the date a scheduled one also has), so one of them is the 26th and is not counted.
    for n in range(30):
        runs.append(_run("tied", n, "success", T0 + timedelta(days=n)))
    runs.append(_run("tied", 99, "failed", T0 + timedelta(days=5), kind="manual"))
    with sessions() as s, s.begin():
        s.execute(insert(Dag), [_dag(d) for d in ("long", "short", "tied", "none")])
        s.execute(insert(DagRun), runs)

    with sessions() as s:
        out = recent_runs(s, ["long", "short", "tied", "none"])

    states, last = out["long"]
    assert states == {"success": 20, "failed": 5}
    assert last is not None and last["run_id"] == "scheduled__0299" and last["state"] == "success"
    states, last = out["short"]
    assert states == {"success": 2, "running": 1}
    assert last is not None and last["run_id"] == "scheduled__0002"
    states, last = out["tied"]
    assert sum(states.values()) == 25
    assert last is not None and last["run_id"] == "scheduled__0029"
    assert "none" not in out  # no runs: nothing to show


def test_fewer_per_dag_and_no_dags(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        s.execute(insert(Dag), [_dag("d")])
        s.execute(insert(DagRun), [_run("d", n, "success", T0 + timedelta(days=n)) for n in range(10)])
    with sessions() as s:
        assert recent_runs(s, ["d"], per_dag=4)["d"][0] == {"success": 4}
        assert recent_runs(s, []) == {}


def test_a_page_of_more_dags_than_one_statement_takes_gets_every_dag(sessions: sessionmaker[Session]) -> None:
    from hareflow.web.queries import UNION_BRANCHES

    names = [f"d{i:03d}" for i in range(UNION_BRANCHES + 30)]
    with sessions() as s, s.begin():
        s.execute(insert(Dag), [_dag(d) for d in names])
        s.execute(
            insert(DagRun),
            [
                _run(d, n, "success" if n else "failed", T0 + timedelta(days=n))
                for d in names
                for n in range(2)
            ],
        )
    with sessions() as s:
        out = recent_runs(s, names)
    assert sorted(out) == names
    assert all(
        out[d][0] == {"success": 1, "failed": 1} and out[d][1]["run_id"] == "scheduled__0001" for d in names
    )
