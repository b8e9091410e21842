"""Setup and teardown tasks (Airflow 2.7+): ``task.as_setup()``, ``task.as_teardown(setups=...)``.

A teardown runs once its upstream work is done, whatever its outcome, provided one of its setups
succeeded (trigger rule ``all_done_setup_success``); it is skipped when all its setups were skipped
and ends upstream_failed when none succeeded. A run's state is decided without its teardowns,
unless one is marked ``on_failure_fail_dagrun=True``: then its failure fails the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Self

from hareflow.common.dag.errors import DagDefinitionError
from hareflow.common.dag.trigger_rules import TriggerRule

if TYPE_CHECKING:
    from hareflow.common.dag.task import BaseTask


class SetupTeardownMixin:
    """The setup/teardown role of a task; mixed into ``BaseTask``."""

    is_setup: bool = False
    is_teardown: bool = False
    on_failure_fail_dagrun: bool = False

    task_id: str
    trigger_rule: TriggerRule

    def as_setup(self) -> Self:
        """Mark this task as a setup task; return it (so ``create().as_setup() >> work`` reads)."""
        if self.is_teardown:
            raise DagDefinitionError.here(f"task '{self.task_id}' is a teardown; it cannot also be a setup")
        self.is_setup = True
        return self

    def as_teardown(
        self, *, setups: BaseTask | Iterable[BaseTask] | None = None, on_failure_fail_dagrun: bool = False
    ) -> Self:
        """Mark this task as a teardown of ``setups`` (made setups, and upstream of it); return it."""
        if self.is_setup:
            raise DagDefinitionError.here(f"task '{self.task_id}' is a setup; it cannot also be a teardown")
        if not isinstance(on_failure_fail_dagrun, bool):
            raise DagDefinitionError.here(
                f"on_failure_fail_dagrun of task '{self.task_id}' must be True or False, "
                f"not {on_failure_fail_dagrun!r}"
            )
        self.is_teardown = True
        self.on_failure_fail_dagrun = on_failure_fail_dagrun
        self.trigger_rule = TriggerRule.ALL_DONE_SETUP_SUCCESS
        if setups is not None:
            for setup in _setup_list(setups, self.task_id):
                setup.as_setup()
                self.set_upstream(setup)
        return self

    def __enter__(self) -> None:
        # Airflow's "with teardown_task:" scoping form: refused rather than half-supported.
        raise DagDefinitionError.here(
            f"'with' on task '{self.task_id}' (Airflow's setup/teardown scope) is not supported; "
            f"write setup >> work >> teardown and teardown.as_teardown(setups=setup)"
        )

    def __exit__(self, *exc: object) -> None:  # pragma: no cover - __enter__ always raises
        return None

    if TYPE_CHECKING:

        def set_upstream(self, other: BaseTask | Iterable[BaseTask]) -> None: ...


def _setup_list(setups: Any, task_id: str) -> list[BaseTask]:
    from hareflow.common.dag.task import BaseTask

    items = [setups] if isinstance(setups, BaseTask) else setups
    if not isinstance(items, Iterable) or isinstance(items, str | bytes):
        raise DagDefinitionError.here(f"setups= of teardown '{task_id}' must be a task or a list of tasks")
    items = list(items)
    if not all(isinstance(i, BaseTask) for i in items):
        raise DagDefinitionError.here(f"setups= of teardown '{task_id}' must be a task or a list of tasks")
    return items
