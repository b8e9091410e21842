"""Migration 0010 adds the asset tables on top of 0009 (existing rows untouched) with the indexes
the scheduler and the results consumer query by, and its downgrade removes exactly them."""

from __future__ import annotations

import pytest
from hareflow.common.db import create_engine_for
from hareflow.common.db.migrate import downgrade, migrate, status
from sqlalchemy import inspect, text

ASSET_TABLES = {
    "asset",
    "asset_event",
    "dag_schedule_asset",
    "task_outlet_asset",
    "asset_dag_run_queue",
    "dag_run_asset_event",
}


@pytest.mark.parametrize("database_url", ["postgres_url", "mysql_url", "sqlite_url"])
def test_0010_adds_the_asset_tables_after_0009_and_its_downgrade_removes_them(
    request: pytest.FixtureRequest, database_url: str
) -> None:
    engine = create_engine_for(request.getfixturevalue(database_url))
    try:
        migrate(engine, "0009")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO pool (name, slots) VALUES ('kept', 3)"))
        assert not ASSET_TABLES & set(inspect(engine).get_table_names())

        migrate(engine, "0010")
        inspector = inspect(engine)
        assert ASSET_TABLES <= set(inspector.get_table_names())
        assert status(engine).current == "0010"
        event_indexes = {tuple(i["column_names"]) for i in inspector.get_indexes("asset_event")}
        assert ("asset_id", "id") in event_indexes  # an asset's latest events, a consumer's range
        unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("asset_event")}
        unique |= {tuple(i["column_names"]) for i in inspector.get_indexes("asset_event") if i.get("unique")}
        assert ("source_ti_id", "source_try_number", "asset_id") in unique  # one event per try
        queue_key = inspector.get_pk_constraint("asset_dag_run_queue")["constrained_columns"]
        assert queue_key == ["target_dag_id", "asset_id"]
        consumers = {tuple(i["column_names"]) for i in inspector.get_indexes("dag_schedule_asset")}
        assert ("asset_id",) in consumers  # who consumes the asset of a new event

        downgrade(engine, "0009")
        assert not ASSET_TABLES & set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert conn.execute(text("SELECT slots FROM pool WHERE name = 'kept'")).scalar() == 3
    finally:
        engine.dispose()
