"""Exceptions a task raises to skip itself or fail without retrying, in both spellings.

``from airflow.exceptions import AirflowSkipException`` ports to
``from hareflow.exceptions import AirflowSkipException``: the Airflow names are the same classes as
hareflow's ``SkipTask``, ``FailTask`` and ``SensorTimeout``.
"""

from hareflow.common.dag.exceptions import FailTask, SensorTimeout, SkipTask

AirflowSkipException = SkipTask
AirflowFailException = FailTask
AirflowSensorTimeout = SensorTimeout

__all__ = [
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "FailTask",
    "SensorTimeout",
    "SkipTask",
]
