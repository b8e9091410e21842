"""Exceptions a task raises to end its try in a chosen state rather than as an error.

``SkipTask`` ends the try ``skipped`` (its downstream tasks then follow their trigger rules);
``FailTask`` ends it ``failed`` at once, with no retry even when retries remain. Airflow's names
for the same two (``AirflowSkipException``, ``AirflowFailException``) are exported by
``hareflow.exceptions`` as these very classes.
"""

from __future__ import annotations


class SkipTask(Exception):  # noqa: N818 - named after what it does, like Airflow's
    """Raised by a task to skip itself; the message is recorded as the reason."""


class FailTask(Exception):  # noqa: N818
    """Raised by a task to fail its try without any further retry; the message is the error."""


class RescheduleTask(Exception):  # noqa: N818
    """Raised by a sensor in reschedule mode whose poke found nothing yet: the try ends
    ``up_for_reschedule`` (no retry used, same try number) and its slot is free until
    ``reschedule_at`` (epoch seconds), when the scheduler dispatches it again. ``first_poke_at`` is
    when the try's first poke ran: its timeout counts from there, across reschedules."""

    def __init__(self, reschedule_at: float, first_poke_at: float) -> None:
        super().__init__(f"poke again at {reschedule_at}")
        self.reschedule_at = reschedule_at
        self.first_poke_at = first_poke_at


class SensorTimeout(FailTask):
    """A sensor waited longer than its ``timeout``: the try fails without retry (as Airflow's
    ``AirflowSensorTimeout``), or is skipped with ``soft_fail``."""


class BranchError(Exception):
    """A branch task chose something that is not one of its direct downstream tasks."""
