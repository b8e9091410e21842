"""The DAG model: authoring API, validation, serialization, file loading and schedules.

Pure Python plus croniter: importing this package never touches a database or a broker.
"""

from common.dag.bash_task import BashTask
from common.dag.context import Context, resolve_params
from common.dag.dag import DAG, current_dag
from common.dag.errors import (
    DagDefinitionError,
    DagNotFound,
    TaskFailed,
    TaskNotFound,
    TaskResultNotSerializable,
    TaskResultTooLarge,
)
from common.dag.loader import ImportErrorInfo, LoadResult, find_dag_files, get_dag, get_task, load_dag_file
from common.dag.plugins import load_plugins
from common.dag.python_task import PythonTask, TaskFactory, task
from common.dag.results import decode_result, encode_result
from common.dag.retries import retry_delay_seconds
from common.dag.schedule import DagRunInfo, next_dagrun_info, next_run_times, runs_between, validate_schedule
from common.dag.serialize import SerializedDag, SerializedTask, dag_hash, serialize_dag
from common.dag.task import BaseTask
from common.dag.trigger_rules import TriggerRule, evaluate_trigger_rule

__all__ = [
    "DAG",
    "BaseTask",
    "BashTask",
    "Context",
    "DagDefinitionError",
    "DagNotFound",
    "DagRunInfo",
    "ImportErrorInfo",
    "LoadResult",
    "PythonTask",
    "SerializedDag",
    "SerializedTask",
    "TaskFactory",
    "TaskFailed",
    "TaskNotFound",
    "TaskResultNotSerializable",
    "TaskResultTooLarge",
    "TriggerRule",
    "current_dag",
    "dag_hash",
    "decode_result",
    "encode_result",
    "evaluate_trigger_rule",
    "find_dag_files",
    "get_dag",
    "get_task",
    "load_dag_file",
    "load_plugins",
    "next_dagrun_info",
    "next_run_times",
    "resolve_params",
    "retry_delay_seconds",
    "runs_between",
    "serialize_dag",
    "task",
    "validate_schedule",
]
