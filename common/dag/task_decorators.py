"""The decorators beyond ``@task``: ``@task.branch``, ``@task.short_circuit``, ``@task.sensor``,
``@setup``, ``@teardown``.

Each returns a ``TaskFactory`` like ``@task`` does (calling it inside a DAG creates the task, with
arguments and settings handled the same way), whose tasks are branch or short-circuit tasks, or
setup or teardown tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hareflow.common.dag.branching import BranchTask, ShortCircuitTask
from hareflow.common.dag.dag import DAG
from hareflow.common.dag.errors import DagDefinitionError
from hareflow.common.dag.python_task import PythonTask, TaskFactory, task
from hareflow.common.dag.sensors import PythonSensor
from hareflow.common.dag.settings import normalize_settings


class KindFactory(TaskFactory):
    """A ``TaskFactory`` for another task class, or for tasks in a setup or teardown role."""

    task_class: type[PythonTask] = PythonTask
    task_options: dict[str, Any]
    role: str | None = None  # "setup" | "teardown"
    on_failure_fail_dagrun: bool = False

    def _create(self, task_id: str, **arguments: Any) -> PythonTask:
        created = self.task_class(task_id, self.function, **self.task_options, **arguments)
        if self.role == "setup":
            created.as_setup()
        elif self.role == "teardown":
            created.as_teardown(on_failure_fail_dagrun=self.on_failure_fail_dagrun)
        return created


def _decorator(
    label: str,
    *,
    task_class: type[PythonTask] = PythonTask,
    options: tuple[str, ...] = (),
    role: str | None = None,
) -> Callable[..., Any]:
    def decorator(
        python_callable: Callable[..., Any] | None = None,
        /,
        *,
        task_id: str | None = None,
        dag: DAG | None = None,
        **settings: Any,
    ) -> Any:
        extra = {name: settings.pop(name) for name in list(settings) if name in options}
        fail_dagrun = settings.pop("on_failure_fail_dagrun", False) if role == "teardown" else False
        checked = normalize_settings(settings, f"{label}({task_id or ''})")
        if not isinstance(fail_dagrun, bool):
            raise DagDefinitionError.here(f"on_failure_fail_dagrun of {label} must be True or False")

        def decorate(function: Callable[..., Any]) -> TaskFactory:
            if not callable(function):
                raise DagDefinitionError.here(f"{label} decorates functions, not {type(function).__name__}")
            factory = KindFactory(function, task_id=task_id, dag=dag, settings=checked)
            factory.task_class, factory.task_options = task_class, extra
            factory.role, factory.on_failure_fail_dagrun = role, fail_dagrun
            return factory

        if python_callable is not None:
            return decorate(python_callable)
        return decorate

    return decorator


branch = _decorator("@task.branch", task_class=BranchTask)
branch.__doc__ = (
    "``@task.branch``: the function returns the id(s) of the direct downstream task(s) to follow."
)
short_circuit = _decorator(
    "@task.short_circuit", task_class=ShortCircuitTask, options=("ignore_downstream_trigger_rules",)
)
short_circuit.__doc__ = (
    "``@task.short_circuit``: a falsy return value skips the downstream tasks (all of them, "
    "transitively, unless ignore_downstream_trigger_rules=False)."
)
sensor = _decorator(
    "@task.sensor",
    task_class=PythonSensor,
    options=("poke_interval", "timeout", "mode", "soft_fail", "exponential_backoff", "max_wait"),
)
sensor.__doc__ = (
    "``@task.sensor(poke_interval=..., timeout=..., mode='poke'|'reschedule', soft_fail=...)``: the "
    "function is the sensor's poke; it returns a bool or a PokeReturnValue."
)
setup = _decorator("@setup", role="setup")
setup.__doc__ = "``@setup``: the function's tasks are setup tasks (``task.as_setup()``)."
teardown = _decorator("@teardown", role="teardown")
teardown.__doc__ = (
    "``@teardown`` or ``@teardown(on_failure_fail_dagrun=True)``: the function's tasks are teardown tasks."
)

# Airflow spells these as attributes of the task decorator.
task.branch = branch  # type: ignore[attr-defined]
task.short_circuit = short_circuit  # type: ignore[attr-defined]
task.sensor = sensor  # type: ignore[attr-defined]
