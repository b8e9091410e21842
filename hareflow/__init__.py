"""hareflow: define workflows as Python DAGs of tasks.

This package is what DAG files import, so it holds the authoring API only; the command-line tool
imports each service lazily when its command runs.
"""

from hareflow.common.dag import (
    DAG,
    Asset,
    AssetAll,
    AssetAny,
    AssetOrTimeSchedule,
    BaseTask,
    BashTask,
    BranchTask,
    BrokerTrigger,
    Context,
    DagDefinitionError,
    Dataset,
    DatasetAll,
    DatasetAny,
    DatasetOrTimeSchedule,
    FailTask,
    PythonTask,
    ShortCircuitTask,
    SkipTask,
    TaskFailed,
    TaskGroup,
    TaskOutput,
    TaskResultTooLarge,
    Timetable,
    TriggerRule,
    WebhookTrigger,
    load_plugins,
    setup,
    task,
    teardown,
)
from hareflow.common.dag.chain import chain, chain_linear, cross_downstream
from hareflow.common.dag.dag import set_test_runner
from hareflow.common.dag.decorators import dag, task_group
from hareflow.common.providers.http import HttpTask
from hareflow.common.providers.notifiers import (
    BaseNotifier,
    EmailNotifier,
    SlackWebhookNotifier,
    WebhookNotifier,
)
from hareflow.common.providers.sql import SqlCopyTask, SqlTask
from hareflow.common.secrets import Connection, Variable
from hareflow.sensors import (
    BaseSensor,
    DateTimeSensor,
    ExternalTaskSensor,
    FileSensor,
    HttpSensor,
    PokeReturnValue,
    PythonSensor,
    SqlSensor,
    TimeDeltaSensor,
)


def _run_dag_here(target: DAG, **options: object) -> object:
    from hareflow.inprocess import run_dag  # the scheduler's decisions and the worker's task body

    return run_dag(target, **options)  # type: ignore[arg-type]


set_test_runner(_run_dag_here)

__all__ = [
    "DAG",
    "BaseSensor",
    "DateTimeSensor",
    "ExternalTaskSensor",
    "FileSensor",
    "HttpSensor",
    "PokeReturnValue",
    "PythonSensor",
    "SqlSensor",
    "TimeDeltaSensor",
    "BaseNotifier",
    "Asset",
    "AssetAll",
    "AssetAny",
    "AssetOrTimeSchedule",
    "Dataset",
    "DatasetAll",
    "DatasetAny",
    "DatasetOrTimeSchedule",
    "BaseTask",
    "BashTask",
    "BranchTask",
    "Connection",
    "Context",
    "DagDefinitionError",
    "EmailNotifier",
    "FailTask",
    "HttpTask",
    "PythonTask",
    "ShortCircuitTask",
    "SkipTask",
    "SlackWebhookNotifier",
    "SqlCopyTask",
    "SqlTask",
    "TaskFailed",
    "TaskGroup",
    "TaskOutput",
    "TaskResultTooLarge",
    "Timetable",
    "TriggerRule",
    "BrokerTrigger",
    "WebhookTrigger",
    "Variable",
    "WebhookNotifier",
    "chain",
    "chain_linear",
    "cross_downstream",
    "dag",
    "load_plugins",
    "setup",
    "task",
    "task_group",
    "teardown",
]
