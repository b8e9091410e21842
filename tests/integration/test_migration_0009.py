"""Migration 0009 gives every existing task instance ``reschedules = 0`` and no first poke, and
goes back down."""

from __future__ import annotations

import pytest
from hareflow.common.db import create_engine_for
from hareflow.common.db.migrate import downgrade, migrate
from sqlalchemy import inspect, text


@pytest.mark.parametrize("database_url", ["postgres_url", "mysql_url", "sqlite_url"])
def test_existing_task_instances_get_no_reschedules_and_the_columns_go_on_downgrade(
    request: pytest.FixtureRequest, database_url: str
) -> None:
    engine = create_engine_for(request.getfixturevalue(database_url))
    try:
        migrate(engine, "0008")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dag_run (id, dag_id, run_id, run_type, state, conf, queued_at)"
                    " VALUES (1, 'd', 'manual__a', 'manual', 'running', '{}', '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO task_instance (id, run_pk, dag_id, run_id, task_id, map_index, state,"
                    " try_number, max_tries, queue, priority, pool_slots)"
                    " VALUES (1, 1, 'd', 'manual__a', 't', -1, 'up_for_retry', 1, 2, 'default', 1, 1)"
                )
            )
        migrate(engine)
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT reschedules, first_poke_at FROM task_instance WHERE id = 1")
            ).one()
        downgrade(engine, "0008")  # and back down
        columns = {c["name"] for c in inspect(engine).get_columns("task_instance")}
    finally:
        engine.dispose()

    assert tuple(row) == (0, None)
    assert "reschedules" not in columns and "first_poke_at" not in columns
