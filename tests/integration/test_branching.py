"""End to end: self-skip, fail without retry, branches, short-circuits and setup/teardown.

Every test runs on both executors over PostgreSQL; the core ones also on SQLite with the local
executor and MariaDB with RabbitMQ.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import System

CORE_SYSTEMS = pytest.mark.parametrize(
    "system", ["local", "rabbitmq", "sqlite-local", "mariadb-rabbitmq"], indirect=True
)


def states(system: System, dag_id: str, run_id: str) -> dict[str, str]:
    return {task_id: ti.state for task_id, ti in system.tis(dag_id, run_id).items()}


@CORE_SYSTEMS
def test_a_task_that_skips_itself_ends_skipped_and_its_downstream_follows_trigger_rules(
    system: System, write_dag
) -> None:
    write_dag(
        "self_skip.py",
        """
        from hareflow import DAG, task
        from hareflow.exceptions import AirflowSkipException

        with DAG("self_skip"):
            @task(retries=2)
            def check():
                raise AirflowSkipException("no new files today")

            @task
            def load():
                return "loaded"

            @task(trigger_rule="none_failed")
            def report():
                return "reported"

            c = check()
            c >> load()
            c >> report()
        """,
    )
    system.start()
    run_id, state = system.run_dag("self_skip")

    assert state == "success"
    tis = system.tis("self_skip", run_id)
    assert states(system, "self_skip", run_id) == {"check": "skipped", "load": "skipped", "report": "success"}
    assert tis["check"].try_number == 1
    assert tis["check"].error == "no new files today"
    assert "no new files today" in system.log_text("self_skip", run_id, "check")


@CORE_SYSTEMS
def test_fail_task_fails_at_once_although_retries_remain(system: System, write_dag) -> None:
    write_dag(
        "fail_now.py",
        """
        from datetime import timedelta
        from hareflow import DAG, FailTask, task

        with DAG("fail_now"):
            @task(retries=3, retry_delay=timedelta(seconds=0))
            def call_api():
                raise FailTask("the API key is invalid; retrying will not help")

            call_api()
        """,
    )
    system.start()
    run_id, state = system.run_dag("fail_now")

    assert state == "failed"
    ti = system.tis("fail_now", run_id)["call_api"]
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert "the API key is invalid" in (ti.error or "")


@CORE_SYSTEMS
def test_a_branch_runs_the_chosen_path_and_skips_the_others(system: System, write_dag) -> None:
    write_dag(
        "branch.py",
        """
        from hareflow import DAG, task

        with DAG("branch"):
            @task.branch
            def pick(ctx):
                return "full" if ctx.conf.get("full") else "incremental"

            @task
            def full():
                return "full"

            @task
            def incremental():
                return "incremental"

            @task
            def after_full():
                return "after"

            @task(trigger_rule="none_failed_min_one_success")
            def join():
                return "joined"

            p, f, i, j = pick(), full(), incremental(), join()
            p >> [f, i]
            f >> after_full() >> j
            i >> j
        """,
    )
    system.start()
    run_id, state = system.run_dag("branch")

    assert state == "success"
    assert states(system, "branch", run_id) == {
        "pick": "success",
        "full": "skipped",
        "incremental": "success",
        "after_full": "skipped",
        "join": "success",
    }
    tis = system.tis("branch", run_id)
    assert tis["full"].error == "skipped by branch 'pick' (it followed 'incremental')"
    assert tis["after_full"].error is None  # skipped by its trigger rule, not by the branch
    assert system.result("branch", run_id, "pick") == "incremental"

    run_id, state = system.run_dag("branch", conf={"full": True})
    assert state == "success"
    got = states(system, "branch", run_id)
    assert (got["full"], got["after_full"], got["incremental"], got["join"]) == (
        "success",
        "success",
        "skipped",
        "success",
    )


def test_a_branch_class_with_airflows_spelling_and_an_empty_choice_skips_every_direct_downstream(
    system: System, write_dag
) -> None:
    write_dag(
        "branch_none.py",
        """
        from hareflow import DAG, BashTask, BranchTask

        def choose():
            return []

        with DAG("branch_none"):
            pick = BranchTask("pick", python_callable=choose)
            pick >> [BashTask("a", "true"), BashTask("b", "true")]
        """,
    )
    system.start()
    run_id, state = system.run_dag("branch_none")

    assert state == "success"
    assert states(system, "branch_none", run_id) == {"pick": "success", "a": "skipped", "b": "skipped"}


def test_a_branch_choosing_a_task_that_is_not_downstream_fails_naming_the_valid_ones(
    system: System, write_dag
) -> None:
    write_dag(
        "branch_bad.py",
        """
        from hareflow import DAG, BashTask, task

        with DAG("branch_bad"):
            @task.branch
            def pick():
                return "lod"

            pick() >> [BashTask("load", "true"), BashTask("skip_it", "true")]
        """,
    )
    system.start()
    run_id, state = system.run_dag("branch_bad")

    assert state == "failed"
    tis = system.tis("branch_bad", run_id)
    assert tis["pick"].state == "failed"
    assert "'lod'" in (tis["pick"].error or "")
    assert "the valid ones are: load, skip_it" in (tis["pick"].error or "")
    assert tis["load"].state == "upstream_failed"


@pytest.mark.parametrize("system", ["local", "rabbitmq"], indirect=True)
def test_a_branch_returning_a_task_group_id_follows_the_groups_root_tasks(system: System, write_dag) -> None:
    write_dag(
        "branch_group.py",
        """
        from hareflow import DAG, BashTask, TaskGroup, task

        with DAG("branch_group"):
            @task.branch
            def pick(params):
                return params.get("choice", "loads")

            with TaskGroup("loads") as loads:
                BashTask("first", "true") >> BashTask("second", "true")
                BashTask("other_root", "true")
            report = BashTask("report", "true")
            pick() >> [loads, report]
        """,
    )
    system.start()
    run_id, state = system.run_dag("branch_group")

    assert state == "success"
    assert states(system, "branch_group", run_id) == {
        "pick": "success",
        "loads.first": "success",
        "loads.second": "success",
        "loads.other_root": "success",
        "report": "skipped",
    }
    assert (
        system.tis("branch_group", run_id)["report"].error == "skipped by branch 'pick' (it followed 'loads')"
    )

    run_id, state = system.run_dag("branch_group", conf={"choice": "lods"})
    assert state == "failed"
    error = system.tis("branch_group", run_id)["pick"].error or ""
    assert "chose 'lods'" in error
    assert "the valid ones are: loads.first, loads.other_root, report; task groups: loads" in error


def test_a_falsy_short_circuit_skips_everything_downstream_whatever_the_trigger_rules(
    system: System, write_dag
) -> None:
    write_dag(
        "short.py",
        """
        from hareflow import DAG, task

        with DAG("short"):
            @task.short_circuit
            def changed():
                return 0

            @task
            def load():
                return 1

            @task(trigger_rule="all_done")
            def notify():
                return 2

            changed() >> load() >> notify()
        """,
    )
    system.start()
    run_id, state = system.run_dag("short")

    assert state == "success"
    assert states(system, "short", run_id) == {"changed": "success", "load": "skipped", "notify": "skipped"}
    assert system.tis("short", run_id)["notify"].error == "skipped by short-circuit 'changed' (it returned 0)"


def test_a_short_circuit_that_respects_trigger_rules_skips_only_its_direct_downstream(
    system: System, write_dag
) -> None:
    write_dag(
        "short_rules.py",
        """
        from hareflow import DAG, ShortCircuitTask, task

        with DAG("short_rules"):
            gate = ShortCircuitTask(
                "gate", python_callable=lambda: False, ignore_downstream_trigger_rules=False
            )

            @task
            def load():
                return 1

            @task(trigger_rule="all_done")
            def notify():
                return 2

            @task
            def archive():
                return 3

            l = load()
            gate >> l
            l >> notify()
            l >> archive()
        """,
    )
    system.start()
    run_id, state = system.run_dag("short_rules")

    assert state == "success"
    assert states(system, "short_rules", run_id) == {
        "gate": "success",
        "load": "skipped",
        "notify": "success",
        "archive": "skipped",
    }


def test_a_truthy_short_circuit_lets_everything_run(system: System, write_dag) -> None:
    write_dag(
        "short_true.py",
        """
        from hareflow import DAG, BashTask, task

        with DAG("short_true"):
            @task.short_circuit
            def changed():
                return {"rows": 3}

            changed() >> BashTask("load", "true")
        """,
    )
    system.start()
    run_id, state = system.run_dag("short_true")

    assert state == "success"
    assert states(system, "short_true", run_id) == {"changed": "success", "load": "success"}


SETUP_TEARDOWN_DAG = """
from hareflow import DAG, setup, task, teardown

with DAG("{dag_id}"):
    @setup
    def create_cluster():
        if {setup_fails}:
            raise RuntimeError("no capacity")
        return "cluster-1"

    @task
    def work():
        if {work_fails}:
            raise RuntimeError("the job failed")
        return "done"

    @teardown(on_failure_fail_dagrun={fail_dagrun})
    def delete_cluster():
        if {teardown_fails}:
            raise RuntimeError("could not delete the cluster")
        return "deleted"

    c, t = create_cluster(), delete_cluster()
    c >> work() >> t
    c >> t
"""


def _setup_teardown(system: System, write_dag, **flags: bool) -> tuple[str, dict[str, str]]:
    values = {"setup_fails": False, "work_fails": False, "teardown_fails": False, "fail_dagrun": False}
    values.update(flags)
    dag_id = "st_" + "_".join(k for k, v in values.items() if v) if any(values.values()) else "st_ok"
    write_dag(f"{dag_id}.py", SETUP_TEARDOWN_DAG.format(dag_id=dag_id, **values))
    system.start()
    run_id, state = system.run_dag(dag_id)
    return state, states(system, dag_id, run_id)


def test_a_teardown_runs_after_its_work_failed_and_the_run_fails_for_the_work(
    system: System, write_dag
) -> None:
    state, got = _setup_teardown(system, write_dag, work_fails=True)
    assert got == {"create_cluster": "success", "work": "failed", "delete_cluster": "success"}
    assert state == "failed"


def test_a_failed_teardown_does_not_fail_the_run(system: System, write_dag) -> None:
    state, got = _setup_teardown(system, write_dag, teardown_fails=True)
    assert got == {"create_cluster": "success", "work": "success", "delete_cluster": "failed"}
    assert state == "success"


def test_a_failed_teardown_marked_on_failure_fail_dagrun_fails_the_run(system: System, write_dag) -> None:
    state, got = _setup_teardown(system, write_dag, teardown_fails=True, fail_dagrun=True)
    assert got["delete_cluster"] == "failed"
    assert state == "failed"


def test_when_the_setup_fails_neither_the_work_nor_the_teardown_runs(system: System, write_dag) -> None:
    state, got = _setup_teardown(system, write_dag, setup_fails=True)
    assert got == {"create_cluster": "failed", "work": "upstream_failed", "delete_cluster": "upstream_failed"}
    assert state == "failed"


def test_the_freshness_example_skips_the_load_when_nothing_changed_and_loads_when_it_did(
    system: System, dags_folder
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "dags" / "example_branching.py"
    shutil.copy(example, dags_folder / example.name)
    system.start()

    run_id, state = system.run_dag("example_branching")
    assert state == "success"
    got = states(system, "example_branching", run_id)
    assert (got["load"], got["nothing_changed"], got["notify"], got["report"]) == (
        "skipped",
        "success",
        "skipped",
        "success",
    )

    changed = {"source_updated_at": "2100-01-01T00:00:00+00:00"}
    run_id, state = system.run_dag("example_branching", conf=changed)
    assert state == "success"
    got = states(system, "example_branching", run_id)
    assert (got["load"], got["nothing_changed"], got["notify"], got["report"]) == (
        "success",
        "skipped",
        "success",
        "success",
    )


CLEAR_SCOPE_DAG = """
import pathlib
from hareflow import DAG, BashTask, setup, task, teardown

MARKER = pathlib.Path({marker!r})

with DAG("clear_scope"):
    @setup
    def create_cluster():
        return "cluster-1"

    @task
    def work(cluster):
        if not MARKER.exists():
            raise RuntimeError("the query failed")
        return cluster

    @teardown
    def delete_cluster(cluster):
        return "deleted " + cluster

    @setup
    def unrelated_setup():
        return "other"

    cluster = create_cluster()
    work(cluster) >> delete_cluster(cluster)
    unrelated_setup() >> BashTask("elsewhere", "true")
"""


@pytest.mark.parametrize("system", ["local", "rabbitmq"], indirect=True)
def test_clearing_a_task_clears_its_setup_and_teardown_from_the_cli_and_the_api(
    system: System, write_dag, tmp_path: Path
) -> None:
    from hareflow.web import create_app

    from tests.integration.test_cli import invoke_hareflow
    from tests.web.conftest import add_user, login

    marker = tmp_path / "fixed"
    write_dag("clear_scope.py", CLEAR_SCOPE_DAG.format(marker=str(marker)))
    system.start(secret_key="clear-scope-tests-secret-key-01")
    run_id, state = system.run_dag("clear_scope")
    assert state == "failed"
    assert states(system, "clear_scope", run_id)["work"] == "failed"
    marker.touch()

    env = {
        "HAREFLOW_DATABASE_URL": system.settings.effective_database_url,
        "HAREFLOW_HOME": str(system.settings.home),
    }
    asked = invoke_hareflow(
        env, "tasks", "clear", "clear_scope", "--run-id", run_id, "--task", "^work$", input="n\n"
    )
    planned = asked.output.split("Clear ")[0]
    assert all(t in planned for t in ("create_cluster", "work", "delete_cluster")), asked.output
    assert "unrelated_setup" not in planned and "elsewhere" not in planned
    cleared = invoke_hareflow(
        env, "tasks", "clear", "clear_scope", "--run-id", run_id, "--task", "^work$", "--yes"
    )
    assert cleared.exit_code == 0, cleared.output
    assert "cleared 3 task instance(s) in 1 run(s)" in cleared.output

    assert system.c.wait_for_run("clear_scope", run_id, timeout=60) == "success"
    tries = {t: ti.try_number for t, ti in system.tis("clear_scope", run_id).items()}
    assert tries == {
        "create_cluster": 2,
        "work": 2,
        "delete_cluster": 2,
        "unrelated_setup": 1,
        "elsewhere": 1,
    }

    # The API (and the UI's clear, which calls the same function) clears the same scope.
    add_user(system.c.sessions, "op", "op")
    client = login(
        create_app(system.settings, sessions=system.c.sessions, executor=system.c._shared).test_client(), "op"
    )
    response = client.api("POST", f"/dags/clear_scope/runs/{run_id}/tasks/work/clear", {})
    assert response.status_code == 200, response.text
    assert sorted(r["task_id"] for r in response.json["cleared"]) == [
        "create_cluster",
        "delete_cluster",
        "work",
    ]
    assert system.c.wait_for_run("clear_scope", run_id, timeout=60) == "success"
    tries = {t: ti.try_number for t, ti in system.tis("clear_scope", run_id).items()}
    assert tries == {
        "create_cluster": 3,
        "work": 3,
        "delete_cluster": 3,
        "unrelated_setup": 1,
        "elsewhere": 1,
    }
