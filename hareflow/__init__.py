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
    Timetable,
    TriggerRule,
    load_plugins,
    task,
)

__all__ = [
    "DAG",
    "BaseTask",
    "BashTask",
    "Context",
    "DagDefinitionError",
    "PythonTask",
    "TaskFailed",
    "TaskResultTooLarge",
    "Timetable",
    "TriggerRule",
    "load_plugins",
    "task",
]
