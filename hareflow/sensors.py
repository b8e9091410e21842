"""Sensors, by the short import path: ``from hareflow.sensors import FileSensor``.

The same classes are exported by ``hareflow`` itself; see ``hareflow.common.dag.sensors`` and
``hareflow.common.providers.sensors``.
"""

from hareflow.common.dag.exceptions import SensorTimeout
from hareflow.common.dag.sensors import (
    BaseSensor,
    BaseSensorOperator,
    DateTimeSensor,
    ExternalTaskFailed,
    ExternalTaskSensor,
    FileSensor,
    PokeReturnValue,
    PythonSensor,
    TimeDeltaSensor,
)
from hareflow.common.providers.sensors import HttpSensor, SqlCriterionMet, SqlSensor

__all__ = [
    "BaseSensor",
    "BaseSensorOperator",
    "DateTimeSensor",
    "ExternalTaskFailed",
    "ExternalTaskSensor",
    "FileSensor",
    "HttpSensor",
    "PokeReturnValue",
    "PythonSensor",
    "SensorTimeout",
    "SqlCriterionMet",
    "SqlSensor",
    "TimeDeltaSensor",
]
