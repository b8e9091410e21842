"""What one read request costs the metastore: connection checkouts, statements and commits, counted
with SQLAlchemy's engine and pool events on PostgreSQL.

A list endpoint authenticates and reads in one session (one pooled connection, one transaction),
and takes its total in the same query as its page: the run list is two statements (the token, the
page) and no commit once the token's "last used" time is fresh, and one statement (the page) while
the web server reuses the token's lookup (``TOKEN_CACHE_SECONDS``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from hareflow.web.runtime import EXTENSION
from hareflow.web.security import issue_token, token_cache
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    checkouts: int = 0
    commits: int = 0


@pytest.fixture
def counted(app: Flask, web_sessions: sessionmaker[Session]) -> Iterator[Any]:
    """``counted(request)`` runs ``request()`` and returns what it sent to the metastore, through
    the application's engine and its read engine alike."""
    engines: list[Engine] = [web_sessions.kw["bind"], app.extensions[EXTENSION].request_bind()]
    assert engines[0] is not engines[1]

    def count(request: Any) -> Counted:
        seen = Counted()

        def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
            seen.statements.append(sql)

        def checkout(*_: Any) -> None:
            seen.checkouts += 1

        def commit(_conn: Any) -> None:
            seen.commits += 1

        listeners = [
            listener
            for engine in engines
            for listener in (
                (engine, "before_cursor_execute", statement),
                (engine.pool, "checkout", checkout),
                (engine, "commit", commit),
            )
        ]
        for target, name, fn in listeners:
            event.listen(target, name, fn)
        try:
            response = request()
        finally:
            for target, name, fn in listeners:
                event.remove(target, name, fn)
        assert response.status_code == 200, response.text
        return seen

    yield count


@pytest.fixture
def token(web_sessions: sessionmaker[Session]) -> str:
    with web_sessions() as s, s.begin():
        return issue_token(s, "viewer")


def test_the_run_list_is_one_connection_no_commit_and_one_statement_once_its_token_is_known(
    app: Flask, token: str, counted: Any, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    for day in range(3):
        run_factory(dag_id, logical_date=T0 + timedelta(days=day))
    http, headers = app.test_client(), {"Authorization": f"Bearer {token}"}
    http.get(f"/api/v1/dags/{dag_id}/runs", headers=headers)  # the token's first use is written
    with app.app_context():
        token_cache().clear()

    seen = counted(lambda: http.get(f"/api/v1/dags/{dag_id}/runs?limit=2", headers=headers))

    assert seen.checkouts == 1
    assert len(seen.statements) <= 2, seen.statements
    assert seen.commits == 0
    again = counted(lambda: http.get(f"/api/v1/dags/{dag_id}/runs?limit=2", headers=headers))
    assert len(again.statements) == 1, again.statements  # the token's lookup is reused
    assert again.checkouts == 1 and again.commits == 0
    response = http.get(f"/api/v1/dags/{dag_id}/runs?limit=2", headers=headers)
    assert response.json["total"] == 3 and len(response.json["runs"]) == 2


def test_the_run_list_past_its_last_page_and_of_an_unknown_dag(
    app: Flask, token: str, dag_factory: Any, run_factory: Any
) -> None:
    """An empty page still has the total (a query of its own), and a missing DAG is still a 404."""
    dag_id = dag_factory()
    run_factory(dag_id)
    http, headers = app.test_client(), {"Authorization": f"Bearer {token}"}

    past = http.get(f"/api/v1/dags/{dag_id}/runs?offset=5", headers=headers).json
    missing = http.get("/api/v1/dags/no_such_dag_here/runs", headers=headers)
    empty = http.get(f"/api/v1/dags/{dag_factory()}/runs", headers=headers).json

    assert (past["runs"], past["total"]) == ([], 1)
    assert missing.status_code == 404
    assert (empty["runs"], empty["total"]) == ([], 0)


def test_a_page_reads_in_one_connection_with_its_scheduler_alert(
    as_role: Any, counted: Any, dag_factory: Any
) -> None:
    """The browser's session lookup, the view's reads and the scheduler alert every page shows."""
    client: Client = as_role("viewer")
    dag_factory()
    client.get("/dags")  # the session's "last seen" time is written at most once a minute

    seen = counted(lambda: client.get("/dags"))

    assert seen.checkouts == 1
    assert seen.commits == 0


def test_a_pooled_connection_the_database_closed_is_replaced_before_a_request_uses_it(
    app: Flask, token: str, web_sessions: sessionmaker[Session], dag_factory: Any
) -> None:
    """The read engine pings no connection (no ``SELECT 1`` round trip): it notices a closed one by
    its socket, as a database restart or ``pg_terminate_backend`` leaves it."""
    dag_id = dag_factory()
    http, headers = app.test_client(), {"Authorization": f"Bearer {token}"}
    assert http.get(f"/api/v1/dags/{dag_id}/runs", headers=headers).status_code == 200
    others = "datname = current_database() AND pid <> pg_backend_pid()"
    with web_sessions() as s:
        s.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}"))
        deadline = time.monotonic() + 10
        while s.scalar(text(f"SELECT count(*) FROM pg_stat_activity WHERE {others}")):
            assert time.monotonic() < deadline, "the backends did not end"
            time.sleep(0.05)
            s.rollback()

    responses = [http.get(f"/api/v1/dags/{dag_id}/runs", headers=headers) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200], responses[0].text


def test_the_dag_list_is_one_connection_and_two_statements_with_its_recent_runs(
    app: Flask, token: str, counted: Any, dag_factory: Any, run_factory: Any
) -> None:
    dag_ids = [dag_factory() for _ in range(3)]
    for day in range(3):
        run_factory(dag_ids[0], logical_date=T0 + timedelta(days=day), state=("success", "failed")[day % 2])
    http, headers = app.test_client(), {"Authorization": f"Bearer {token}"}
    query = "&".join(f"dag_id={d}" for d in dag_ids)
    http.get(f"/api/v1/dags?{query}", headers=headers)

    seen = counted(lambda: http.get(f"/api/v1/dags?{query}", headers=headers))
    dags = {d["dag_id"]: d for d in http.get(f"/api/v1/dags?{query}", headers=headers).json["dags"]}

    assert seen.checkouts == 1 and seen.commits == 0
    assert len(seen.statements) == 2, seen.statements  # the DAGs, their recent runs
    assert [dags[d]["recent_states"] for d in dag_ids] == [{"success": 2, "failed": 1}, {}, {}]
    assert dags[dag_ids[0]]["last_run"]["logical_date"] == (T0 + timedelta(days=2)).isoformat()
    assert dags[dag_ids[1]]["last_run"] is None
