"""``macros`` in templates and in the task context: Airflow's everyday date helpers.

``macros.ds_add("2026-01-05", -3) == "2026-01-02"``; ``macros.ds_format("2026-01-05", "%Y-%m-%d",
"%d/%m/%Y") == "05/01/2026"``; ``macros.datetime`` and ``macros.timedelta`` are the standard classes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["datetime", "ds_add", "ds_format", "timedelta"]


def ds_add(ds: str, days: int) -> str:
    """The ``YYYY-MM-DD`` date ``days`` days after ``ds`` (before it when negative)."""
    return (datetime.strptime(ds, "%Y-%m-%d") + timedelta(days=days)).strftime("%Y-%m-%d")


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    """``ds``, read with ``input_format``, written with ``output_format`` (strftime codes)."""
    return datetime.strptime(ds, input_format).strftime(output_format)
