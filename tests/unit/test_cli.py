"""The ``hareflow`` command without services: help, mistakes caught before any connection,
``tasks test`` (which needs neither broker nor metastore), output helpers and the clear selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from hareflow.common.dag import DAG, BashTask, serialize_dag
from hareflow.common.dag.serialize import SerializedDag
from hareflow.common.operations import OperationError, select_task_ids

from hareflow.cli import main
from hareflow.cli.backfill import _eta
from hareflow.cli.dags import render_dot, render_tree

#: A metastore nobody listens at: commands that must not need one prove it by succeeding anyway.
UNREACHABLE_DB = "postgresql+psycopg2://ops:pw-never-shown@127.0.0.1:1/hareflow"


def hareflow(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    full: dict[str, str | None] = {k: None for k in os.environ if k.startswith("HAREFLOW_")}
    full.update({"HAREFLOW_DATABASE_URL": UNREACHABLE_DB, **(env or {})})
    return CliRunner().invoke(main, list(args), env=full, input=input, catch_exceptions=False)


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


# -- help and completion --------------------------------------------------------------------------


def test_every_command_has_help_with_an_example() -> None:
    commands = list(all_commands(main))
    missing = []
    for path in commands:
        result = hareflow(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        if "Example" not in result.stdout or "hareflow" not in result.stdout.split("Example", 1)[1]:
            missing.append(" ".join(path))
    assert len(commands) > 40
    assert missing == []


def test_the_issue_commands_all_exist() -> None:
    expected = {
        ("standalone",), ("scheduler",), ("worker",), ("results",), ("web",),
        ("db", "migrate"), ("db", "check"), ("db", "reset"),
        ("dags", "list"), ("dags", "show"), ("dags", "pause"), ("dags", "unpause"), ("dags", "errors"),
        ("dags", "next-runs"), ("dags", "trigger"), ("dags", "backfill"), ("dags", "backfill-watch"),
        ("dags", "backfill-cancel"), ("runs", "list"), ("runs", "show"),
        ("tasks", "list"), ("tasks", "test"), ("tasks", "clear"), ("tasks", "logs"), ("tasks", "state"),
        ("workers", "list"), ("queues", "list"),
        ("users", "create"), ("users", "list"), ("users", "delete"), ("users", "set-role"),
        ("pools", "list"), ("pools", "set"), ("pools", "delete"), ("config", "show"), ("version",),
    }  # fmt: skip
    assert expected <= set(all_commands(main))


def test_every_listing_and_show_command_offers_json_output() -> None:
    listing = [
        ("dags", "list"), ("dags", "show"), ("dags", "errors"), ("dags", "next-runs"), ("runs", "list"),
        ("runs", "show"), ("tasks", "list"), ("tasks", "state"), ("workers", "list"), ("queues", "list"),
        ("users", "list"), ("pools", "list"), ("config", "show"),
    ]  # fmt: skip
    for path in listing:
        assert "--output [table|json]" in hareflow(*path, "--help").stdout, path


def test_bash_completion_script_comes_from_the_documented_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "hareflow.cli"],
        env={**env, "_HAREFLOW_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "_hareflow_completion()" in done.stdout
    assert "complete -o nosort -F _hareflow_completion hareflow" in done.stdout


def test_completing_subcommands_lists_them() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "hareflow.cli"],
        env={
            **env,
            "_HAREFLOW_COMPLETE": "bash_complete",
            "COMP_WORDS": "hareflow dags ba",
            "COMP_CWORD": "2",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["plain,backfill", "plain,backfill-cancel", "plain,backfill-watch"]


# -- mistakes caught before connecting ------------------------------------------------------------


def test_bad_conf_and_dates_exit_two_before_touching_the_metastore() -> None:
    one_line_error(hareflow("dags", "trigger", "x", "--conf", "{oops"), "--conf is not valid JSON")
    one_line_error(
        hareflow("dags", "trigger", "x", "--logical-date", "2026-13-45"), "--logical-date '2026-13-45'"
    )
    one_line_error(
        hareflow("dags", "backfill", "x", "--start", "2026-02-01", "--end", "2026-01-01"),
        "--start 2026-02-01 is after --end 2026-01-01",
    )
    one_line_error(
        hareflow("dags", "backfill", "x", "--start", "soon", "--end", "2026-01-01"), "--start 'soon'"
    )
    one_line_error(hareflow("tasks", "test", "x", "y", "--conf", "3"), "--conf must be a JSON object")
    deep = '{"a": ' * 5000 + "1" + "}" * 5000
    one_line_error(hareflow("dags", "trigger", "x", "--conf", deep), "--conf nests more than 32 levels deep")
    big = '{"a": "' + "x" * 300_000 + '"}'
    one_line_error(hareflow("dags", "trigger", "x", "--conf", big), "--conf is over 262144 bytes")


def test_an_unreachable_metastore_is_named_with_its_password_masked_for_every_command() -> None:
    for args in (
        ["dags", "list"],
        ["dags", "show", "x"],
        ["runs", "list"],
        ["tasks", "state", "r", "t"],
        ["users", "list"],
        ["pools", "list"],
        ["workers", "list"],
        ["dags", "trigger", "x"],
    ):
        result = hareflow(*args)
        one_line_error(
            result, "cannot reach the database at postgresql+psycopg2://ops:***@127.0.0.1:1/hareflow"
        )
        assert "pw-never-shown" not in result.output


def test_a_malformed_database_url_is_a_clear_error() -> None:
    one_line_error(hareflow("dags", "list", env={"HAREFLOW_DATABASE_URL": "not a url"}), "database_url")


def test_a_bad_setting_is_a_clear_error() -> None:
    one_line_error(
        hareflow("dags", "list", env={"HAREFLOW_EXECUTOR": "carrier-pigeon"}), "executor = 'carrier-pigeon'"
    )


def test_web_refuses_an_unreachable_metastore_with_one_line() -> None:
    result = hareflow(
        "web", "--port", "9000", env={"HAREFLOW_DATABASE_URL": "postgresql+psycopg2://u:pw@127.0.0.1:1/x"}
    )

    one_line_error(result, "postgresql+psycopg2://u:***@127.0.0.1:1/x")


def test_a_worker_without_a_broker_exits_two_saying_it_needs_one() -> None:
    one_line_error(
        hareflow("worker", "--queues", "a,b", "--concurrency", "2", "--name", "w1"), "HAREFLOW_BROKER_URL"
    )


def test_config_show_masks_secrets_in_the_table_and_in_json() -> None:
    env = {"HAREFLOW_BROKER_URL": "amqp://rabbit:pa55word@broker:5672/", "HAREFLOW_SECRET_KEY": "sign-me"}

    table = hareflow("config", "show", env=env)
    data = json.loads(hareflow("config", "show", "-o", "json", env=env).stdout)

    assert table.exit_code == 0
    assert (
        "pa55word" not in table.stdout
        and "sign-me" not in table.stdout
        and "pw-never-shown" not in table.stdout
    )
    assert data["broker_url"] == "amqp://rabbit:***@broker:5672/"
    assert data["secret_key"] == "***"
    assert data["executor (effective)"] == "rabbitmq"


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    assert hareflow("version").stdout.strip() == version("hareflow")


# -- tasks test -----------------------------------------------------------------------------------

TEST_DAGS = """
    from hareflow import DAG, task

    with DAG("local_try", params={"factor": 2}):
        @task
        def numbers():
            print("making numbers")
            return [1, 2, 3]

        @task
        def scale(values, ctx):
            ctx.log.info("scaling by %s", ctx.params["factor"])
            return {"values": values, "factor": ctx.params["factor"], "run": ctx.run_id[:6]}

        @task
        def explode():
            raise ZeroDivisionError("no luck today")

        @task
        def not_json():
            return {1, 2}

        scale(numbers())
        explode()
        not_json()
"""


@pytest.fixture
def test_env(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "local_try.py").write_text(textwrap.dedent(TEST_DAGS))
    (folder / "other.py").write_text("from hareflow import DAG\nwith DAG('other'):\n    pass\n")
    return {"HAREFLOW_DAGS_FOLDER": str(folder)}


def test_tasks_test_runs_a_task_here_and_prints_its_return_value_as_json(test_env: dict[str, str]) -> None:
    result = hareflow("tasks", "test", "local_try", "numbers", env=test_env)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("making numbers\n")
    assert json.loads(result.stdout.split("\n", 1)[1]) == [1, 2, 3]


def test_tasks_test_gives_missing_upstream_results_as_none_and_conf_overrides_params(
    test_env: dict[str, str],
) -> None:
    result = hareflow("tasks", "test", "local_try", "scale", "--conf", '{"factor": 5}', env=test_env)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"values": None, "factor": 5, "run": "test__"}


def test_tasks_test_exits_one_with_the_tasks_error_when_it_raises(test_env: dict[str, str]) -> None:
    raised = hareflow("tasks", "test", "local_try", "explode", env=test_env)
    not_json = hareflow("tasks", "test", "local_try", "not_json", env=test_env)

    assert raised.exit_code == 1
    assert "ZeroDivisionError: no luck today" in raised.stderr
    assert "task explode failed" in raised.stderr
    assert not_json.exit_code == 1 and "not_json failed" in not_json.stderr


def test_tasks_test_reports_a_self_skip_and_what_a_branch_would_skip(test_env: dict[str, str]) -> None:
    folder = Path(test_env["HAREFLOW_DAGS_FOLDER"])
    (folder / "branchy.py").write_text(
        textwrap.dedent(
            """
            from hareflow import DAG, BashTask, SkipTask, task

            with DAG("branchy"):
                @task.branch
                def pick():
                    return "a"

                @task
                def nothing_to_do():
                    raise SkipTask("no new files")

                pick() >> [BashTask("a", "true"), BashTask("b", "true")]
                nothing_to_do()
            """
        )
    )
    skipped = hareflow("tasks", "test", "branchy", "nothing_to_do", env=test_env)
    branched = hareflow("tasks", "test", "branchy", "pick", env=test_env)

    assert skipped.exit_code == 0 and "skipped itself: no new files" in skipped.stderr
    assert branched.exit_code == 0 and "it would skip: b" in branched.stderr
    assert "skipping: b" in branched.stdout  # the task's log, as a worker would store it
    assert json.loads(branched.stdout.splitlines()[-1]) == "a"


def test_tasks_test_with_an_unknown_dag_or_task_or_a_broken_file_exits_two(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    one_line_error(hareflow("tasks", "test", "nope", "numbers", env=test_env), "no DAG named 'nope'")
    one_line_error(
        hareflow("tasks", "test", "local_try", "nope", env=test_env), "has no task 'nope'", "numbers"
    )
    broken = Path(test_env["HAREFLOW_DAGS_FOLDER"]) / "broken.py"
    broken.write_text(
        "from hareflow import DAG\nwith DAG('broken'):\n    raise RuntimeError('half written')\n"
    )
    one_line_error(hareflow("tasks", "test", "broken", "t", env=test_env), "broken.py:3", "half written")
    missing = {"HAREFLOW_DAGS_FOLDER": str(tmp_path / "missing")}
    one_line_error(hareflow("tasks", "test", "local_try", "numbers", env=missing), "does not exist")


# -- pure helpers ---------------------------------------------------------------------------------


def diamond() -> SerializedDag:
    with DAG("diamond", schedule="@daily", start_date=datetime(2026, 1, 1)) as dag:
        a = BashTask("extract", "true")
        b = BashTask("clean", "true", queue="heavy")
        c = BashTask("audit", "true", trigger_rule="all_done")
        d = BashTask("load", "true")
        a >> [b, c] >> d
        BashTask("solo", "true")
    return SerializedDag.from_dict(serialize_dag(dag))


def test_the_tree_shows_each_root_and_marks_a_task_seen_before() -> None:
    with DAG("chain") as dag:
        a, b, c, d = (BashTask(t, "true") for t in "abcd")
        a >> [b, c]
        b >> d
        c >> d
        d >> BashTask("e", "true")

    lines = render_tree(SerializedDag.from_dict(serialize_dag(dag)))

    assert lines[1:] == [
        "└── a  (BashTask)",
        "    ├── b  (BashTask)",
        "    │   └── d  (BashTask)",
        "    │       └── e  (BashTask)",
        "    └── c  (BashTask)",
        "        └── d  (see above)",
    ]


def test_the_dot_output_has_one_node_per_task_and_one_edge_per_dependency() -> None:
    lines = render_dot(diamond())

    assert lines[0] == 'digraph "diamond" {' and lines[-1] == "}"
    assert sum("->" in line for line in lines) == 4
    assert '  "solo";' in lines


@pytest.mark.parametrize(
    ("pattern", "upstream", "downstream", "expected"),
    [
        (None, False, False, {"extract", "clean", "audit", "load", "solo"}),
        ("^load$", False, False, {"load"}),
        ("^load$", True, False, {"load", "clean", "audit", "extract"}),
        ("clean", False, True, {"clean", "load"}),
        ("^(clean|solo)$", True, True, {"clean", "solo", "extract", "load"}),
    ],
)
def test_clear_selects_matching_tasks_and_their_relatives_when_asked(
    pattern: str | None, upstream: bool, downstream: bool, expected: set[str]
) -> None:
    assert select_task_ids(diamond(), pattern, upstream=upstream, downstream=downstream) == expected


def test_clear_selection_rejects_a_bad_or_unmatched_pattern() -> None:
    with pytest.raises(OperationError, match="not a valid regular expression"):
        select_task_ids(diamond(), "[")
    with pytest.raises(OperationError, match="no task of DAG 'diamond' matches 'zzz'"):
        select_task_ids(diamond(), "zzz")


@pytest.mark.parametrize(
    ("done_now", "done_first", "elapsed", "remaining", "expected"),
    [
        (0, 0, 10.0, 10, "--:--:--"),  # nothing finished while watching: no rate yet
        (5, 5, 10.0, 10, "--:--:--"),  # resumed watching: earlier progress is not this watch's rate
        (4, 0, 8.0, 6, "0:00:12"),
        (11, 1, 600.0, 50, "0:50:00"),
        (3, 0, 1.0, 0, "0:00:00"),
    ],
)
def test_the_backfill_eta_comes_from_the_rate_seen_while_watching(
    done_now: int, done_first: int, elapsed: float, remaining: int, expected: str
) -> None:
    assert _eta(done_now, done_first, elapsed, remaining) == expected
