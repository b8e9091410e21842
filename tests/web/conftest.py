"""Fixtures for the web tests: one migrated PostgreSQL database for the session, an application on
it, logged-in test clients per role, and helpers that insert DAGs, runs and task instances.

Read-only pages are tested on inserted rows (each test makes its own DAG ids, so tests do not see
each other's data); the live tests drive the real scheduler and workers (``Cluster``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hareflow.common.broker.local import LocalExecutor
from hareflow.common.config import Settings
from hareflow.common.dag.serialize import SerializedDag, SerializedTask, dag_hash
from hareflow.common.db import (
    Dag,
    DagRun,
    TaskInstance,
    TaskLog,
    TaskResult,
    create_engine_for,
    make_session_factory,
)
from hareflow.common.db.migrate import migrate
from hareflow.common.users import create_user
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import PG_URL, _temporary_database, fast_settings

PASSWORD = "correct horse battery"
ROLES = ("admin", "op", "viewer")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def web_database_url() -> Iterator[str]:
    yield from _temporary_database(PG_URL, f"hft_web_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def web_sessions(web_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_engine_for(web_database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    with sessions() as s, s.begin():
        for role in ROLES:
            create_user(s, role, PASSWORD, role, created_by="tests")
    try:
        yield sessions
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def web_settings(tmp_path_factory: pytest.TempPathFactory, web_database_url: str) -> Settings:
    tmp = tmp_path_factory.mktemp("web")
    return fast_settings(tmp, database_url=web_database_url, secret_key="tests-only-secret-key-0123456789")


@pytest.fixture(scope="session")
def web_executor() -> Iterator[LocalExecutor]:
    executor = LocalExecutor()
    executor.start()
    yield executor
    executor.close()


@pytest.fixture(scope="session")
def app(web_settings: Settings, web_sessions: sessionmaker[Session], web_executor: LocalExecutor) -> Flask:
    from hareflow.web import create_app

    application = create_app(web_settings, sessions=web_sessions, executor=web_executor)
    application.testing = True
    return application


# -- clients --------------------------------------------------------------------------------------------

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@dataclass
class Client:
    """A test client logged in as one user, with the session's CSRF token at hand."""

    http: FlaskClient
    username: str
    csrf: str

    def get(self, url: str, **kw: Any) -> Any:
        return self.http.get(url, **kw)

    def form(self, url: str, data: Mapping[str, Any] | None = None, *, csrf: bool = True) -> Any:
        payload = dict(data or {})
        if csrf:
            payload["csrf_token"] = self.csrf
        return self.http.post(url, data=payload)

    def api(self, method: str, path: str, body: Any = None, *, csrf: bool = True) -> Any:
        headers = {"X-CSRF-Token": self.csrf} if csrf and method != "GET" else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        return self.http.open("/api/v1" + path, method=method, **kwargs)


def login(http: FlaskClient, username: str, password: str = PASSWORD) -> Client:
    page = http.get("/login")
    token = CSRF_META.search(page.text)
    assert token is not None
    response = http.post(
        "/login", data={"username": username, "password": password, "csrf_token": token.group(1)}
    )
    assert response.status_code == 302, response.text
    after = http.get("/dags")
    new_token = CSRF_META.search(after.text)
    assert new_token is not None
    return Client(http, username, new_token.group(1))


@pytest.fixture
def anon(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin(app: Flask) -> Client:
    return login(app.test_client(), "admin")


@pytest.fixture
def op(app: Flask) -> Client:
    return login(app.test_client(), "op")


@pytest.fixture
def viewer(app: Flask) -> Client:
    return login(app.test_client(), "viewer")


@pytest.fixture(scope="session")
def _role_clients(app: Flask) -> dict[str, Client]:
    return {}


@pytest.fixture
def as_role(app: Flask, _role_clients: dict[str, Client]) -> Any:
    """A logged-in client per role, shared by the tests (log in once: password hashing is slow on
    purpose). Tests that log out use the ``admin``/``op``/``viewer`` fixtures instead."""

    def get(role: str) -> Client:
        if role not in _role_clients:
            _role_clients[role] = login(app.test_client(), role)
        return _role_clients[role]

    return get


# -- data -----------------------------------------------------------------------------------------------


def unique(prefix: str = "dag") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def serialized_dag(
    dag_id: str,
    tasks: Sequence[tuple[str, Sequence[str]]],
    *,
    params: dict[str, Any] | None = None,
    tags: Sequence[str] = (),
    owner: str = "data-team",
    description: str | None = None,
    fileloc: str = "/nonexistent/dags/file.py",
    schedule: str | None = None,
    triggers: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    return SerializedDag(
        triggers=tuple(triggers),
        dag_id=dag_id,
        fileloc=fileloc,
        lineno=1,
        schedule=schedule,
        timezone="UTC",
        start_date=datetime(2026, 1, 1, tzinfo=UTC) if schedule else None,
        end_date=None,
        catchup=False,
        max_active_runs=16,
        max_active_tasks=16,
        params=dict(params or {}),
        tags=tuple(tags),
        owner=owner,
        description=description,
        doc_md=None,
        tasks=tuple(
            SerializedTask(
                task_id=task_id,
                task_type="PythonTask",
                upstream=tuple(sorted(upstream)),
                trigger_rule="all_success",
                retries=1,
                retry_delay=1.0,
                retry_exponential_backoff=False,
                max_retry_delay=None,
                execution_timeout=None,
                queue="default",
                priority=1,
                pool=None,
                pool_slots=1,
                input_tasks=(),
                lineno=None,
                doc=None,
            )
            for task_id, upstream in tasks
        ),
    ).to_dict()


CHAIN = (("extract", ()), ("transform", ("extract",)), ("load", ("transform",)))


def make_dag(
    sessions: sessionmaker[Session],
    dag_id: str | None = None,
    tasks: Sequence[tuple[str, Sequence[str]]] = CHAIN,
    *,
    paused: bool = False,
    source: str | None = None,
    **kwargs: Any,
) -> str:
    """A DAG row as the DAG processor would store it (and its file's ``source``, when given)."""
    dag_id = dag_id or unique()
    data = serialized_dag(dag_id, tasks, **kwargs)
    with sessions() as s, s.begin():
        if source is not None:
            from hareflow.scheduler.dag_processor import store_source

            store_source(s, data["fileloc"], source, T0)
        s.add(
            Dag(
                dag_id=dag_id,
                fileloc=data["fileloc"],
                is_paused=paused,
                is_active=True,
                schedule=data["schedule"],
                timezone="UTC",
                owner=data["owner"],
                tags=list(data["tags"]),
                description=data["description"],
                max_active_runs=16,
                max_active_tasks=16,
                serialized=data,
                dag_hash=dag_hash(data),
                next_logical_date=T0 + timedelta(days=1) if data["schedule"] else None,
                next_run_after=T0 + timedelta(days=2) if data["schedule"] else None,
                last_parsed_at=T0,
                created_at=T0,
            )
        )
    return dag_id


def make_run(
    sessions: sessionmaker[Session],
    dag_id: str,
    run_id: str | None = None,
    *,
    state: str = "success",
    tis: Mapping[str, str] | None = None,
    logical_date: datetime = T0,
    conf: dict[str, Any] | None = None,
    backfill_id: int | None = None,
    logs: Mapping[str, Sequence[tuple[int, int, str]]] | None = None,
    results: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
) -> str:
    """A run with task instances in the given states (try 1), log chunks ``(try, seq, text)`` and
    return values of try 1."""
    run_id = run_id or f"manual__{logical_date.isoformat()}_{uuid.uuid4().hex[:4]}"
    with sessions() as s, s.begin():
        run = DagRun(
            dag_id=dag_id,
            run_id=run_id,
            run_type="backfill" if backfill_id else "manual",
            state=state,
            logical_date=logical_date,
            data_interval_start=logical_date,
            data_interval_end=logical_date,
            conf=conf or {},
            backfill_id=backfill_id,
            triggered_by="tests",
            queued_at=logical_date,
            start_date=logical_date if state != "queued" else None,
            end_date=logical_date + timedelta(seconds=5) if state in ("success", "failed") else None,
        )
        s.add(run)
        s.flush()
        for task_id, ti_state in (tis or {}).items():
            ti = TaskInstance(
                run_pk=run.id,
                dag_id=dag_id,
                run_id=run_id,
                task_id=task_id,
                map_index=-1,
                state=ti_state,
                try_number=0 if ti_state in ("none", "scheduled") else 1,
                max_tries=2,
                queue="default",
                priority=1,
                pool_slots=1,
                hostname="worker-host-1" if ti_state not in ("none", "scheduled", "queued") else None,
                worker="worker-host-1.42" if ti_state not in ("none", "scheduled", "queued") else None,
                queued_at=logical_date,
                start_date=logical_date if ti_state not in ("none", "scheduled", "queued") else None,
                end_date=logical_date + timedelta(seconds=2) if ti_state in ("success", "failed") else None,
                duration=2.0 if ti_state in ("success", "failed") else None,
                error=(errors or {}).get(task_id),
                updated_at=logical_date,
            )
            s.add(ti)
            s.flush()
            for try_number, seq, text in (logs or {}).get(task_id, ()):
                s.add(
                    TaskLog(ti_id=ti.id, try_number=try_number, seq=seq, text=text, created_at=logical_date)
                )
            if task_id in (results or {}):
                s.add(
                    TaskResult(
                        ti_id=ti.id,
                        try_number=1,
                        value_json=json.dumps(results[task_id]),
                        created_at=logical_date,
                    )
                )
    return run_id


_HASHES: dict[str, str] = {}


def add_user(sessions: sessionmaker[Session], username: str, role: str = "viewer") -> None:
    """A user with the usual test password, hashed once per test session."""
    from hareflow.common.db import User
    from werkzeug.security import generate_password_hash

    if PASSWORD not in _HASHES:
        _HASHES[PASSWORD] = generate_password_hash(PASSWORD)
    with sessions() as s, s.begin():
        s.add(User(username=username, password_hash=_HASHES[PASSWORD], role=role, created_at=T0))


@pytest.fixture
def dag_factory(web_sessions: sessionmaker[Session]) -> Any:
    def make(dag_id: str | None = None, tasks: Sequence[tuple[str, Sequence[str]]] = CHAIN, **kw: Any) -> str:
        return make_dag(web_sessions, dag_id, tasks, **kw)

    return make


@pytest.fixture
def run_factory(web_sessions: sessionmaker[Session]) -> Any:
    def make(dag_id: str, run_id: str | None = None, **kw: Any) -> str:
        return make_run(web_sessions, dag_id, run_id, **kw)

    return make


def path_of(*parts: str) -> str:
    from urllib.parse import quote

    return "/" + "/".join(quote(p, safe="") for p in parts)


@pytest.fixture
def tmp_dag_file(tmp_path: Path) -> Path:
    path = tmp_path / "some_dag.py"
    path.write_text("from hareflow import DAG\n# <script>alert('source')</script>\n")
    return path
