"""Migration 0007 gives existing manual runs their logical date as ``interval_key``, keeping the
oldest of any runs that already share one (the others stay NULL and keep working)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hareflow.common.db import create_engine_for
from hareflow.common.db.migrate import migrate
from sqlalchemy import text


@pytest.mark.parametrize("database_url", ["postgres_url", "mysql_url", "sqlite_url"])
def test_manual_runs_get_their_logical_date_as_key_and_the_oldest_duplicate_keeps_it(
    request: pytest.FixtureRequest, database_url: str
) -> None:
    engine = create_engine_for(request.getfixturevalue(database_url))
    try:
        migrate(engine, "0005")
        day, other = datetime(2026, 1, 1, 12), datetime(2026, 1, 2, 12)
        rows = [
            (1, "d", "manual__a", "manual", day, None),
            (2, "d", "manual__b", "manual", day, None),  # the same logical date as run 1
            (3, "d", "manual__c", "manual", other, None),
            (4, "d", "scheduled__x", "scheduled", other - (other - day) / 2, other - (other - day) / 2),
            (5, "e", "manual__a", "manual", day, None),  # another DAG: its own key
        ]
        with engine.begin() as conn:
            for pk, dag_id, run_id, run_type, logical, key in rows:
                conn.execute(
                    text(
                        "INSERT INTO dag_run (id, dag_id, run_id, run_type, state, logical_date,"
                        " interval_key, conf, queued_at) VALUES (:id, :dag, :run, :type, 'success',"
                        " :logical, :key, '{}', :logical)"
                    ),
                    {
                        "id": pk,
                        "dag": dag_id,
                        "run": run_id,
                        "type": run_type,
                        "logical": logical,
                        "key": key,
                    },
                )
        migrate(engine)
        with engine.connect() as conn:
            keys = dict(conn.execute(text("SELECT id, interval_key FROM dag_run ORDER BY id")).tuples().all())
    finally:
        engine.dispose()

    assert [keys[pk] is not None for pk in (1, 2, 3, 4, 5)] == [True, False, True, True, True]
    assert str(keys[1]).startswith("2026-01-01 12:00:00")
