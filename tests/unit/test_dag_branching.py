"""Branch and short-circuit decisions, the decorator and class forms, setup/teardown roles, and
the parse-time errors they raise (with the user's file and line)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hareflow.common.dag import DAG, BashTask, BranchTask, ShortCircuitTask, load_dag_file, serialize_dag
from hareflow.common.dag.branching import downstream_skips
from hareflow.common.dag.exceptions import BranchError
from hareflow.common.dag.serialize import SerializedDag
from hareflow.common.states import RunState
from hareflow.scheduler.decisions import TIView, evaluate_run, run_outcome

from hareflow import FailTask, SkipTask, setup, task, teardown
from hareflow.exceptions import AirflowFailException, AirflowSkipException


def branch_dag(choose: object) -> BranchTask:
    """pick >> [a, b, join]; a >> join (Airflow's "empty branch" shape); b >> b2."""
    with DAG("b"):
        pick = BranchTask("pick", lambda: choose)
        a, b, b2, join = (BashTask(t, "true") for t in ("a", "b", "b2", "join"))
        pick >> [a, b, join]
        a >> join
        b >> b2
    return pick


@pytest.mark.parametrize(
    ("choice", "skipped"),
    [
        ("a", ("b",)),  # join is downstream of the chosen a: it is not skipped
        (["a", "b"], ()),
        ("b", ("a", "join")),
        (None, ("a", "b", "join")),
        ([], ("a", "b", "join")),
        (("join",), ("a", "b")),
    ],
)
def test_a_branch_skips_the_direct_downstream_tasks_it_did_not_choose(choice: object, skipped: tuple) -> None:
    pick = branch_dag(choice)
    decision = downstream_skips(pick, choice)
    assert (decision.task_ids if decision else ()) == skipped


@pytest.mark.parametrize("choice", ["b2", ["a", "nope"], 3, [1]])
def test_a_branch_choice_that_is_not_a_direct_downstream_task_is_an_error_naming_the_valid_ones(
    choice: object,
) -> None:
    pick = branch_dag(choice)
    with pytest.raises(BranchError, match="a, b, join"):
        downstream_skips(pick, choice)


def test_a_short_circuit_skips_all_downstream_or_only_the_direct_ones() -> None:
    with DAG("s"):
        deep = ShortCircuitTask("deep", lambda: False)
        shallow = ShortCircuitTask("shallow", lambda: False, ignore_downstream_trigger_rules=False)
        a, b, c = (BashTask(t, "true") for t in "abc")
        down = BashTask("down", "true").as_teardown()
        deep >> a >> b >> down
        shallow >> c >> down
    assert downstream_skips(deep, 0).task_ids == ("a", "b")  # never the teardown
    assert downstream_skips(shallow, "").task_ids == ("c",)
    assert downstream_skips(deep, [1]) is None
    assert downstream_skips(a, None) is None  # an ordinary task decides nothing


def test_the_decorator_forms_create_branch_short_circuit_setup_and_teardown_tasks() -> None:
    with DAG("forms") as dag:

        @task.branch(retries=2)
        def pick():
            return "x"

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def gate():
            return True

        @setup
        def make():
            return 1

        @teardown(on_failure_fail_dagrun=True)
        def drop():
            return 2

        p, g, m, d = pick(), gate(), make(), drop()
        renamed = pick.override(task_id="pick_again")()
    assert isinstance(p, BranchTask) and p.retries == 2
    assert isinstance(renamed, BranchTask) and renamed.task_id == "pick_again"
    assert isinstance(g, ShortCircuitTask) and g.ignore_downstream_trigger_rules is False
    assert m.is_setup and not m.is_teardown
    assert d.is_teardown and d.on_failure_fail_dagrun and d.trigger_rule == "all_done_setup_success"
    assert set(dag.task_ids) == {"pick", "gate", "make", "drop", "pick_again"}


def test_as_teardown_makes_its_setups_setups_and_upstream_and_the_roles_survive_serialization() -> None:
    with DAG("roles") as dag:
        create, work, delete = (BashTask(t, "true") for t in ("create", "work", "delete"))
        create >> work >> delete.as_teardown(setups=create)
    assert create.is_setup and delete.upstream_task_ids == {"work", "create"}
    tasks = {t.task_id: t for t in SerializedDag.from_dict(serialize_dag(dag)).tasks}
    roles = (tasks["create"].is_setup, tasks["delete"].is_teardown, tasks["work"].is_setup)
    assert roles == (True, True, False)
    assert "is_setup" not in tasks["work"].to_dict()  # ordinary tasks serialize as before


def test_the_airflow_exception_names_are_hareflows_classes() -> None:
    assert AirflowSkipException is SkipTask
    assert AirflowFailException is FailTask


@dataclass(frozen=True)
class T:
    task_id: str
    upstream: tuple[str, ...] = ()
    trigger_rule: str = "all_success"
    retry_delay: float = 0.0
    retry_exponential_backoff: bool = False
    max_retry_delay: float | None = None
    is_setup: bool = False
    is_teardown: bool = False
    on_failure_fail_dagrun: bool = False


SETUP = T("setup", is_setup=True)
WORK = T("work", ("setup",))
TEARDOWN = T("teardown", ("setup", "work"), "all_done_setup_success", is_teardown=True)


@pytest.mark.parametrize(
    ("work", "teardown", "fail_dagrun", "expected"),
    [
        ("success", "success", False, RunState.SUCCESS),
        ("success", "failed", False, RunState.SUCCESS),  # a teardown's failure does not fail the run
        ("failed", "success", False, RunState.FAILED),  # the work's failure does, the teardown a leaf
        ("success", "failed", True, RunState.FAILED),
    ],
)
def test_a_runs_state_is_decided_without_its_teardowns(
    work: str, teardown: str, fail_dagrun: bool, expected: RunState
) -> None:
    tasks = [SETUP, WORK, T("teardown", TEARDOWN.upstream, TEARDOWN.trigger_rule, is_teardown=True,
                            on_failure_fail_dagrun=fail_dagrun)]  # fmt: skip
    assert run_outcome(tasks, {"setup": "success", "work": work, "teardown": teardown}) is expected


def test_a_teardown_is_scheduled_after_failed_work_once_its_setup_succeeded() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    states = {"setup": TIView("success"), "work": TIView("failed"), "teardown": TIView("none")}
    assert evaluate_run([SETUP, WORK, TEARDOWN], states, now).schedule == ["teardown"]
    states["setup"] = TIView("failed")
    states["work"] = TIView("upstream_failed")
    assert evaluate_run([SETUP, WORK, TEARDOWN], states, now).upstream_failed == ["teardown"]


HEADER = "from hareflow import DAG, BashTask, ShortCircuitTask, task\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('    ShortCircuitTask("g", print, ignore_downstream_trigger_rules="yes")', "must be True or False"),
        ('    BashTask("t", "true").as_teardown(setups="create")', "setups= of teardown 't'"),
        ('    BashTask("t", "true").as_setup().as_teardown()', "is a setup; it cannot also be a teardown"),
        ("    task.branch(42)", "@task.branch decorates functions"),
        ("    task.short_circuit(queue=3)(print)", "queue"),
    ],
)
def test_bad_branching_and_role_definitions_are_reported_at_parse_time_with_file_and_line(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "bad.py"
    path.write_text(HEADER + 'with DAG("bad"):\n' + body + "\n")
    result = load_dag_file(path)
    assert result.dags == [] and len(result.errors) == 1
    error = result.errors[0]
    assert (error.file, error.line) == (str(path.resolve()), 3)
    assert message in error.message, textwrap.shorten(error.message, 300)
