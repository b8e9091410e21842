"""Schema migrations on every supported database, through the CLI and through the migration API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner, Result
from hareflow.common.db import Base, Pool, create_engine_for, make_session_factory
from hareflow.common.db.migrate import downgrade, migrate, status
from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine

from hareflow.cli import main

DATABASES = {"postgresql": "postgres_url", "mariadb": "mysql_url", "sqlite": "sqlite_url"}
ALL_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=list(DATABASES))
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of each supported kind."""
    return request.getfixturevalue(DATABASES[request.param])


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine_for(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def hareflow(database_url: str, tmp_path: Path, *args: str) -> Result:
    env = {"HAREFLOW_DATABASE_URL": database_url, "HAREFLOW_HOME": str(tmp_path / "home")}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_db_migrate_then_db_check_both_exit_zero(database_url: str, engine: Engine, tmp_path: Path) -> None:
    migrated = hareflow(database_url, tmp_path, "db", "migrate")
    assert migrated.exit_code == 0, migrated.output
    head = status(engine).head
    assert f"revision {head}" in migrated.output

    checked = hareflow(database_url, tmp_path, "db", "check")
    assert checked.exit_code == 0, checked.output
    assert "current" in checked.output
    assert tables(engine) == ALL_TABLES | {"alembic_version"}


def test_db_check_on_an_empty_database_exits_one_and_says_to_migrate(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    checked = hareflow(database_url, tmp_path, "db", "check")

    assert checked.exit_code == 1
    assert "hareflow db migrate" in checked.output
    assert tables(engine) == set()


def test_migrating_twice_changes_nothing_the_second_time(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    assert hareflow(database_url, tmp_path, "db", "migrate").exit_code == 0
    sessions = make_session_factory(engine)
    with sessions() as session, session.begin():
        session.add(Pool(name="kept", slots=3))
    before = status(engine)

    again = hareflow(database_url, tmp_path, "db", "migrate")

    assert again.exit_code == 0, again.output
    assert status(engine) == before
    assert before.is_current
    with sessions() as session:
        assert session.scalars(select(Pool.slots).where(Pool.name == "kept")).all() == [3]


def test_downgrading_to_base_drops_every_table_and_migrating_brings_them_back(engine: Engine) -> None:
    migrate(engine)
    assert tables(engine) == ALL_TABLES | {"alembic_version"}

    downgrade(engine, "base")
    assert tables(engine) - {"alembic_version"} == set()
    assert status(engine).current is None

    migrate(engine)
    assert tables(engine) == ALL_TABLES | {"alembic_version"}
    assert status(engine).is_current


def test_the_models_match_the_migrated_schema(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
