"""Sensors: tasks that wait for something outside the DAG (a file, a row, a URL, a time, another
DAG's task) by poking until it is there.

A sensor's ``poke(ctx)`` returns True (done), False (not yet) or a ``PokeReturnValue(is_done,
xcom_value)`` whose value becomes the task's return value. How it waits between pokes:

- ``mode="poke"`` (the default): the try keeps its worker slot and sleeps ``poke_interval``
  between pokes in its task process. Cheapest for short waits.
- ``mode="reschedule"``: after a falsy poke the try ends ``up_for_reschedule`` (no retry used, the
  try number stays) and gives its worker slot, pool slot and ``max_active_tasks`` place back;
  the scheduler dispatches it again when the interval has passed (docs/architecture.md, "Sensors
  in reschedule mode"). Best for long waits: a thousand waiting sensors hold no slot.

``timeout`` (default 7 days) counts from the first poke of the try, across reschedules; past it the
try fails without retry (``SensorTimeout``), or is skipped with ``soft_fail=True``.
``exponential_backoff`` makes the intervals grow (see :func:`poke_intervals`), capped by
``max_wait`` and by the time left before the timeout.

The minimum ``poke_interval`` of a reschedule-mode sensor is ``HAREFLOW_SENSOR_MIN_RESCHEDULE_INTERVAL``
seconds (default 1): every reschedule costs a result, a state write, a scheduling decision, a task
message and a fresh task process (a few milliseconds of the control plane and a fork, see
docs/benchmarks.md); below a second, ``mode="poke"`` does the same wait for a sleep.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hareflow.common.dag.context import Context
from hareflow.common.dag.errors import DagDefinitionError
from hareflow.common.dag.exceptions import RescheduleTask, SensorTimeout, SkipTask
from hareflow.common.dag.python_task import PythonTask
from hareflow.common.dag.task import BaseTask

MODES = ("poke", "reschedule")
DEFAULT_POKE_INTERVAL = 60.0
DEFAULT_TIMEOUT = 7 * 24 * 3600.0
#: The longest interval exponential backoff reaches when neither max_wait nor the timeout is lower.
MAX_BACKOFF_EXPONENT = 40
MIN_RESCHEDULE_ENV = "HAREFLOW_SENSOR_MIN_RESCHEDULE_INTERVAL"
DEFAULT_MIN_RESCHEDULE_INTERVAL = 1.0


@dataclass(frozen=True)
class PokeReturnValue:
    """What a poke may return instead of a bool: whether the wait is over, and the value the task
    returns when it is (Airflow's ``PokeReturnValue``)."""

    is_done: bool
    xcom_value: Any = None

    def __bool__(self) -> bool:
        return bool(self.is_done)


def min_reschedule_interval() -> float:
    """The smallest poke_interval a reschedule-mode sensor may have (read when a DAG is parsed)."""
    raw = os.environ.get(MIN_RESCHEDULE_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_MIN_RESCHEDULE_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise DagDefinitionError.here(f"{MIN_RESCHEDULE_ENV}={raw!r} is not a number of seconds") from None
    return max(0.0, value)


def _seconds(task_id: str, name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DagDefinitionError.here(
            f"{name} of sensor '{task_id}' must be a number of seconds or a timedelta, not {value!r}"
        )
    if value < 0:
        raise DagDefinitionError.here(f"{name} of sensor '{task_id}' must not be negative, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SensorOptions:
    """A sensor's waiting policy, validated when the DAG is parsed."""

    poke_interval: float = DEFAULT_POKE_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    mode: str = "poke"
    soft_fail: bool = False
    exponential_backoff: bool = False
    max_wait: float | None = None

    @classmethod
    def check(
        cls,
        task_id: str,
        *,
        poke_interval: Any = DEFAULT_POKE_INTERVAL,
        timeout: Any = DEFAULT_TIMEOUT,
        mode: Any = "poke",
        soft_fail: Any = False,
        exponential_backoff: Any = False,
        max_wait: Any = None,
    ) -> SensorOptions:
        if mode not in MODES:
            raise DagDefinitionError.here(
                f"mode of sensor '{task_id}' must be 'poke' or 'reschedule', not {mode!r}"
            )
        for name, flag in (("soft_fail", soft_fail), ("exponential_backoff", exponential_backoff)):
            if not isinstance(flag, bool):
                raise DagDefinitionError.here(
                    f"{name} of sensor '{task_id}' must be True or False, not {flag!r}"
                )
        interval = _seconds(task_id, "poke_interval", poke_interval)
        assert interval is not None
        limit = _seconds(task_id, "timeout", timeout)
        assert limit is not None
        wait = _seconds(task_id, "max_wait", max_wait, allow_none=True)
        if mode == "reschedule":
            minimum = min_reschedule_interval()
            if interval < minimum:
                raise DagDefinitionError.here(
                    f"poke_interval of sensor '{task_id}' is {interval:g}s, below the {minimum:g}s minimum "
                    f"of mode='reschedule' (each reschedule dispatches the task again): use mode='poke' "
                    f"for waits this short, or lower {MIN_RESCHEDULE_ENV}"
                )
        if wait is not None and wait < interval:
            raise DagDefinitionError.here(
                f"max_wait of sensor '{task_id}' ({wait:g}s) is below its poke_interval ({interval:g}s)"
            )
        return cls(interval, limit, mode, soft_fail, exponential_backoff, wait)


def _jitter(seed: str) -> float:
    """A number in [0, 1) that depends only on ``seed``: the same try waits the same intervals
    wherever it runs, while sensors started together drift apart (as Airflow's backoff does)."""
    digest = hashlib.sha1(seed.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def poke_interval_after(
    options: SensorOptions, poke_number: int, seed: str = "", remaining: float | None = None
) -> float:
    """How long to wait after poke ``poke_number`` (1 for the first) before the next one.

    Without backoff: ``poke_interval``. With ``exponential_backoff``: ``poke_interval`` ×
    2^(n-1), jittered up by up to half (deterministically, per try and poke), capped by
    ``max_wait``. Never longer than ``remaining`` (the time left before the timeout), so the last
    poke happens at the timeout rather than after it.
    """
    interval = options.poke_interval
    if options.exponential_backoff:
        exponent = min(max(poke_number, 1) - 1, MAX_BACKOFF_EXPONENT)
        base = options.poke_interval * 2**exponent
        interval = base * (1 + 0.5 * _jitter(f"{seed}#{poke_number}"))
        if options.max_wait is not None:
            interval = min(interval, options.max_wait)
    if remaining is not None:
        interval = min(interval, max(remaining, 0.0))
    return interval


class SensorMixin:
    """The waiting loop shared by ``BaseSensor`` and ``@task.sensor`` tasks."""

    task_id: str
    sensor: SensorOptions

    def poke(self, ctx: Context) -> bool | PokeReturnValue:
        """Look once: True (or a done ``PokeReturnValue``) ends the wait."""
        raise NotImplementedError(f"{type(self).__name__} must implement poke(self, ctx)")

    # Airflow's attribute names, read-only.
    @property
    def mode(self) -> str:
        return self.sensor.mode

    @property
    def poke_interval(self) -> float:
        return self.sensor.poke_interval

    @property
    def timeout(self) -> float:
        return self.sensor.timeout

    @property
    def soft_fail(self) -> bool:
        return self.sensor.soft_fail

    def execute(self, ctx: Context) -> Any:
        """Poke until done, the timeout passes, or (reschedule mode) a poke finds nothing."""
        options = self.sensor
        first = ctx.first_poke_at if ctx.first_poke_at is not None else time.time()
        poke_number = ctx.reschedules + 1
        seed = f"{ctx.dag_id}#{ctx.task_id}#{ctx.run_id}#{ctx.map_index}#{ctx.try_number}"
        while True:
            outcome = self.poke(ctx)
            if isinstance(outcome, PokeReturnValue):
                if outcome.is_done:
                    return outcome.xcom_value
            elif outcome:
                return None
            now = time.time()
            waited = now - first
            if waited >= options.timeout:
                text = f"sensor '{self.task_id}' timed out after {waited:.1f}s (timeout {options.timeout:g}s)"
                if options.soft_fail:
                    raise SkipTask(f"{text}; soft_fail: skipped")
                raise SensorTimeout(text)
            interval = poke_interval_after(options, poke_number, seed, options.timeout - waited)
            if options.mode == "reschedule":
                raise RescheduleTask(now + interval, first)
            print(f"Poke {poke_number}: not yet; poking again in {interval:g}s", flush=True)
            time.sleep(interval)
            poke_number += 1


_SENSOR_ARGS = ("poke_interval", "timeout", "mode", "soft_fail", "exponential_backoff", "max_wait")


def _pop_sensor_args(task_id: str, arguments: dict[str, Any]) -> SensorOptions:
    if "deferrable" in arguments:
        raise DagDefinitionError.here(
            f"sensor '{task_id}': deferrable sensors are not supported (there is no triggerer); "
            f"mode='reschedule' frees the worker slot between pokes instead"
        )
    given = {name: arguments.pop(name) for name in _SENSOR_ARGS if name in arguments}
    return SensorOptions.check(task_id, **given)


class BaseSensor(SensorMixin, BaseTask):
    """Base class of sensors: subclass it and implement ``poke(ctx)``.

    Keyword arguments: ``poke_interval`` (seconds or timedelta, default 60), ``timeout`` (default 7
    days, from the first poke of the try), ``mode`` (``"poke"`` or ``"reschedule"``),
    ``soft_fail`` (timeout → skipped), ``exponential_backoff`` and ``max_wait``, then every task
    setting (``retries``, ``queue``, ``pool``...).
    """

    def __init__(self, task_id: str, *args: Any, **arguments: Any) -> None:
        self.sensor = _pop_sensor_args(task_id, arguments)
        super().__init__(task_id, *args, **arguments)


#: Airflow's name for the same base class.
BaseSensorOperator = BaseSensor


class PythonSensor(BaseSensor, PythonTask):
    """A sensor poking with a Python callable (what ``@task.sensor`` makes; Airflow's
    ``PythonSensor``): the callable returns a bool or a ``PokeReturnValue``."""

    def __init__(self, task_id: str, python_callable: Callable[..., Any], **arguments: Any) -> None:
        super().__init__(task_id, python_callable, **arguments)

    def poke(self, ctx: Context) -> bool | PokeReturnValue:
        return self._call(ctx)  # type: ignore[no-any-return]


# -- time -------------------------------------------------------------------------------------------------


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class DateTimeSensor(BaseSensor):
    """Waits until ``target_time``: a datetime, or a string (a template, e.g.
    ``"{{ data_interval_end }}"``) holding an ISO 8601 date and time; naive times are UTC."""

    template_fields = ("target_time",)

    def __init__(self, task_id: str, *, target_time: datetime | str, **arguments: Any) -> None:
        if not isinstance(target_time, datetime | str):
            raise DagDefinitionError.here(
                f"target_time of sensor '{task_id}' must be a datetime or a string, "
                f"not {type(target_time).__name__}"
            )
        if isinstance(target_time, datetime):
            target_time = _as_utc(target_time).isoformat()
        self.target_time = target_time
        super().__init__(task_id, **arguments)

    def target(self, ctx: Context) -> datetime:
        try:
            return _as_utc(datetime.fromisoformat(str(self.target_time).strip()))
        except ValueError:
            raise ValueError(
                f"target_time of sensor '{self.task_id}' is {self.target_time!r}, "
                "not an ISO 8601 date and time"
            ) from None

    def poke(self, ctx: Context) -> bool:
        target = self.target(ctx)
        print(f"Waiting until {target.isoformat()}", flush=True)
        return datetime.now(UTC) >= target


class TimeDeltaSensor(DateTimeSensor):
    """Waits until ``delta`` after the run's data interval ends (its logical date when it has no
    interval): Airflow's ``TimeDeltaSensor``."""

    template_fields = ()

    def __init__(self, task_id: str, *, delta: timedelta, **arguments: Any) -> None:
        if not isinstance(delta, timedelta):
            raise DagDefinitionError.here(f"delta of sensor '{task_id}' must be a timedelta, not {delta!r}")
        self.delta = delta
        super().__init__(task_id, target_time="", **arguments)

    def target(self, ctx: Context) -> datetime:
        base = ctx.data_interval_end or ctx.logical_date or datetime.now(UTC)
        return _as_utc(base) + self.delta


# -- files ----------------------------------------------------------------------------------------------


class FileSensor(BaseSensor):
    """Waits for a file (or a glob pattern) to exist: ``filepath`` is relative to the base path of
    connection ``fs_conn_id`` (type ``fs``: ``extra.path``, ``host`` or the URI's path, as in
    ``fs:///data/landing``). Without that
    connection the base is the filesystem root, so absolute paths work as they are. A directory
    counts once it holds a file (as in Airflow); ``recursive`` lets ``**`` match subdirectories."""

    template_fields = ("filepath",)

    def __init__(
        self,
        task_id: str,
        *,
        filepath: str,
        fs_conn_id: str = "fs_default",
        recursive: bool = False,
        **arguments: Any,
    ) -> None:
        if not isinstance(filepath, str) or not filepath:
            raise DagDefinitionError.here(f"filepath of sensor '{task_id}' must be a non-empty string")
        if not isinstance(fs_conn_id, str) or not fs_conn_id:
            raise DagDefinitionError.here(f"fs_conn_id of sensor '{task_id}' must be a connection id")
        self.filepath = filepath
        self.fs_conn_id = fs_conn_id
        self.recursive = bool(recursive)
        super().__init__(task_id, **arguments)

    def base_path(self) -> str:
        from hareflow.common.providers.builtin import fs_base_path
        from hareflow.common.secrets import Connection
        from hareflow.common.secrets.errors import ConnectionNotFound

        try:
            conn = Connection.get(self.fs_conn_id)
        except ConnectionNotFound:
            if self.fs_conn_id == "fs_default":
                return os.sep
            raise
        return fs_base_path(conn)

    def poke(self, ctx: Context) -> bool:
        full = os.path.join(self.base_path(), self.filepath)
        print(f"Poking for {full}", flush=True)
        for path in glob.glob(full, recursive=self.recursive):
            if os.path.isfile(path):
                return True
            for _, _, files in os.walk(path):
                if files:
                    return True
        return False


# -- another DAG's task -----------------------------------------------------------------------------------


class ExternalTaskFailed(Exception):
    """The task (or run) an ``ExternalTaskSensor`` waits for reached one of its failed states."""


class ExternalTaskSensor(BaseSensor):
    """Waits for a task of another DAG (or, with ``external_task_id=None``, the whole run) at the
    same logical date, or at the one ``execution_delta`` earlier or ``execution_date_fn(logical_date,
    ctx)`` gives, to reach one of ``allowed_states``. One of ``failed_states`` fails the sensor
    (skips it with ``soft_fail``). The state is read from the control plane (workers hold no
    database credentials): a ``task_state`` lookup, like a connection's."""

    template_fields = ("external_dag_id", "external_task_id")

    def __init__(
        self,
        task_id: str,
        *,
        external_dag_id: str,
        external_task_id: str | None = None,
        allowed_states: list[str] | tuple[str, ...] = ("success",),
        failed_states: list[str] | tuple[str, ...] = ("failed", "upstream_failed"),
        execution_delta: timedelta | None = None,
        execution_date_fn: Callable[..., datetime] | None = None,
        **arguments: Any,
    ) -> None:
        from hareflow.common.states import RunState, TaskState

        known = {s.value for s in TaskState} | {s.value for s in RunState}
        if not isinstance(external_dag_id, str) or not external_dag_id:
            raise DagDefinitionError.here(f"external_dag_id of sensor '{task_id}' must be a DAG id")
        if external_task_id is not None and not isinstance(external_task_id, str):
            raise DagDefinitionError.here(f"external_task_id of sensor '{task_id}' must be a task id or None")
        for name, states in (("allowed_states", allowed_states), ("failed_states", failed_states)):
            if isinstance(states, str) or not all(isinstance(s, str) and s in known for s in states):
                raise DagDefinitionError.here(
                    f"{name} of sensor '{task_id}' must be a list of states ({', '.join(sorted(known))}), "
                    f"not {states!r}"
                )
        if set(allowed_states) & set(failed_states):
            raise DagDefinitionError.here(
                f"sensor '{task_id}': {sorted(set(allowed_states) & set(failed_states))} "
                "are both allowed and failed"
            )
        if execution_delta is not None and execution_date_fn is not None:
            raise DagDefinitionError.here(
                f"sensor '{task_id}': give execution_delta or execution_date_fn, not both"
            )
        if execution_delta is not None and not isinstance(execution_delta, timedelta):
            raise DagDefinitionError.here(f"execution_delta of sensor '{task_id}' must be a timedelta")
        if execution_date_fn is not None and not callable(execution_date_fn):
            raise DagDefinitionError.here(f"execution_date_fn of sensor '{task_id}' must be callable")
        self.external_dag_id = external_dag_id
        self.external_task_id = external_task_id
        self.allowed_states = list(allowed_states)
        self.failed_states = list(failed_states)
        self.execution_delta = execution_delta
        self.execution_date_fn = execution_date_fn
        super().__init__(task_id, **arguments)

    def target_date(self, ctx: Context) -> datetime:
        logical = ctx.logical_date
        if logical is None:
            raise ValueError(f"sensor '{self.task_id}': the run has no logical date to match")
        if self.execution_delta is not None:
            return logical - self.execution_delta
        if self.execution_date_fn is not None:
            return self.execution_date_fn(logical, ctx)
        return logical

    def poke(self, ctx: Context) -> bool:
        from hareflow.common.secrets.client import current_resolver

        when = _as_utc(self.target_date(ctx))
        what = (
            f"{self.external_dag_id}.{self.external_task_id}"
            if self.external_task_id
            else self.external_dag_id
        )
        found = current_resolver().task_state(  # type: ignore[attr-defined]
            {
                "dag_id": self.external_dag_id,
                "task_id": self.external_task_id,
                "logical_date": when.isoformat(),
            }
        )
        if found is None:
            print(f"Waiting for {what} at {when.isoformat()}: no such run yet", flush=True)
            return False
        states = [found["run_state"]] if self.external_task_id is None else list(found.get("states") or [])
        print(
            f"Waiting for {what} at {when.isoformat()} (run {found['run_id']}): "
            f"{states or 'no task instance'}",
            flush=True,
        )
        bad = [s for s in states if s in self.failed_states]
        if bad:
            text = f"{what} at {when.isoformat()} (run {found['run_id']}) is {bad[0]}"
            if self.soft_fail:
                raise SkipTask(f"{text}; soft_fail: skipped")
            raise ExternalTaskFailed(text)
        return bool(states) and all(s in self.allowed_states for s in states)
