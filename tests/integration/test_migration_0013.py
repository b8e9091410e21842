"""Migration 0013 gives every stored DAG its version 1 (serialized form and source as stored), the
runs that ran that form their version, leaves the others unknown, and goes back down."""

from __future__ import annotations

import hashlib
import json

import pytest
from hareflow.common.dag_versions import version_hash
from hareflow.common.db import create_engine_for
from hareflow.common.db.migrate import downgrade, migrate
from sqlalchemy import text

SERIALIZED = {"version": 1, "dag_id": "sales", "fileloc": "/dags/sales.py", "tasks": []}
SOURCE = "# sales\nfrom hareflow import DAG\n"


@pytest.mark.parametrize("database_url", ["postgres_url", "mysql_url", "sqlite_url"])
def test_stored_dags_get_version_one_and_runs_of_that_form_record_it(
    request: pytest.FixtureRequest, database_url: str
) -> None:
    engine = create_engine_for(request.getfixturevalue(database_url))
    source_digest = hashlib.sha256(SOURCE.encode()).hexdigest()
    try:
        migrate(engine, "0011")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dag (dag_id, fileloc, is_paused, is_active, timezone, owner, tags,"
                    " max_active_runs, max_active_tasks, serialized, dag_hash, last_parsed_at, created_at)"
                    " VALUES ('sales', '/dags/sales.py', false, true, 'UTC', 'me', '[]', 16, 16, :s, 'h-now',"
                    " '2026-02-01 10:00:00', '2026-01-01 00:00:00')"
                ),
                {"s": json.dumps(SERIALIZED)},
            )
            conn.execute(
                text(
                    "INSERT INTO dag (dag_id, fileloc, is_paused, is_active, timezone, owner, tags,"
                    " max_active_runs, max_active_tasks, serialized, dag_hash, created_at)"
                    " VALUES ('placeholder', '/dags/x.py', false, false, 'UTC', 'me', '[]', 16, 16, '{}', '',"
                    " '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO dag_code (fileloc_hash, fileloc, source, source_hash, updated_at)"
                    " VALUES ('k', '/dags/sales.py', :src, :h, '2026-02-01 10:00:00')"
                ),
                {"src": SOURCE, "h": source_digest},
            )
            for pk, run_hash in ((1, "h-now"), (2, "h-before"), (3, None)):
                conn.execute(
                    text(
                        "INSERT INTO dag_run (id, dag_id, run_id, run_type, state, conf, queued_at,"
                        " dag_hash) VALUES (:pk, 'sales', :run_id, 'manual', 'success', '{}',"
                        " '2026-01-01 00:00:00', :h)"
                    ),
                    {"pk": pk, "run_id": f"manual__{pk}", "h": run_hash},
                )
            conn.execute(  # a row pointing at dag_run: the migration must keep it (SQLite too)
                text(
                    "INSERT INTO task_instance (id, run_pk, dag_id, run_id, task_id, map_index, state,"
                    " try_number, max_tries, queue, priority, pool_slots, reschedules)"
                    " VALUES (1, 1, 'sales', 'manual__1', 't', -1, 'success', 1, 1, 'default', 1, 1, 0)"
                )
            )
        migrate(engine)
        with engine.connect() as conn:
            instances = conn.execute(text("SELECT count(*) FROM task_instance")).scalar()
            versions = conn.execute(
                text("SELECT id, dag_id, version_number, version_hash, dag_hash, source FROM dag_version")
            ).all()
            serialized = conn.execute(text("SELECT serialized FROM dag_version")).scalar()
            current = conn.execute(text("SELECT dag_version_id FROM dag WHERE dag_id = 'sales'")).scalar()
            runs = dict(conn.execute(text("SELECT id, dag_version_id FROM dag_run")).tuples().all())
        downgrade(engine, "0011")
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT count(*) FROM dag_run")).scalar()
    finally:
        engine.dispose()

    assert len(versions) == 1  # the placeholder (never stored in full) has none
    vid, dag_id, number, digest, dag_digest, source = versions[0]
    assert (dag_id, number, dag_digest, source) == ("sales", 1, "h-now", SOURCE)
    assert digest == version_hash("h-now", source_digest)  # what the DAG processor computes
    assert (json.loads(serialized) if isinstance(serialized, str) else serialized) == SERIALIZED
    assert current == vid
    assert runs == {1: vid, 2: None, 3: None}
    assert kept == 3 and instances == 1
