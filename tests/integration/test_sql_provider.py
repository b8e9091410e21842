"""The SQL provider against real databases: PostgreSQL and MariaDB (temporary databases) and SQLite.

Tasks run through ``hareflow.inprocess`` (the ``dags test`` path: the worker's task body, so
templates are rendered and results encoded as on a worker); one runs through the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hareflow.common.providers import test_connection as probe_connection
from hareflow.common.providers.sql import SqlHook
from hareflow.common.secrets import Connection

from hareflow import DAG, DagDefinitionError, SqlCopyTask, SqlTask
from tests.integration.provider_support import LOGICAL_DATE, Connections, connection_uri, run_here
from tests.integration.provider_support import connections as connections  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

DATABASES = ["postgres_url", "mysql_url", "sqlite_url"]


@pytest.fixture(params=DATABASES)
def db(request: pytest.FixtureRequest, connections: Connections) -> str:
    """The id of a connection to an empty temporary database of each kind."""
    connections.define("db", connection_uri(request.getfixturevalue(request.param)))
    return "db"


def make_people(hook: SqlHook) -> None:
    hook.run(
        [
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL, joined DATE)",
            "INSERT INTO people (id, name, joined) VALUES (1, 'ada', '2026-01-01'), (2, 'bob', NULL)",
        ]
    )


def test_the_hook_runs_statements_reads_records_and_inserts_rows_in_batches(db: str) -> None:
    with SqlHook(db) as hook:
        make_people(hook)
        inserted = hook.insert_rows(
            "people",
            [(3, "cy", None), (4, "di", None), (5, "ed", None)],
            ["id", "name", "joined"],
            batch_size=2,
        )
        records = hook.get_records("SELECT id, name FROM people ORDER BY id")
        first = hook.get_first("SELECT name FROM people WHERE id = :id", {"id": 2})
        none = hook.get_first("SELECT name FROM people WHERE id = :id", {"id": 99})
        columns_default = hook.insert_rows("people", [(6, "fay", None)])

    assert inserted == 3 and columns_default == 1
    assert [tuple(r) for r in records] == [(1, "ada"), (2, "bob"), (3, "cy"), (4, "di"), (5, "ed")]
    assert first == ("bob",) and none is None


def test_the_statements_of_one_run_share_one_transaction(db: str) -> None:
    with SqlHook(db) as hook:
        make_people(hook)
        with pytest.raises(Exception, match="no_such_table|doesn't exist|does not exist"):
            hook.run(
                ["INSERT INTO people (id, name) VALUES (7, 'gus')", "INSERT INTO no_such_table VALUES (1)"]
            )
        assert hook.get_first("SELECT COUNT(*) FROM people") == (2,)


def test_a_sql_task_returns_rows_as_dicts_capped_at_max_rows_and_says_so(db: str) -> None:
    with SqlHook(db) as hook:
        make_people(hook)
        hook.insert_rows("people", [(i, f"p{i}", None) for i in range(3, 8)], ["id", "name", "joined"])
    with DAG("sql_rows") as dag:
        SqlTask("capped", db, "SELECT id, name, joined FROM people ORDER BY id", return_rows=True, max_rows=3)
        SqlTask("all", db, "SELECT id, name, joined FROM people WHERE id < 3 ORDER BY id", return_rows=True)
        SqlTask(
            "typed",
            db,
            "SELECT CAST(2.50 AS DECIMAL(4, 2)) AS price, CAST(3 AS DECIMAL(4, 0)) AS whole",
            return_rows=True,
        )

    result, log = run_here(dag)

    assert result.state == "success", log
    assert result.tries["capped"].result == [
        {"id": 1, "name": "ada", "joined": "2026-01-01"},
        {"id": 2, "name": "bob", "joined": None},
        {"id": 3, "name": "p3", "joined": None},
    ]
    assert "more than max_rows=3 rows; the result holds the first 3" in log
    assert len(result.tries["all"].result) == 2
    assert log.count("more than max_rows") == 1
    assert result.tries["typed"].result == [{"price": 2.5, "whole": 3}]


def test_sql_is_a_template_rendered_with_the_run_and_parameters_bind_values(db: str) -> None:
    with SqlHook(db) as hook:
        hook.run("CREATE TABLE loads (day VARCHAR(10), region VARCHAR(10), note VARCHAR(40))")
    with DAG("sql_templates", params={"region": "north"}) as dag:
        load = SqlTask(
            "load",
            db,
            [
                "INSERT INTO loads (day, region, note) VALUES ('{{ ds }}', '{{ params.region }}', :note)",
                "SELECT day, region, note FROM loads",
            ],
            parameters={"note": "run {{ ds_nodash }}"},
            return_rows=True,
        )
        counted = SqlTask(
            "count", db, "SELECT COUNT(*) AS n FROM loads WHERE day = '{{ ds }}'", return_rows=True
        )
        load >> counted

    result, log = run_here(dag, conf={"region": "eu"})

    assert result.state == "success", log
    assert result.tries["load"].result == [{"day": "2026-01-05", "region": "eu", "note": "run 20260105"}]
    assert result.tries["count"].result == [{"n": 1}]
    rendered = json.loads(result.tries["load"].rendered_json or "{}")
    assert rendered["sql"][0].startswith("INSERT INTO loads (day, region, note) VALUES ('2026-01-05', 'eu'")


def test_a_sql_task_without_return_rows_returns_row_counts_and_fails_on_bad_sql(db: str) -> None:
    with SqlHook(db) as hook:
        make_people(hook)
    with DAG("sql_counts") as dag:
        SqlTask("update", db, "UPDATE people SET name = 'x' WHERE id <= 2")
        SqlTask("broken", db, "SELECT * FROM nowhere")

    result, log = run_here(dag)

    assert result.tries["update"].result == [2]
    assert result.states["broken"] == "failed"
    assert "nowhere" in (result.tries["broken"].error or "")


def test_sql_copy_task_copies_postgresql_rows_into_mariadb_in_batches(
    connections: Connections, postgres_url: str, mysql_url: str
) -> None:
    connections.define("source", connection_uri(postgres_url))
    connections.define("target", connection_uri(mysql_url))
    with SqlHook("source") as source:
        source.run("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount NUMERIC(8, 2), placed DATE)")
        source.insert_rows(
            "orders", [(i, i * 1.5, f"2026-01-0{i}") for i in range(1, 6)], ["id", "amount", "placed"]
        )
    with SqlHook("target") as target:
        target.run(
            [
                "CREATE TABLE orders_copy (id INTEGER PRIMARY KEY, amount DECIMAL(8, 2), placed DATE)",
                "INSERT INTO orders_copy VALUES (99, 0, NULL)",
            ]
        )
    with DAG("copy") as dag:
        SqlCopyTask(
            "copy",
            "source",
            "SELECT id, amount, placed FROM orders WHERE placed <= '{{ ds }}' ORDER BY id",
            "target",
            "orders_copy",
            batch_size=2,
            truncate=True,
        )

    result, log = run_here(dag)

    assert result.state == "success", log
    assert result.tries["copy"].result == 5
    assert [line for line in log.splitlines() if line.startswith("copied ")] == [
        "copied 2 row(s) into orders_copy",
        "copied 4 row(s) into orders_copy",
        "copied 5 row(s) into orders_copy",
    ]
    with SqlHook("target") as target:
        rows = target.get_records("SELECT id, amount, placed FROM orders_copy ORDER BY id")
    assert len(rows) == 5  # the row there before was truncated away
    assert [(r[0], float(r[1]), r[2].isoformat()) for r in rows] == [
        (i, i * 1.5, f"2026-01-0{i}") for i in range(1, 6)
    ]


def test_connection_tests_run_select_1_through_the_hook(postgres_url: str, mysql_url: str) -> None:
    for url in (postgres_url, mysql_url):
        probe = probe_connection(Connection.from_uri("probe", connection_uri(url)))
        assert probe.ok, probe.message
        assert probe.message.startswith("SELECT 1 on ")
    missing = Connection.from_uri("probe", connection_uri(postgres_url) + "_missing")
    probe = probe_connection(missing)
    assert not probe.ok and "_missing" in probe.message


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"conn_id": "", "sql": "SELECT 1"}, "conn_id of task 'bad' must be a connection id"),
        ({"conn_id": "db", "sql": "  "}, "sql of task 'bad' is empty"),
        (
            {"conn_id": "db", "sql": ["SELECT 1", ""]},
            "sql of task 'bad' must be a list of non-empty SQL strings",
        ),
        ({"conn_id": "db", "sql": "SELECT {{ ds"}, "sql of task 'bad' is not a valid template"),
        (
            {"conn_id": "db", "sql": "SELECT 1", "max_rows": 0},
            "max_rows of task 'bad' must be a positive integer",
        ),
        (
            {"conn_id": "db", "sql": "SELECT 1", "return_rows": "yes"},
            "return_rows of task 'bad' must be True",
        ),
        ({"conn_id": "db", "sql": "SELECT 1", "parameters": [1]}, "parameters of task 'bad' must be a dict"),
    ],
)
def test_a_sql_task_with_a_bad_argument_fails_at_parse_time_naming_the_task_and_argument(
    arguments: dict, message: str
) -> None:
    with (
        DAG("bad_sql"),
        pytest.raises(DagDefinitionError, match="^.*" + message.replace("(", r"\(")) as caught,
    ):
        SqlTask("bad", **arguments)
    assert caught.value.file == __file__


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 0}, "batch_size of task 'bad' must be a positive integer"),
        ({"target_table": ""}, "target_table of task 'bad' must be a table name"),
        ({"target_fields": "id"}, "target_fields of task 'bad' must be a non-empty list of column names"),
        ({"sql": ["SELECT 1"]}, "sql of task 'bad' must be one SQL query"),
        ({"target_conn_id": None}, "target_conn_id of task 'bad' must be a connection id"),
    ],
)
def test_a_sql_copy_task_with_a_bad_argument_fails_at_parse_time(arguments: dict, message: str) -> None:
    given = {
        "source_conn_id": "a",
        "sql": "SELECT 1",
        "target_conn_id": "b",
        "target_table": "t",
        **arguments,
    }
    with DAG("bad_copy"), pytest.raises(DagDefinitionError, match=message):
        SqlCopyTask("bad", **given)


def test_a_dag_file_using_sql_task_runs_with_dags_test(tmp_path: Path, sqlite_url: str) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "report.py").write_text(
        textwrap.dedent(
            """
            from hareflow import DAG, SqlTask

            with DAG("report"):
                statements = ["CREATE TABLE t (day TEXT)", "INSERT INTO t VALUES ('{{ ds }}')"]
                make = SqlTask("make", "warehouse", statements)
                make >> SqlTask("read", "warehouse", "SELECT day FROM t", return_rows=True)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    env.update(
        HAREFLOW_HOME=str(tmp_path / "home"),
        HAREFLOW_DAGS_FOLDER=str(folder),
        HAREFLOW_CONN_WAREHOUSE=connection_uri(sqlite_url),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hareflow.cli",
            "dags",
            "test",
            "report",
            "--logical-date",
            LOGICAL_DATE.date().isoformat(),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '--- read: success, returned [{"day":"2026-01-05"}]' in done.stdout
