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


class BranchError(Exception):
    """A branch task chose something that is not one of its direct downstream tasks."""
