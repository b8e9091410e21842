"""Which setups and teardowns a clear takes along (Airflow's setup/teardown scope), on a serialized DAG."""

from __future__ import annotations

import pytest
from hareflow.common.dag import SerializedDag, serialize_dag
from hareflow.common.operations import select_task_ids

from hareflow import DAG, BashTask


def scoped_dag() -> SerializedDag:
    """``create >> work >> after >> delete`` (create's teardown), ``cache`` a setup without a
    teardown before ``work``, and ``other_setup >> other_work >> other_teardown`` beside them."""
    with DAG("scope") as dag:
        create, cache, delete = (
            BashTask("create", "true"),
            BashTask("cache", "true"),
            BashTask("delete", "true"),
        )
        work, after = BashTask("work", "true"), BashTask("after", "true")
        create.as_setup()
        cache.as_setup()
        delete.as_teardown(setups=create)
        create >> work >> after >> delete
        cache >> work
        other_setup, other_work = BashTask("other_setup", "true"), BashTask("other_work", "true")
        other_teardown = BashTask("other_teardown", "true")
        other_setup.as_setup()
        other_teardown.as_teardown(setups=other_setup)
        other_setup >> other_work >> other_teardown
    return SerializedDag.from_dict(serialize_dag(dag))


@pytest.mark.parametrize(
    ("pattern", "options", "expected"),
    [
        # a work task: its relevant setups (one with its teardown downstream, one with none) and teardowns
        ("^work$", {}, {"work", "create", "cache", "delete"}),
        ("^after$", {}, {"after", "create", "cache", "delete"}),
        # a setup takes its teardowns along
        ("^create$", {}, {"create", "delete"}),
        ("^other_setup$", {}, {"other_setup", "other_teardown"}),
        # a teardown: not its own setup (its work is not cleared), but a setup without teardowns
        # above it, as Airflow's rule has it
        ("^delete$", {}, {"delete", "cache"}),
        # upstream: everything above, and the teardowns of the setups among them
        ("^after$", {"upstream": True}, {"after", "work", "create", "cache", "delete"}),
        # downstream: the task's downstream, and its own setups as for any clear
        ("^work$", {"downstream": True}, {"work", "after", "delete", "create", "cache"}),
        # the other group of tasks is never touched
        ("^other_work$", {}, {"other_work", "other_setup", "other_teardown"}),
    ],
)
def test_a_clear_takes_the_setups_and_teardowns_of_its_tasks_along(
    pattern: str, options: dict[str, bool], expected: set[str]
) -> None:
    assert select_task_ids(scoped_dag(), pattern, **options) == expected


def test_without_the_scope_only_the_matched_tasks_are_selected() -> None:
    assert select_task_ids(scoped_dag(), "^work$", setups_and_teardowns=False) == {"work"}
