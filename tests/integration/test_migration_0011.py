"""Migration 0011 widens ``task_log.seq`` to 64 bits, keeping every stored chunk, and goes back down."""

from __future__ import annotations

import pytest
from hareflow.common.db import create_engine_for
from hareflow.common.db.migrate import downgrade, migrate
from sqlalchemy import text

FAR = 3 * 2**32 + 7  # the seventh chunk of a try's fourth delivery


@pytest.mark.parametrize("database_url", ["postgres_url", "mysql_url", "sqlite_url"])
def test_log_chunk_numbers_past_32_bits_fit_after_the_migration_and_old_chunks_stay(
    request: pytest.FixtureRequest, database_url: str
) -> None:
    engine = create_engine_for(request.getfixturevalue(database_url))
    try:
        migrate(engine, "0010")
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
                    " VALUES (1, 1, 'd', 'manual__a', 't', -1, 'running', 1, 1, 'default', 1, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO task_log (ti_id, try_number, seq, text, created_at)"
                    " VALUES (1, 1, 1, 'first delivery', '2026-01-01 00:00:00')"
                )
            )
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO task_log (ti_id, try_number, seq, text, created_at)"
                    " VALUES (1, 1, :seq, 'fourth delivery', '2026-01-01 00:00:01')"
                ),
                {"seq": FAR},
            )
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT seq, text FROM task_log ORDER BY seq")).all()
            conn.execute(text("DELETE FROM task_log WHERE seq > 2147483647"))
            conn.commit()
        downgrade(engine, "0010")
    finally:
        engine.dispose()

    assert [tuple(r) for r in rows] == [(1, "first delivery"), (FAR, "fourth delivery")]
