"""The ``hareflow`` command against a running system on PostgreSQL: DAGs, runs and tasks.

Most tests use click's CliRunner in-process against one hareflow system per module (scheduler and
a local worker, started once); ``--wait`` and ``--follow`` run the real console script in a
subprocess. Each test that changes something uses its own DAG, so the tests do not depend on their
order.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hareflow.common.db import AuditLog, DagRun, TaskInstance
from sqlalchemy import select

from hareflow.cli import main
from hareflow.cluster import Cluster, WorkerSpec
from tests.conftest import PG_URL, _temporary_database, fast_settings
from tests.integration.conftest import wait_until

# -- shared helpers (the other test_cli_* modules import these) -----------------------------------


def hareflow_command() -> list[str]:
    """The installed console script (beside this interpreter), or the module as a fallback."""
    script = Path(sys.executable).with_name("hareflow")
    if script.exists():
        return [str(script)]
    found = shutil.which("hareflow")
    return [found] if found else [sys.executable, "-m", "hareflow.cli"]


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """The test process's environment without any HAREFLOW_* setting, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HAREFLOW_")}
    return {**base, **env}


def run_hareflow(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``hareflow ARGS`` as a real process with only ``env``'s HAREFLOW_* settings."""
    return subprocess.run(
        [*hareflow_command(), *args], env=clean_env(env), capture_output=True, text=True, timeout=timeout
    )


def start_hareflow(env: dict[str, str], *args: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([*hareflow_command(), *args], env=clean_env(env), text=True, **popen)


def invoke_hareflow(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """Run ``hareflow ARGS`` in-process with click's runner; HAREFLOW_* variables not in ``env`` are unset."""
    full: dict[str, str | None] = {k: None for k in os.environ if k.startswith("HAREFLOW_")}
    full.update(env)
    return CliRunner().invoke(main, list(args), input=input, env=full, catch_exceptions=False)


@dataclass
class CliSystem:
    """A running hareflow system and the environment a CLI needs to reach it."""

    cluster: Cluster
    env: dict[str, str]
    dags_folder: Path
    markers: Path

    def invoke(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        """Run ``hareflow ARGS`` in-process; HAREFLOW_* variables other than ours are unset."""
        return invoke_hareflow({**self.env, **(env or {})}, *args, input=input)

    def ok(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = self.invoke(*args, input=input, env=env)
        assert result.exit_code == 0, f"hareflow {' '.join(args)} -> {result.exit_code}\n{result.output}"
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json").stdout)

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        with self.cluster.sessions() as session:
            return session.scalar(
                select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            )

    def run_to_end(
        self, dag_id: str, *, conf: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        """Trigger a run and wait for it to finish; return its run id."""
        created = self.cluster.trigger(dag_id, conf=conf, run_id=run_id)
        self.cluster.wait_for_run(dag_id, created, timeout=60)
        return created

    def tis(self, dag_id: str, run_id: str) -> dict[str, TaskInstance]:
        with self.cluster.sessions() as session:
            rows = session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            )
            return {ti.task_id: ti for ti in rows}

    def audit(self, action: str, dag_id: str | None = None) -> list[AuditLog]:
        with self.cluster.sessions() as session:
            query = select(AuditLog).where(AuditLog.action == action)
            if dag_id is not None:
                query = query.where(AuditLog.dag_id == dag_id)
            return list(session.scalars(query))


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit code 2, one line on stderr containing every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def cli_system(
    tmp_path_factory: pytest.TempPathFactory,
    dag_files: dict[str, str],
    *,
    broker_url: str = "",
    broker_prefix: str = "hareflow",
    workers: Sequence[WorkerSpec] = (WorkerSpec(concurrency=4),),
    wait_for: Sequence[str] = (),
) -> Iterator[CliSystem]:
    """Build a module's system: its own PostgreSQL database, DAG folder and running cluster."""
    tmp = tmp_path_factory.mktemp("cli")
    folder = tmp / "dags"
    folder.mkdir()
    markers = tmp / "markers"
    markers.mkdir()
    for name, source in dag_files.items():
        (folder / name).write_text(textwrap.dedent(source).replace("@MARKERS@", str(markers)))
    for database_url in _temporary_database(PG_URL, f"hft_cli_{uuid.uuid4().hex[:10]}"):
        settings = fast_settings(
            tmp,
            database_url=database_url,
            dags_folder=str(folder),
            broker_url=broker_url,
            broker_prefix=broker_prefix,
        )
        cluster = Cluster(settings, workers=list(workers))
        cluster.migrate()
        cluster.start()
        env = {
            "HAREFLOW_HOME": str(tmp / "home"),
            "HAREFLOW_DATABASE_URL": database_url,
            "HAREFLOW_DAGS_FOLDER": str(folder),
            "HAREFLOW_BROKER_URL": broker_url,
            "HAREFLOW_BROKER_PREFIX": broker_prefix,
        }
        try:
            for dag_id in wait_for:
                cluster.wait_for_dag(dag_id)
            yield CliSystem(cluster=cluster, env=env, dags_folder=folder, markers=markers)
        finally:
            cluster.stop()


# -- this module's system ------------------------------------------------------------------------

DAGS = """
    import time
    from datetime import datetime, timedelta
    from pathlib import Path

    from hareflow import DAG, BashTask, task

    MARKERS = Path("@MARKERS@")

    with DAG("succeeds", params={"greeting": "hello"}):
        @task
        def fine(ctx):
            print(f"{ctx.params['greeting']} from fine")
            return {"said": ctx.params["greeting"]}

        fine()

    with DAG("fails"):
        @task
        def broken():
            raise ValueError("broken on purpose")

        broken()

    for name in ("etl", "etl_prompted", "etl_failed_only"):
        with DAG(name):
            @task
            def extract():
                return [1, 2, 3]

            @task(retries=1, retry_delay=timedelta(seconds=0))
            def load(rows, ctx):
                if not (MARKERS / f"{ctx.dag_id}.ok").exists():
                    raise RuntimeError("warehouse unavailable")
                print(f"loaded {len(rows)} rows")
                return len(rows)

            @task
            def report(count):
                return f"{count} rows"

            report(load(extract()))

    with DAG("pausable"):
        BashTask("hello", "echo hello")

    with DAG("slow"):
        @task
        def nap():
            for i in range(8):
                print(f"tick {i}", flush=True)
                time.sleep(0.6)  # long enough for `tasks logs --follow` to start on a loaded machine
            return "rested"

        @task
        def after(value):
            return value

        after(nap())

    with DAG("pooled"):
        @task(pool="cli_pool")
        def uses_pool():
            return "pooled"

        uses_pool()

    with DAG("diamond", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False):
        a = BashTask("a", "true")
        b = BashTask("b", "true", queue="heavy")
        c = BashTask("c", "true", trigger_rule="all_done")
        d = BashTask("d", "true")
        a >> [b, c] >> d
"""

BROKEN = """
    from hareflow import DAG, BashTask

    with DAG("broken_file"):
        first = BashTask("same", "true")
        second = BashTask("same", "true")
"""

ALL_DAGS = [
    "succeeds",
    "fails",
    "etl",
    "etl_prompted",
    "etl_failed_only",
    "pausable",
    "slow",
    "pooled",
    "diamond",
]


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliSystem]:
    yield from cli_system(tmp_path_factory, {"cli_dags.py": DAGS, "broken_dag.py": BROKEN}, wait_for=ALL_DAGS)


# -- dags -----------------------------------------------------------------------------------------


def test_dags_list_shows_every_active_dag_in_a_table_and_as_json(hf: CliSystem) -> None:
    table = hf.ok("dags", "list").stdout
    data = hf.json("dags", "list")

    assert table.splitlines()[0].split()[:4] == ["DAG_ID", "SCHEDULE", "STATE", "NEXT"]
    assert {d["dag_id"] for d in data} == set(ALL_DAGS)
    diamond = next(d for d in data if d["dag_id"] == "diamond")
    assert set(diamond) == {"dag_id", "schedule", "paused", "owner", "tags", "next_run", "file"}
    assert diamond["schedule"] == "@daily" and diamond["paused"] is False
    assert "diamond" in table and "@daily" in table


def test_dags_show_prints_the_tasks_as_a_tree_with_each_dependency(hf: CliSystem) -> None:
    lines = hf.ok("dags", "show", "diamond").stdout.splitlines()

    assert lines[0].startswith("diamond")
    assert lines[1] == "└── a  (BashTask)"
    assert "    ├── b  (BashTask, queue heavy)" in lines
    assert "    └── c  (BashTask, trigger all_done)" in lines
    assert sum("── d" in line for line in lines) == 2  # d is below both b and c


def test_dags_show_dot_prints_a_graphviz_digraph_with_every_edge(hf: CliSystem) -> None:
    out = hf.ok("dags", "show", "diamond", "--dot").stdout

    assert out.startswith('digraph "diamond" {')
    for edge in ('"a" -> "b"', '"a" -> "c"', '"b" -> "d"', '"c" -> "d"'):
        assert edge in out
    assert out.count("->") == 4


def test_dags_show_as_json_lists_upstream_and_downstream_of_each_task(hf: CliSystem) -> None:
    data = hf.json("dags", "show", "diamond")

    tasks = {t["task_id"]: t for t in data["tasks"]}
    assert tasks["d"]["upstream"] == ["b", "c"]
    assert tasks["a"]["downstream"] == ["b", "c"]
    assert tasks["c"]["trigger_rule"] == "all_done"


def test_an_unknown_dag_is_one_clear_line_and_exit_two_for_every_dag_command(hf: CliSystem) -> None:
    for args in (
        ["dags", "show", "nope"],
        ["dags", "pause", "nope"],
        ["dags", "next-runs", "nope"],
        ["dags", "trigger", "nope"],
        ["tasks", "list", "nope"],
        ["tasks", "clear", "nope", "--yes"],
        ["runs", "list", "nope"],
    ):
        assert_user_error(hf.invoke(*args), "'nope'")


def test_pausing_a_dag_records_who_did_it_and_a_paused_dag_cannot_be_triggered(hf: CliSystem) -> None:
    paused = hf.ok("dags", "pause", "pausable")
    again = hf.ok("dags", "pause", "pausable")
    trigger = hf.invoke("dags", "trigger", "pausable")
    listed = {d["dag_id"]: d for d in hf.json("dags", "list")}
    unpaused = hf.ok("dags", "unpause", "pausable")

    assert paused.stdout.strip() == "DAG pausable paused"
    assert "already paused" in again.stdout
    assert listed["pausable"]["paused"] is True
    assert_user_error(trigger, "paused", "hareflow dags unpause pausable")
    assert unpaused.stdout.strip() == "DAG pausable unpaused"
    assert [(a.action, a.username) for a in hf.audit("pause", "pausable")] == [("pause", getpass.getuser())]
    assert len(hf.audit("unpause", "pausable")) == 1
    assert hf.cluster.trigger("pausable")  # unpaused: triggering works again


def test_dags_errors_lists_the_broken_file_with_its_line_and_message_and_exits_one(hf: CliSystem) -> None:
    as_json = hf.invoke("dags", "errors", "-o", "json")
    table_result = hf.invoke("dags", "errors")
    assert (as_json.exit_code, table_result.exit_code) == (1, 1)  # import errors fail a CI gate
    assert hf.invoke("dags", "errors", "--full").exit_code == 1
    data, table = json.loads(as_json.stdout), table_result.stdout

    [error] = data
    assert error["file"].endswith("broken_dag.py")
    assert error["line"] == 6  # the second BashTask("same", ...)
    assert "same" in error["message"]
    assert "broken_dag.py" in table and " 6 " in table


def test_dags_errors_exits_zero_and_says_so_when_no_file_failed(tmp_path: Path, postgres_url: str) -> None:
    from hareflow.common.db import create_engine_for
    from hareflow.common.db.migrate import migrate

    engine = create_engine_for(postgres_url)
    migrate(engine)
    engine.dispose()
    env = {"HAREFLOW_HOME": str(tmp_path / "home"), "HAREFLOW_DATABASE_URL": postgres_url}
    result = run_hareflow(env, "dags", "errors")
    as_json = run_hareflow(env, "dags", "errors", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "no import errors"
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, [])


def test_next_runs_lists_the_coming_daily_intervals_in_order(hf: CliSystem) -> None:
    data = hf.json("dags", "next-runs", "diamond", "-n", "3")
    table = hf.ok("dags", "next-runs", "diamond", "-n", "2").stdout.splitlines()

    from datetime import datetime, timedelta

    starts = [datetime.fromisoformat(d["logical_date"]) for d in data]
    assert len(starts) == 3
    assert starts[1] - starts[0] == timedelta(days=1) and starts[2] - starts[1] == timedelta(days=1)
    assert data[0]["data_interval_end"] == data[1]["logical_date"]
    assert set(data[0]) == {"logical_date", "data_interval_start", "data_interval_end", "run_after"}
    assert table[0].startswith("LOGICAL DATE") and len(table) == 3


def test_next_runs_of_a_manual_dag_says_it_has_no_schedule(hf: CliSystem) -> None:
    result = hf.ok("dags", "next-runs", "succeeds")

    assert "has no schedule" in result.stderr
    assert hf.json("dags", "next-runs", "succeeds") == []


# -- trigger ------------------------------------------------------------------------------------


def test_trigger_with_wait_prints_task_states_and_exits_zero_when_the_run_succeeds(hf: CliSystem) -> None:
    done = run_hareflow(hf.env, "dags", "trigger", "succeeds", "--conf", '{"greeting": "hi"}', "--wait")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "created run manual__" in done.stdout
    assert any(line.split()[1:] == ["fine", "success"] for line in done.stdout.splitlines()[1:-1])
    assert done.stdout.rstrip().endswith(": success")


def test_trigger_with_wait_exits_one_and_shows_the_error_when_the_run_fails(hf: CliSystem) -> None:
    done = run_hareflow(hf.env, "dags", "trigger", "fails", "--wait", "--timeout", "60")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "broken on purpose" in done.stdout
    assert done.stdout.rstrip().endswith(": failed")


def test_trigger_takes_a_run_id_and_a_logical_date_and_refuses_a_duplicate_run_id(hf: CliSystem) -> None:
    created = hf.ok(
        "dags", "trigger", "succeeds", "--run-id", "nightly-42", "--logical-date", "2026-03-01T02:00"
    )
    duplicate = hf.invoke("dags", "trigger", "succeeds", "--run-id", "nightly-42")

    assert created.stdout.strip() == "created run nightly-42 of succeeds"
    [run] = [r for r in hf.json("runs", "list", "succeeds") if r["run_id"] == "nightly-42"]
    assert run["logical_date"] == "2026-03-01T02:00:00+00:00"
    assert run["triggered_by"] == getpass.getuser()
    assert_user_error(duplicate, "already has a run 'nightly-42'")


def test_a_cli_trigger_is_audited_with_who_and_where_and_a_configured_identity_wins(hf: CliSystem) -> None:
    hf.ok("dags", "trigger", "succeeds", "--run-id", "audited-1", "--conf", '{"greeting": "hi"}')
    hf.ok("dags", "trigger", "succeeds", "--run-id", "audited-2", env={"HAREFLOW_AUDIT_USER": "deploy-bot"})

    rows = {a.run_id: a for a in hf.audit("trigger", "succeeds") if a.run_id in ("audited-1", "audited-2")}
    assert rows["audited-1"].username == getpass.getuser()
    assert rows["audited-1"].details == {"conf": {"greeting": "hi"}, "origin": f"cli@{socket.gethostname()}"}
    assert rows["audited-2"].username == "deploy-bot"
    [run] = [r for r in hf.json("runs", "list", "succeeds") if r["run_id"] == "audited-2"]
    assert run["triggered_by"] == "deploy-bot"


def test_a_cli_trigger_checks_conf_against_the_params_like_the_ui_and_the_api(hf: CliSystem) -> None:
    refused = hf.invoke("dags", "trigger", "succeeds", "--run-id", "typed-1", "--conf", '{"greeting": 5}')

    assert_user_error(refused, "conf.greeting must be a string (like the param's default), not number")
    assert not [r for r in hf.json("runs", "list", "succeeds") if r["run_id"] == "typed-1"]


@pytest.mark.parametrize("run_id", ["nightly/42", "has space", "x" * 251])
def test_trigger_refuses_a_run_id_that_cannot_appear_in_a_url(hf: CliSystem, run_id: str) -> None:
    assert_user_error(
        hf.invoke("dags", "trigger", "succeeds", "--run-id", run_id), "use 1-250 letters, digits"
    )


def test_trigger_with_bad_conf_or_a_date_that_does_not_parse_exits_two(hf: CliSystem) -> None:
    assert_user_error(
        hf.invoke("dags", "trigger", "succeeds", "--conf", "{not json"), "--conf is not valid JSON"
    )
    assert_user_error(
        hf.invoke("dags", "trigger", "succeeds", "--conf", "[1, 2]"), "--conf must be a JSON object"
    )
    assert_user_error(
        hf.invoke("dags", "trigger", "succeeds", "--logical-date", "yesterday"), "--logical-date 'yesterday'"
    )


# -- runs -----------------------------------------------------------------------------------------


def test_runs_list_filters_by_dag_and_state_and_limits_the_count(hf: CliSystem) -> None:
    good = [hf.run_to_end("succeeds") for _ in range(2)]
    bad = hf.run_to_end("fails")

    failed = hf.json("runs", "list", "fails", "--state", "failed")
    limited = hf.json("runs", "list", "succeeds", "--state", "success", "--limit", "1")
    everything = hf.ok("runs", "list", "--limit", "100").stdout

    assert bad in {r["run_id"] for r in failed} and all(r["state"] == "failed" for r in failed)
    assert [r["run_id"] for r in limited] == [good[-1]]  # newest first
    assert set(limited[0]) >= {
        "dag_id",
        "run_id",
        "run_type",
        "state",
        "logical_date",
        "start_date",
        "end_date",
    }
    assert good[0] in everything and bad in everything
    assert hf.invoke("runs", "list", "--state", "exploded").exit_code == 2


def test_runs_show_prints_the_run_and_each_task_instance(hf: CliSystem) -> None:
    run_id = hf.run_to_end("fails")

    text = hf.ok("runs", "show", run_id, "--dag", "fails").stdout
    data = hf.json("runs", "show", run_id)

    assert "state:" in text and "failed" in text
    assert "broken" in text and "ValueError: broken on purpose" in text
    assert data["state"] == "failed"
    [ti] = data["task_instances"]
    assert ti["task_id"] == "broken" and ti["state"] == "failed" and "broken on purpose" in ti["error"]


def test_a_run_id_found_in_two_dags_needs_dag_and_an_unknown_run_is_a_clear_error(hf: CliSystem) -> None:
    hf.run_to_end("succeeds", run_id="shared-id")
    hf.run_to_end("fails", run_id="shared-id")

    ambiguous = hf.invoke("runs", "show", "shared-id")
    chosen = hf.json("runs", "show", "shared-id", "--dag", "fails")
    ambiguous_task = hf.invoke("tasks", "state", "shared-id", "broken")

    assert_user_error(ambiguous, "fails, succeeds", "--dag")
    assert chosen["dag_id"] == "fails"
    assert_user_error(ambiguous_task, "--dag")
    assert_user_error(hf.invoke("runs", "show", "no-such-run"), "no run 'no-such-run'")
    assert_user_error(
        hf.invoke("runs", "show", "shared-id", "--dag", "etl"), "no run 'shared-id' of DAG 'etl'"
    )


# -- tasks ----------------------------------------------------------------------------------------


def test_tasks_list_gives_each_task_its_upstream_tasks_and_settings(hf: CliSystem) -> None:
    data = {t["task_id"]: t for t in hf.json("tasks", "list", "etl")}
    table = hf.ok("tasks", "list", "etl").stdout

    assert list(data) == ["extract", "load", "report"]
    assert data["load"]["upstream"] == ["extract"] and data["load"]["retries"] == 1
    assert table.splitlines()[0].split()[:3] == ["TASK_ID", "TYPE", "UPSTREAM"]


def test_clearing_a_failed_task_and_its_downstream_reruns_them_with_fresh_retries(hf: CliSystem) -> None:
    run_id = hf.run_to_end("etl")
    assert hf.run_state("etl", run_id) == "failed"
    before = hf.tis("etl", run_id)
    assert before["load"].state == "failed" and before["load"].try_number == 2
    (hf.markers / "etl.ok").touch()

    result = hf.ok("tasks", "clear", "etl", "--run-id", run_id, "--task", "^load$", "--downstream", "--yes")

    assert "cleared 2 task instance(s) in 1 run(s)" in result.stdout
    assert f"runs queued again: {run_id}" in result.stdout
    assert hf.cluster.wait_for_run("etl", run_id, timeout=60) == "success"
    after = hf.tis("etl", run_id)
    assert after["load"].state == "success" and after["load"].try_number == 3
    assert after["load"].max_tries == 2 + 1 + 1  # the try it had reached + its retries + 1
    assert after["extract"].try_number == 1  # upstream, not selected: left as it was
    assert after["report"].state == "success"
    [row] = hf.audit("clear", "etl")
    assert (
        row.username == getpass.getuser()
        and row.run_id == run_id
        and sorted(row.details["task_ids"]) == ["load", "report"]
    )


def test_clear_asks_first_and_changes_nothing_when_the_answer_is_no(hf: CliSystem) -> None:
    run_id = hf.run_to_end("etl_prompted")

    refused = hf.invoke("tasks", "clear", "etl_prompted", "--run-id", run_id, input="n\n")
    unchanged = hf.tis("etl_prompted", run_id)
    run_state_after_no = hf.run_state("etl_prompted", run_id)
    accepted = hf.invoke("tasks", "clear", "etl_prompted", "--run-id", run_id, "--task", "load", input="y\n")

    assert refused.exit_code == 1 and "Aborted" in refused.stderr
    assert "would clear" in refused.stderr and "load" in refused.stderr
    assert unchanged["load"].state == "failed" and run_state_after_no == "failed"
    assert accepted.exit_code == 0, accepted.output
    assert "cleared 1 task instance(s)" in accepted.stdout


def test_clear_only_failed_touches_failed_and_upstream_failed_instances_only(hf: CliSystem) -> None:
    run_id = hf.run_to_end("etl_failed_only")

    data = json.loads(
        hf.ok("tasks", "clear", "etl_failed_only", "--only-failed", "--yes", "-o", "json").stdout
    )

    assert sorted((c["task_id"], c["state"]) for c in data["cleared"]) == [
        ("load", "failed"),
        ("report", "upstream_failed"),
    ]
    assert data["runs_requeued"] == [run_id]
    assert hf.tis("etl_failed_only", run_id)["extract"].state == "success"


def test_clear_leaves_a_running_task_alone_and_reports_it_as_skipped(hf: CliSystem) -> None:
    run_id = hf.cluster.trigger("slow")
    wait_until(
        lambda: hf.tis("slow", run_id).get("nap") and hf.tis("slow", run_id)["nap"].state == "running",
        message="nap running",
    )

    data = json.loads(hf.ok("tasks", "clear", "slow", "--run-id", run_id, "--yes", "-o", "json").stdout)

    assert [(s["task_id"], s["state"]) for s in data["skipped"]] == [("nap", "running")]
    assert data["cleared"] == []
    assert hf.cluster.wait_for_run("slow", run_id) == "success"


def test_clear_with_a_bad_regex_or_an_unknown_run_exits_two(hf: CliSystem) -> None:
    assert_user_error(
        hf.invoke("tasks", "clear", "etl", "--task", "(", "--yes"), "not a valid regular expression"
    )
    assert_user_error(
        hf.invoke("tasks", "clear", "etl", "--task", "zzz", "--yes"), "no task of DAG 'etl' matches"
    )
    assert_user_error(hf.invoke("tasks", "clear", "etl", "--run-id", "nope", "--yes"), "has no run 'nope'")


def test_tasks_logs_prints_a_try_and_tasks_state_prints_the_state(hf: CliSystem) -> None:
    run_id = hf.run_to_end("succeeds", conf={"greeting": "bonjour"})

    logs = hf.ok("tasks", "logs", run_id, "fine", "--dag", "succeeds")
    first = hf.ok("tasks", "logs", run_id, "fine", "--dag", "succeeds", "--try", "1")
    state = hf.ok("tasks", "state", run_id, "fine", "--dag", "succeeds")
    detail = hf.json("tasks", "state", run_id, "fine", "--dag", "succeeds")

    assert "bonjour from fine" in logs.stdout
    assert first.stdout == logs.stdout
    assert state.stdout == "success\n"
    assert detail["state"] == "success" and detail["try_number"] == 1 and detail["worker"]


def test_tasks_logs_of_a_try_that_never_ran_or_an_unknown_task_exits_two(hf: CliSystem) -> None:
    run_id = hf.run_to_end("succeeds")

    assert_user_error(
        hf.invoke("tasks", "logs", run_id, "fine", "--dag", "succeeds", "--try", "3"), "1 try so far"
    )
    assert_user_error(
        hf.invoke("tasks", "logs", run_id, "nope", "--dag", "succeeds"), "no task 'nope'", "fine"
    )
    assert_user_error(hf.invoke("tasks", "state", run_id, "nope", "--dag", "succeeds"), "no task 'nope'")


def test_tasks_logs_follow_streams_the_output_until_the_task_finishes(hf: CliSystem) -> None:
    run_id = hf.cluster.trigger("slow")
    wait_until(lambda: hf.tis("slow", run_id).get("nap"), message="task instances created")

    proc = start_hareflow(
        hf.env,
        "tasks",
        "logs",
        run_id,
        "nap",
        "--dag",
        "slow",
        "--follow",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first_line = proc.stdout.readline()
    state_when_first_line = hf.tis("slow", run_id)["nap"].state
    out, err = proc.stdout.read(), proc.stderr.read()  # the rest, through the same buffered pipes
    proc.wait(timeout=60)

    assert proc.returncode == 0, err
    assert first_line == "tick 0\n"
    assert state_when_first_line in ("queued", "running")  # it was printed while the task ran
    assert [line for line in (first_line + out).splitlines() if line.startswith("tick")] == [
        f"tick {i}" for i in range(8)
    ]
    assert "--- success ---" in err


# -- pools through the scheduler --------------------------------------------------------------------


def test_a_task_naming_a_missing_pool_fails_saying_to_run_pools_set_and_runs_once_it_exists(
    hf: CliSystem,
) -> None:
    run_id = hf.run_to_end("pooled")
    error = hf.json("tasks", "state", run_id, "uses_pool", "--dag", "pooled")["error"]

    hf.ok("pools", "set", "cli_pool", "1")
    hf.ok("tasks", "clear", "pooled", "--run-id", run_id, "--yes")

    assert "hareflow pools set cli_pool" in error
    assert hf.cluster.wait_for_run("pooled", run_id) == "success"


# -- the shared operations, for the web UI ------------------------------------------------------------


def test_marking_a_failed_task_success_requeues_its_run_and_the_scheduler_finishes_it(hf: CliSystem) -> None:
    from hareflow.common.operations import mark_task_instance

    run_id = hf.run_to_end("fails")
    with hf.cluster.sessions() as session, session.begin():
        mark_task_instance(session, "fails", run_id, "broken", "success", username="alice")

    assert hf.cluster.wait_for_run("fails", run_id) == "success"
    [row] = [a for a in hf.audit("mark_success", "fails") if a.run_id == run_id]
    assert row.username == "alice" and row.task_id == "broken" and row.details == {"previous_state": "failed"}


def test_tasks_mark_sets_a_state_by_hand_and_the_run_follows_audited_from_the_cli(hf: CliSystem) -> None:
    failed_run = hf.run_to_end("fails")
    good_run = hf.run_to_end("succeeds")

    marked = hf.ok("tasks", "mark", "success", failed_run, "broken", "--dag", "fails")
    as_json = hf.json("tasks", "mark", "failed", good_run, "fine", "--dag", "succeeds")

    assert marked.stdout.strip() == f"marked broken of {failed_run} success (was failed)"
    assert as_json["state"] == "failed" and as_json["task_id"] == "fine"
    assert hf.cluster.wait_for_run("fails", failed_run) == "success"
    assert hf.cluster.wait_for_run("succeeds", good_run) == "failed"
    [row] = [a for a in hf.audit("mark_success", "fails") if a.run_id == failed_run]
    assert row.username == getpass.getuser() and row.task_id == "broken"
    assert row.details == {"previous_state": "failed", "origin": f"cli@{socket.gethostname()}"}
    assert_user_error(hf.invoke("tasks", "mark", "success", failed_run, "nope", "--dag", "fails"), "nope")
    refused = hf.invoke("tasks", "mark", "running", failed_run, "broken", "--dag", "fails")
    assert refused.exit_code == 2 and "'running' is not one of 'success', 'failed'" in refused.stderr


def test_shell_completion_offers_dag_ids_from_the_metastore(hf: CliSystem) -> None:
    done = subprocess.run(
        hareflow_command(),
        env=clean_env(
            {
                **hf.env,
                "_HAREFLOW_COMPLETE": "bash_complete",
                "COMP_WORDS": "hareflow dags show et",
                "COMP_CWORD": "3",
            }
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert sorted(done.stdout.split()) == ["plain,etl", "plain,etl_failed_only", "plain,etl_prompted"]
