"""Sensors without services: their arguments, their intervals, what a poke returns, how a
reschedule is reported and recorded, and the scheduler's decision to poke again."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hareflow.common.dag.context import Context
from hareflow.common.dag.errors import DagDefinitionError
from hareflow.common.dag.exceptions import RescheduleTask, SensorTimeout, SkipTask
from hareflow.common.dag.sensors import (
    BaseSensor,
    BaseSensorOperator,
    DateTimeSensor,
    ExternalTaskSensor,
    SensorOptions,
    TimeDeltaSensor,
    poke_interval_after,
)
from hareflow.common.messages import ResultMessage, TaskKey, TaskMessage, decode
from hareflow.common.states import (
    TASK_OCCUPYING,
    TASK_TRANSITIONS,
    TaskState,
    TaskTransition,
    WorkerOutcome,
    accepts_report,
)
from hareflow.scheduler.decisions import TIView, evaluate_run, next_wakeup

from hareflow import DAG, FileSensor, PokeReturnValue, task

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Never(BaseSensor):
    def __init__(self, task_id: str, **kwargs: object) -> None:
        super().__init__(task_id, **kwargs)  # type: ignore[arg-type]
        self.pokes = 0

    def poke(self, ctx: Context) -> bool:
        self.pokes += 1
        return False


def ctx(**kw: object) -> Context:
    return Context(dag_id="d", task_id="s", run_id="r", **kw)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def default_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HAREFLOW_SENSOR_MIN_RESCHEDULE_INTERVAL", raising=False)


# -- arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"mode": "deferrable"}, "mode of sensor 'wait' must be 'poke' or 'reschedule', not 'deferrable'"),
        ({"poke_interval": -1}, "poke_interval of sensor 'wait' must not be negative"),
        (
            {"poke_interval": "60"},
            "poke_interval of sensor 'wait' must be a number of seconds or a timedelta",
        ),
        ({"timeout": timedelta(seconds=-5)}, "timeout of sensor 'wait' must not be negative"),
        ({"soft_fail": "yes"}, "soft_fail of sensor 'wait' must be True or False"),
        ({"mode": "reschedule", "poke_interval": 0.2}, "below the 1s minimum of mode='reschedule'"),
        ({"poke_interval": 10, "max_wait": 5}, "max_wait of sensor 'wait' (5s) is below its poke_interval"),
        (
            {"deferrable": True},
            "deferrable sensors are not supported (there is no triggerer); mode='reschedule'",
        ),
    ],
)
def test_bad_sensor_arguments_fail_at_parse_time_naming_the_task(kwargs: dict, fragment: str) -> None:
    with DAG("d"), pytest.raises(DagDefinitionError) as caught:
        FileSensor(task_id="wait", filepath="/x", **kwargs)
    assert fragment in str(caught.value)


def test_the_reschedule_minimum_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAREFLOW_SENSOR_MIN_RESCHEDULE_INTERVAL", "0.1")
    with DAG("d"):
        sensor = FileSensor(task_id="wait", filepath="/x", mode="reschedule", poke_interval=0.2)
    assert (sensor.mode, sensor.poke_interval) == ("reschedule", 0.2)


def test_the_decorator_checks_its_arguments_and_takes_timedeltas() -> None:
    with DAG("d"):

        @task.sensor(poke_interval=timedelta(minutes=2), timeout=timedelta(hours=1), mode="reschedule")
        def ready() -> bool:
            return True

        made = ready()
        with pytest.raises(DagDefinitionError, match="mode of sensor 'ready2' must be"):
            task.sensor(task_id="ready2", mode="sometimes")(lambda: True)()
    assert (made.poke_interval, made.timeout, made.mode) == (120.0, 3600.0, "reschedule")
    assert isinstance(made, BaseSensor) and BaseSensorOperator is BaseSensor


def test_external_task_sensor_arguments_are_checked() -> None:
    with DAG("d"):
        with pytest.raises(DagDefinitionError, match="not both"):
            ExternalTaskSensor(
                task_id="e",
                external_dag_id="x",
                execution_delta=timedelta(1),
                execution_date_fn=lambda d, c: d,
            )
        with pytest.raises(
            DagDefinitionError, match="allowed_states of sensor 'e2' must be a list of states"
        ):
            ExternalTaskSensor(task_id="e2", external_dag_id="x", allowed_states=["done"])
        with pytest.raises(DagDefinitionError, match="both allowed and failed"):
            ExternalTaskSensor(task_id="e3", external_dag_id="x", allowed_states=["failed"])


# -- intervals --------------------------------------------------------------------------------------------


def test_without_backoff_every_interval_is_the_poke_interval_but_never_past_the_timeout() -> None:
    options = SensorOptions(poke_interval=30.0)
    assert [poke_interval_after(options, n) for n in (1, 2, 10)] == [30.0, 30.0, 30.0]
    assert poke_interval_after(options, 3, remaining=12.0) == 12.0


def test_exponential_backoff_doubles_with_jitter_up_to_max_wait_and_is_the_same_for_the_same_try() -> None:
    options = SensorOptions(poke_interval=10.0, exponential_backoff=True, max_wait=300.0)
    intervals = [poke_interval_after(options, n, "d#s#r#-1#1") for n in range(1, 9)]
    for n, interval in enumerate(intervals[:5], start=1):
        base = 10.0 * 2 ** (n - 1)
        assert base <= interval < 1.5 * base
    assert intervals[-1] == 300.0  # capped
    assert intervals == [poke_interval_after(options, n, "d#s#r#-1#1") for n in range(1, 9)]
    assert intervals[:5] != [poke_interval_after(options, n, "d#s#other#-1#1") for n in range(1, 6)]
    assert poke_interval_after(options, 10_000, "x") == 300.0  # no overflow


# -- pokes ------------------------------------------------------------------------------------------------


def test_a_done_poke_return_value_becomes_the_return_value_and_a_bool_returns_none() -> None:
    with DAG("d"):

        @task.sensor(poke_interval=0)
        def counted() -> PokeReturnValue:
            return PokeReturnValue(True, {"rows": 3})

        @task.sensor(poke_interval=0)
        def plain() -> bool:
            return True

        a, b = counted(), plain()
    assert a.execute(ctx()) == {"rows": 3}
    assert b.execute(ctx()) is None
    assert not PokeReturnValue(False, 1) and PokeReturnValue(True)


def test_poke_mode_pokes_until_its_timeout_then_fails_or_soft_fails() -> None:
    with DAG("d"):
        hard = Never("hard", poke_interval=0.01, timeout=0.05)
        soft = Never("soft", poke_interval=0.01, timeout=0.05, soft_fail=True)
    with pytest.raises(SensorTimeout, match="sensor 'hard' timed out"):
        hard.execute(ctx())
    assert hard.pokes >= 2
    with pytest.raises(SkipTask, match="soft_fail"):
        soft.execute(ctx())


def test_reschedule_mode_pokes_once_then_asks_to_be_rescheduled_keeping_the_first_poke_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HAREFLOW_SENSOR_MIN_RESCHEDULE_INTERVAL", "0")
    with DAG("d"):
        sensor = Never("s", mode="reschedule", poke_interval=5, timeout=100)
    with pytest.raises(RescheduleTask) as first:
        sensor.execute(ctx())
    assert sensor.pokes == 1
    assert first.value.reschedule_at - first.value.first_poke_at == pytest.approx(5, abs=0.5)
    with pytest.raises(RescheduleTask) as later:
        sensor.execute(ctx(reschedules=3, first_poke_at=first.value.first_poke_at))
    assert later.value.first_poke_at == first.value.first_poke_at
    with pytest.raises(SensorTimeout):  # the timeout counts from the first poke, not this delivery
        sensor.execute(ctx(reschedules=4, first_poke_at=first.value.first_poke_at - 200))


def test_file_sensor_matches_globs_and_directories_holding_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with DAG("d"):
        csv = FileSensor(task_id="csv", filepath=str(tmp_path / "*.csv"))
        empty = FileSensor(task_id="empty", filepath=str(tmp_path / "empty"))
    assert not csv.poke(ctx()) and not empty.poke(ctx())
    (tmp_path / "a.csv").write_text("x")
    (tmp_path / "empty" / "f").write_text("x")
    assert csv.poke(ctx()) and empty.poke(ctx())


def test_date_time_sensors_compare_now_with_their_target() -> None:
    with DAG("d"):
        past = DateTimeSensor(task_id="past", target_time=datetime(2020, 1, 1))
        future = DateTimeSensor(task_id="future", target_time="2999-01-01T00:00:00+00:00")
        delta = TimeDeltaSensor(task_id="delta", delta=timedelta(hours=1))
    assert past.poke(ctx()) and not future.poke(ctx())
    assert delta.target(ctx(data_interval_end=NOW)) == NOW + timedelta(hours=1)


# -- the protocol, the state machine, the scheduler's decision -------------------------------------------


KEY = TaskKey(ti_id=1, dag_id="d", run_id="r", task_id="s", map_index=-1, try_number=1)


def test_messages_without_reschedules_encode_as_before_and_with_them_round_trip() -> None:
    task_message = TaskMessage(KEY, 1, "/dags/d.py", "default", None, None, None, None)
    body = json.loads(task_message.encode())
    assert "reschedules" not in body and "first_poke_at" not in body and body["v"] == 1
    again = TaskMessage(
        KEY, 1, "/dags/d.py", "default", None, None, None, None, reschedules=2, first_poke_at=9.5
    )
    assert json.loads(again.encode())["v"] == 3 and decode(again.encode()) == again
    plain = ResultMessage(key=KEY, outcome="success", worker="w", hostname="h", pid=1, at=1.0)
    assert not {"reschedules", "reschedule_at", "first_poke_at"} & set(json.loads(plain.encode()))
    resched = ResultMessage(
        key=KEY, outcome="up_for_reschedule", worker="w", hostname="h", pid=1, at=1.0, reschedule_at=31.0,
        first_poke_at=1.0, reschedules=1,
    )  # fmt: skip
    assert decode(resched.encode()) == resched


def test_a_reschedule_is_a_final_report_of_the_same_delivery_and_frees_its_slot() -> None:
    assert TaskState.UP_FOR_RESCHEDULE not in TASK_OCCUPYING
    assert TASK_TRANSITIONS[TaskTransition.REPORT_RESCHEDULE].targets == {TaskState.UP_FOR_RESCHEDULE}
    assert TASK_TRANSITIONS[TaskTransition.REQUEUE_RESCHEDULED].sources == {TaskState.UP_FOR_RESCHEDULE}
    reschedule = WorkerOutcome.UP_FOR_RESCHEDULE
    assert accepts_report(TaskState.RUNNING, 1, reschedule, 1, current_reschedules=2, reported_reschedules=2)
    # an earlier delivery of the same try, arriving late, changes nothing
    assert not accepts_report(TaskState.RUNNING, 1, WorkerOutcome.SUCCESS, 1, current_reschedules=2)
    assert not accepts_report(
        TaskState.UP_FOR_RESCHEDULE, 1, reschedule, 1, current_reschedules=3, reported_reschedules=2
    )


@pytest.mark.parametrize(
    ("when", "reschedule", "wakeup"),
    [
        (NOW - timedelta(seconds=1), ["s"], None),
        (NOW + timedelta(seconds=30), [], NOW + timedelta(seconds=30)),
    ],
)
def test_a_waiting_sensor_is_dispatched_again_once_its_poke_is_due(
    when: datetime, reschedule: list[str], wakeup: datetime | None
) -> None:
    from tests.unit.test_scheduler_decisions import T

    decision = evaluate_run(
        [T("s"), T("after", ("s",))],
        {"s": TIView("up_for_reschedule", 1, None, when), "after": TIView("none")},
        NOW,
    )
    assert decision.reschedule == reschedule
    assert decision.schedule == [] and decision.run_state is None
    assert next_wakeup(decision) == wakeup
    assert decision.decides_anything() == bool(reschedule)


def test_file_sensor_paths_are_relative_to_the_fs_connections_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hareflow.common.secrets.client import set_resolver

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.csv").write_text("1")
    monkeypatch.setenv("HAREFLOW_CONN_LANDING", f"fs://{tmp_path}")  # the path in the URI
    monkeypatch.setenv(
        "HAREFLOW_CONN_BYEXTRA", json.dumps({"conn_type": "fs", "extra": {"path": str(tmp_path)}})
    )
    set_resolver(None)
    try:
        with DAG("d"):
            by_uri = FileSensor(task_id="a", filepath="in/*.csv", fs_conn_id="landing")
            by_extra = FileSensor(task_id="b", filepath="in/x.csv", fs_conn_id="byextra")
            missing = FileSensor(task_id="c", filepath="in/y.csv", fs_conn_id="byextra")
        assert by_uri.base_path() == str(tmp_path)
        assert by_uri.poke(ctx()) and by_extra.poke(ctx()) and not missing.poke(ctx())
    finally:
        set_resolver(None)
