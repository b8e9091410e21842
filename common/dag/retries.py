"""Retry policy: how long to wait before the next try of a failed task."""

from __future__ import annotations


def retry_delay_seconds(
    retry_delay: float, try_number: int, exponential: bool, max_delay: float | None
) -> float:
    """Return the wait in seconds after try ``try_number`` (1-based) failed.

    With ``exponential`` the delay doubles with each try (``retry_delay * 2 ** (try_number - 1)``);
    ``max_delay`` caps the result either way. There is no jitter so the schedule is predictable.
    """
    base = max(0.0, float(retry_delay))
    if exponential:
        exponent = max(0, try_number - 1)
        # 2**1024 overflows a float; any cap or realistic delay is reached long before that.
        delay = base * (2.0 ** min(exponent, 1000))
    else:
        delay = base
    if max_delay is not None:
        delay = min(delay, max(0.0, float(max_delay)))
    return delay
