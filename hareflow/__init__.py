"""hareflow: define workflows as Python DAGs of tasks.

This package is what DAG files import, so it holds the authoring API only; the command-line tool
imports each service lazily when its command runs.
"""

from hareflow.common.dag import (
    DAG,
    BaseTask,
    BashTask,
    Context,
    DagDefinitionError,
    PythonTask,
    TaskFailed,
    TaskResultTooLarge,
    TriggerRule,
    load_plugins,
    task,
)
from hareflow.common.dag.dag import set_test_runner


def _run_dag_here(dag: DAG, **options: object) -> object:
    from hareflow.inprocess import run_dag  # the scheduler's decisions and the worker's task body

    return run_dag(dag, **options)  # type: ignore[arg-type]


set_test_runner(_run_dag_here)

__all__ = [
    "DAG",
    "BaseTask",
    "BashTask",
    "Context",
    "DagDefinitionError",
    "PythonTask",
    "TaskFailed",
    "TaskResultTooLarge",
    "TriggerRule",
    "load_plugins",
    "task",
]
