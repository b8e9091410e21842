"""The DAG model: authoring API, validation, serialization, file loading and schedules.

Pure Python plus croniter: importing this package never touches a database or a broker.
"""

from hareflow.common.dag.assets import (
    Asset,
    AssetAll,
    AssetAny,
    AssetOrTimeSchedule,
    Dataset,
    DatasetAll,
    DatasetAny,
    DatasetOrTimeSchedule,
)
from hareflow.common.dag.bash_task import BashTask
from hareflow.common.dag.branching import BranchTask, ShortCircuitTask
from hareflow.common.dag.context import Context, resolve_params
from hareflow.common.dag.dag import DAG, current_dag
from hareflow.common.dag.errors import (
    DagDefinitionError,
    DagNotFound,
    TaskFailed,
    TaskNotFound,
    TaskResultNotSerializable,
    TaskResultTooLarge,
)
from hareflow.common.dag.exceptions import FailTask, SkipTask
from hareflow.common.dag.loader import (
    ImportErrorInfo,
    LoadResult,
    find_dag_files,
    get_dag,
    get_task,
    load_dag_file,
)
from hareflow.common.dag.outputs import TaskOutput
from hareflow.common.dag.plugins import load_plugins
from hareflow.common.dag.python_task import PythonTask, TaskFactory, task
from hareflow.common.dag.results import decode_result, encode_result
from hareflow.common.dag.retries import retry_delay_seconds
from hareflow.common.dag.schedule import (
    DagRunInfo,
    next_dagrun_info,
    next_run_times,
    runs_between,
    validate_schedule,
)
from hareflow.common.dag.serialize import (
    SerializedDag,
    SerializedTask,
    SerializedTaskGroup,
    dag_hash,
    serialize_dag,
)
from hareflow.common.dag.task import BaseTask
from hareflow.common.dag.task_decorators import setup, teardown
from hareflow.common.dag.task_group import TaskGroup
from hareflow.common.dag.timetables import Timetable, UnknownTimetable
from hareflow.common.dag.trigger_rules import TriggerRule, evaluate_trigger_rule
from hareflow.common.dag.triggers import BrokerTrigger, WebhookTrigger

__all__ = [
    "Asset",
    "AssetAll",
    "AssetAny",
    "AssetOrTimeSchedule",
    "Dataset",
    "DatasetAll",
    "DatasetAny",
    "DatasetOrTimeSchedule",
    "Timetable",
    "UnknownTimetable",
    "DAG",
    "BaseTask",
    "BashTask",
    "BranchTask",
    "Context",
    "DagDefinitionError",
    "DagNotFound",
    "DagRunInfo",
    "FailTask",
    "ImportErrorInfo",
    "LoadResult",
    "PythonTask",
    "SerializedDag",
    "SerializedTask",
    "SerializedTaskGroup",
    "ShortCircuitTask",
    "SkipTask",
    "TaskFactory",
    "TaskFailed",
    "TaskGroup",
    "TaskNotFound",
    "TaskOutput",
    "TaskResultNotSerializable",
    "TaskResultTooLarge",
    "TriggerRule",
    "BrokerTrigger",
    "WebhookTrigger",
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
    "setup",
    "task",
    "teardown",
    "validate_schedule",
]
