"""Run operations shared by the scheduler, the CLI and the web: trigger, schedule bookkeeping.

Each takes the caller's session; the caller owns the transaction (``with session.begin():``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from hareflow.common.audit import audit
from hareflow.common.dag.schedule import DagRunInfo, manual_data_interval, next_dagrun_info
from hareflow.common.dag_versions import run_version
from hareflow.common.db import Dag, DagRun
from hareflow.common.states import RUN_ACTIVE, RunState
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

#: What a run id may hold: it appears in URLs and in shell commands.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.~:+-]{1,250}$")
RUN_ID_RULE = "use 1-250 letters, digits and _ . ~ : + - (no spaces or slashes)"


class RunError(ValueError):
    """A user mistake in a run operation: the message says what and how to fix it."""


#: A run's conf travels in every task message of the run and is stored with it: bounded, so a typo
#: or a hostile client cannot make every message huge or every decoder recurse without end.
MAX_CONF_BYTES = 256 * 1024
MAX_CONF_DEPTH = 32


def conf_depth(value: Any) -> int:
    """How deeply ``value``'s lists and objects nest (a scalar is 0), without recursing."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > MAX_CONF_DEPTH:
            break
        stack.extend((child, depth) for child in children)
    return deepest


def check_conf_limits(conf: Any) -> dict[str, Any]:
    """``conf`` if it is a JSON object within the size and depth limits, else a RunError saying why."""
    if not isinstance(conf, dict):
        raise RunError("conf must be a JSON object")
    if conf_depth(conf) > MAX_CONF_DEPTH:
        raise RunError(f"conf nests more than {MAX_CONF_DEPTH} levels deep")
    try:
        size = len(json.dumps(conf, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise RunError(f"conf is not JSON: {exc}") from None
    if size > MAX_CONF_BYTES:
        raise RunError(f"conf is {size} bytes; at most {MAX_CONF_BYTES} are allowed")
    return conf


class ConfError(RunError):
    """A conf that does not fit the DAG's params; ``field`` names the offending key (``conf.x``)."""

    def __init__(self, message: str, field: str = "conf") -> None:
        super().__init__(message)
        self.field = field


JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    ((int, float), "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def json_type(value: object) -> str:
    if value is None:
        return "null"
    for types, name in JSON_TYPES:
        if isinstance(value, types):
            return name
    return type(value).__name__


def check_conf(params: dict[str, Any], conf: object) -> dict[str, Any]:
    """Validate a run's conf against the DAG's params: an object within the limits whose keys that
    name a param have that param's JSON type (a param whose default is null takes anything). Keys
    that are not params are allowed: the run's tasks see them in ``ctx.conf``. The one check every
    way of starting a run goes through (trigger form, API, CLI, broker and webhook events)."""
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        raise ConfError(f"conf must be a JSON object, not {json_type(conf)}")
    try:
        check_conf_limits(conf)
    except ConfError:
        raise
    except RunError as exc:
        raise ConfError(str(exc)) from None
    for key, value in conf.items():
        if key not in params or params[key] is None:
            continue
        expected, got = json_type(params[key]), json_type(value)
        if expected != got:
            raise ConfError(
                f"conf.{key} must be a {expected} (like the param's default), not {got}", f"conf.{key}"
            )
    return conf


def load_conf(text: str) -> dict[str, Any]:
    """Parse a conf given as JSON text (CLI option, trigger form) and check it, or raise RunError."""
    if len(text.encode()) > MAX_CONF_BYTES:
        raise RunError(f"conf is over {MAX_CONF_BYTES} bytes")
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        raise RunError(f"conf is not valid JSON: {exc}") from None
    except RecursionError:
        raise RunError(f"conf nests more than {MAX_CONF_DEPTH} levels deep") from None
    return check_conf_limits(value)


class DagNotFoundError(RunError):
    pass


class DagPausedError(RunError):
    pass


class RunExistsError(RunError):
    pass


class LogicalDateTakenError(RunExistsError):
    """Another run of the DAG has the logical date asked for (one run per DAG and logical date)."""


def parse_date(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def schedule_args(dag: Dag) -> dict[str, Any]:
    """The serialized DAG's schedule fields as ``next_dagrun_info`` takes them."""
    s = dag.serialized
    return {
        "schedule": s.get("timetable") or s.get("schedule"),
        "timezone": s.get("timezone") or "UTC",
        "start_date": parse_date(s.get("start_date")),
        "end_date": parse_date(s.get("end_date")),
        "catchup": bool(s.get("catchup")),
    }


def last_scheduled_logical_date(session: Session, dag_id: str) -> datetime | None:
    """The latest logical date of a scheduled or backfill run: manual, asset-triggered and event
    runs do not move the schedule."""
    return session.scalar(
        select(func.max(DagRun.interval_key)).where(
            DagRun.dag_id == dag_id, DagRun.run_type.in_(("scheduled", "backfill"))
        )
    )


def _logical_date_taken(session: Session, dag_id: str, when: datetime) -> str | None:
    """The run id of the run of ``dag_id`` that has logical date ``when``, if there is one."""
    return session.scalar(select(DagRun.run_id).where(DagRun.dag_id == dag_id, DagRun.interval_key == when))


def refresh_next_run(session: Session, dag: Dag, now: datetime) -> DagRunInfo | None:
    """Recompute when the DAG's next scheduled run is due (after a parse or a run creation).

    An interval whose logical date a manual run already has is passed over, as Airflow does: a
    DAG has one run per logical date.
    """
    args = schedule_args(dag)
    info = next_dagrun_info(
        **args, last_logical_date=last_scheduled_logical_date(session, dag.dag_id), now=now
    )
    for _ in range(100):
        if info is None or _logical_date_taken(session, dag.dag_id, info.logical_date) is None:
            break
        following = next_dagrun_info(**args, last_logical_date=info.logical_date, now=now)
        info = following if following is None or following.logical_date > info.logical_date else None
    dag.next_logical_date = info.logical_date if info else None
    dag.next_data_interval_end = info.data_interval_end if info else None
    dag.next_run_after = info.run_after if info else None
    return info


def active_run_count(session: Session, dag_id: str) -> int:
    """Active scheduled and manual runs (backfill runs have their own limit)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.state.in_(RUN_ACTIVE), DagRun.backfill_id.is_(None))
        )
        or 0
    )


def trigger_run(
    session: Session,
    dag_id: str,
    *,
    conf: dict[str, Any] | None = None,
    run_id: str | None = None,
    logical_date: datetime | None = None,
    triggered_by: str | None = None,
    origin: str | None = None,
    allow_paused: bool = False,
    now: datetime | None = None,
) -> DagRun:
    """Create a manual run (state ``queued``); the scheduler starts it within max_active_runs.

    Its logical date is ``logical_date`` or now, and must be free: a DAG has one run per logical
    date (the database's unique key on ``interval_key`` holds it even against a concurrent trigger).
    A scheduled DAG's manual run covers the latest complete data interval at its logical date.
    ``conf`` is checked against the DAG's params (:func:`check_conf`), and the trigger is audited
    as ``triggered_by`` from ``origin``, in the same transaction.
    """
    now = now or datetime.now(UTC)
    dag = session.get(Dag, dag_id)
    if dag is None or not dag.is_active:
        raise DagNotFoundError(f"no DAG named {dag_id!r} (see `hareflow dags list`)")
    if dag.is_paused and not allow_paused:
        raise DagPausedError(f"DAG {dag_id!r} is paused; unpause it with `hareflow dags unpause {dag_id}`")
    conf = check_conf((dag.serialized or {}).get("params") or {}, conf)
    logical = logical_date or now
    if run_id is None:  # the run id comes from the date: a taken date is the mistake to name
        _refuse_taken_logical_date(session, dag_id, logical)
    run_id = run_id or f"manual__{logical.isoformat()}"
    if not RUN_ID_PATTERN.match(run_id):
        raise RunError(f"run id {run_id!r}: {RUN_ID_RULE}")
    if session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)):
        raise RunExistsError(f"DAG {dag_id!r} already has a run {run_id!r}")
    _refuse_taken_logical_date(session, dag_id, logical)
    args = schedule_args(dag)
    try:
        interval_start, interval_end = manual_data_interval(
            schedule=args["schedule"], timezone=args["timezone"], run_after=logical
        )
    except (LookupError, ValueError) as exc:
        raise RunError(f"DAG {dag_id!r}: cannot compute the data interval: {exc}") from None
    run = DagRun(
        dag_id=dag_id,
        run_id=run_id,
        run_type="manual",
        state=RunState.QUEUED,
        logical_date=logical,
        interval_key=logical,
        data_interval_start=interval_start,
        data_interval_end=interval_end,
        conf=conf or {},
        triggered_by=triggered_by,
        queued_at=now,
        **run_version(dag),
    )
    try:
        # A savepoint: the same run id triggered at the same moment elsewhere (another web server,
        # a script) fails here, not at the caller's commit, and leaves the caller's transaction usable.
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError as exc:
        # A concurrent trigger won. Every database names the key it broke (MySQL's repeatable read
        # may not let this transaction see the other's row, so the message cannot come from a query).
        if "interval_key" in str(exc.orig):
            _refuse_taken_logical_date(session, dag_id, logical)
            raise LogicalDateTakenError(
                f"DAG {dag_id!r} already has a run at logical date {logical.isoformat()}; a DAG has one "
                f"run per logical date: pick another date or clear that run"
            ) from None
        raise RunExistsError(f"DAG {dag_id!r} already has a run {run_id!r}") from None
    audit(
        session,
        "trigger",
        username=triggered_by,
        dag_id=dag_id,
        run_id=run_id,
        details={"conf": run.conf},
        origin=origin,
        now=now,
    )
    return run


def _refuse_taken_logical_date(session: Session, dag_id: str, logical: datetime) -> None:
    taken = _logical_date_taken(session, dag_id, logical)
    if taken is not None:
        raise LogicalDateTakenError(
            f"DAG {dag_id!r} already has a run at logical date {logical.isoformat()} ({taken!r}); "
            f"a DAG has one run per logical date: pick another date or clear that run"
        )


def create_scheduled_run(session: Session, dag: Dag, info: DagRunInfo, now: datetime) -> DagRun:
    run = DagRun(
        dag_id=dag.dag_id,
        run_id=f"scheduled__{info.logical_date.isoformat()}",
        run_type="scheduled",
        state=RunState.QUEUED,
        logical_date=info.logical_date,
        interval_key=info.logical_date,
        data_interval_start=info.data_interval_start,
        data_interval_end=info.data_interval_end,
        conf={},
        queued_at=now,
        **run_version(dag),
    )
    session.add(run)
    session.flush()
    return run


def external_state(session: Session, query: dict[str, Any]) -> dict[str, Any] | None:
    """What an ``ExternalTaskSensor`` asks (the ``task_state`` lookup): the latest run of
    ``query["dag_id"]`` at ``query["logical_date"]`` (ISO 8601), its state and, when
    ``query["task_id"]`` is set, the states of that task's instances in it (one, or one per map
    index). None when there is no such run."""
    from hareflow.common.db import TaskInstance

    dag_id, task_id = query.get("dag_id"), query.get("task_id")
    if not isinstance(dag_id, str) or (task_id is not None and not isinstance(task_id, str)):
        raise RunError("a task_state lookup names a dag_id and, optionally, a task_id")
    try:
        when = datetime.fromisoformat(str(query.get("logical_date")))
    except ValueError:
        raise RunError(f"bad logical_date {query.get('logical_date')!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    run = session.scalars(
        select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == when).order_by(DagRun.id.desc())
    ).first()
    if run is None:
        return None
    states: list[str] = []
    if task_id is not None:
        states = list(
            session.scalars(
                select(TaskInstance.state)
                .where(TaskInstance.run_pk == run.id, TaskInstance.task_id == task_id)
                .order_by(TaskInstance.map_index)
            )
        )
    return {"run_id": run.run_id, "run_state": run.state, "states": states}
