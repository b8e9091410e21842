"""The run-time context handed to a task's ``execute`` (and to ``@task`` functions taking ``ctx``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Context:
    """Everything a task may know about the try it is running: identity, dates, params, inputs."""

    dag_id: str
    task_id: str
    run_id: str
    logical_date: datetime | None = None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    params: dict[str, Any] = field(default_factory=dict)
    conf: dict[str, Any] = field(default_factory=dict)
    try_number: int = 1
    max_tries: int = 1
    map_index: int = -1
    upstream_results: dict[str, Any] = field(default_factory=dict)
    #: a mapped task instance's own element (its mapped keyword arguments); None when not mapped
    expand_args: dict[str, Any] | None = None

    @property
    def log(self) -> logging.Logger:
        """A logger named after the task, so its records can be told apart and filtered."""
        return logging.getLogger(f"hareflow.task.{self.dag_id}.{self.task_id}")


def resolve_params(defaults: Mapping[str, Any], conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the DAG's params with any keys given in the run's conf overriding the defaults."""
    params = dict(defaults)
    if conf:
        params.update(conf)
    return params
