"""Exceptions a task raises to skip itself or fail without retrying, in both spellings.

``from airflow.exceptions import AirflowSkipException`` ports to
``from hareflow.exceptions import AirflowSkipException``: the Airflow names are the same classes as
hareflow's ``SkipTask`` and ``FailTask``.
"""

from hareflow.common.dag.exceptions import FailTask, SkipTask

AirflowSkipException = SkipTask
AirflowFailException = FailTask

__all__ = ["AirflowFailException", "AirflowSkipException", "FailTask", "SkipTask"]
