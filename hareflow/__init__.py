"""hareflow: define workflows as Python DAGs of tasks.

This package is what DAG files import, so it holds the authoring API only; the command-line tool
imports each service lazily when its command runs.
"""

from hareflow.common.dag import (
    DAG,
    BaseTask,
    BashTask,
    BranchTask,
    Context,
    DagDefinitionError,
    FailTask,
    PythonTask,
    ShortCircuitTask,
    SkipTask,
    TaskFailed,
    TaskResultTooLarge,
    TriggerRule,
    load_plugins,
    setup,
    task,
    teardown,
)

__all__ = [
    "DAG",
    "BaseTask",
    "BashTask",
    "BranchTask",
    "Context",
    "DagDefinitionError",
    "FailTask",
    "PythonTask",
    "ShortCircuitTask",
    "SkipTask",
    "TaskFailed",
    "TaskResultTooLarge",
    "TriggerRule",
    "load_plugins",
    "setup",
    "task",
    "teardown",
]
