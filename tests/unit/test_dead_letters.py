"""What a dead letter is recorded as, how a copy is told apart from a redelivery of the same copy,
and when a requeue is refused: pure functions, tested with tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hareflow.common.db import DeadLetter
from hareflow.common.dead_letters import (
    DEAD_LETTERING_HEADERS,
    TaskState,
    describe,
    fingerprint,
    preview,
    queue_kind,
    requeue_headers,
    requeue_refusal,
)
from hareflow.common.messages import ResultMessage, TaskKey, TaskMessage

NOW = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)
KEY = TaskKey(42, "etl", "manual__1", "load", -1, 2)
TASK = TaskMessage(
    key=KEY,
    max_tries=3,
    dag_file="/dags/etl.py",
    queue="default",
    execution_timeout=None,
    logical_date=None,
    data_interval_start=None,
    data_interval_end=None,
).encode()
OURS = {
    "x-hareflow-reason": "malformed message: not JSON",
    "x-hareflow-queue": "hareflow.q.default",
    "x-hareflow-deliveries": 3,
    "x-hareflow-dead-id": "abc123",
    "trace": b"kept",
}
X_DEATH = {
    "x-death": [
        {
            "queue": "hareflow.q.default",
            "reason": "rejected",
            "count": 1,
            "exchange": "",
            "time": datetime(2026, 12, 3, 10, 0),
            "routing-keys": ["hareflow.q.default"],
        }
    ],
    "x-first-death-queue": "hareflow.q.default",
}


def row(**values: Any) -> DeadLetter:
    base = describe(TASK, OURS, message_id="etl/manual__1/load#2", content_type="application/json", now=NOW)
    if "body" in values:
        base["body_size"] = len(values["body"])
    base.update(values)
    dl = DeadLetter(**base)
    dl.id = 7
    return dl


def test_our_dead_letters_say_why_from_where_and_after_how_many_deliveries_and_whose_task_they_are() -> None:
    d = describe(TASK, OURS, message_id="m-1", content_type="application/json", now=NOW)
    assert (d["reason"], d["queue"], d["deliveries"]) == (
        "malformed message: not JSON",
        "hareflow.q.default",
        3,
    )
    assert (d["message_type"], d["ti_id"], d["dag_id"], d["run_id"], d["task_id"]) == (
        "task",
        42,
        "etl",
        "manual__1",
        "load",
    )
    assert (d["map_index"], d["try_number"], d["state"]) == (-1, 2, "dead")
    assert d["body"] == TASK and d["body_size"] == len(TASK)
    assert d["headers"]["trace"] == "kept"  # bytes in AMQP tables are stored as text
    json.dumps(d["headers"])


def test_a_message_rabbitmq_dead_lettered_itself_is_read_from_its_x_death_header() -> None:
    d = describe(b"\x00garbage", X_DEATH, message_id=None, content_type=None, now=NOW)
    assert d["reason"] == "dead-lettered by RabbitMQ: rejected"
    assert d["queue"] == "hareflow.q.default"
    assert d["message_type"] is None and d["dag_id"] is None
    assert d["headers"]["x-death"][0]["time"] == "2026-12-03T10:00:00+00:00"


@pytest.mark.parametrize(
    "body",
    [b"", b"\xff\xfe", b"[1, 2]", b'{"type": "task", "v": 1}', b'{"type": "launch_missiles"}', b"[" * 100000],
)
def test_garbage_is_recorded_whatever_it_is(body: bytes) -> None:
    d = describe(body, {}, message_id=None, content_type=None, now=NOW)
    assert d["message_type"] is None and d["reason"] == "published to the dead-letter exchange directly"


def test_a_body_over_a_mebibyte_keeps_its_start_and_its_size() -> None:
    d = describe(b"x" * (3 << 20), OURS, message_id=None, content_type=None, now=NOW)
    assert len(d["body"]) == 1 << 20 and d["body_size"] == 3 << 20


def test_a_redelivered_copy_has_the_same_fingerprint_and_another_dead_lettering_another() -> None:
    assert fingerprint(TASK, OURS, "m") == fingerprint(TASK, dict(OURS), "m")
    assert fingerprint(TASK, OURS, "m") != fingerprint(TASK, {**OURS, "x-hareflow-dead-id": "def456"}, "m")
    assert fingerprint(TASK, X_DEATH, None) == fingerprint(TASK, X_DEATH, None)
    later = {"x-death": [{**X_DEATH["x-death"][0], "time": datetime(2026, 12, 3, 10, 5)}]}
    assert fingerprint(TASK, X_DEATH, None) != fingerprint(TASK, later, None)
    assert fingerprint(TASK, X_DEATH, None) != fingerprint(TASK + b" ", X_DEATH, None)


def test_the_preview_is_short_one_line_and_shows_control_characters() -> None:
    assert preview(b"\x00\x1b[31mred\nline") == "\\x00\\x1b[31mred line"
    long = preview(b"a" * 1000)
    assert len(long) == 160 and long.endswith("…")


@pytest.mark.parametrize(
    ("name", "prefix", "kind"),
    [
        ("hareflow.q.default", "hareflow", "task"),
        ("hareflow.results", "hareflow", "results"),
        ("hareflow.trigger.orders", "hareflow", "other"),
        ("other.q.default", "hareflow", "other"),
        ("default", None, "task"),
        ("(results)", None, "results"),
    ],
)
def test_queue_kinds(name: str, prefix: str | None, kind: str) -> None:
    assert queue_kind(name, prefix) == kind


QUEUED_TRY_2 = TaskState("queued", 2)
RESULT = ResultMessage(KEY, "success", "w", "h", 1, 0.0).encode()


@pytest.mark.parametrize(
    ("values", "ti", "kind", "refused"),
    [
        # a task message whose try is still waited for (RabbitMQ rejected it, say): requeued
        ({}, QUEUED_TRY_2, "task", None),
        # ... but not once that try ended or moved on: a zombie; clear the task instead
        ({}, TaskState("failed", 2), "task", "is failed at try 2"),
        ({}, TaskState("queued", 3), "task", "this message is try 2, which is no longer waited for"),
        ({}, TaskState("running", 2), "task", "it would run as a zombie; clear the task instance"),
        ({}, None, "task", "no longer exists"),
        ({"state": "requeued"}, QUEUED_TRY_2, "task", "was already requeued"),
        ({"state": "discarded"}, QUEUED_TRY_2, "task", "was already discarded"),
        ({"body_size": 10**7}, QUEUED_TRY_2, "task", "a requeue would not be the same message"),
        ({"queue": ""}, QUEUED_TRY_2, "task", "which queue"),
        # bodies nothing can read, in our queues: they would only come back
        ({"body": b"\x00garbage", "message_type": None}, None, "task", "not a JSON object"),
        ({"body": b"\x00garbage", "message_type": None}, None, "results", "not a JSON object"),
        # a JSON object another version may read: requeued
        ({"body": b'{"type": "task", "v": 99}', "message_type": None}, None, "task", None),
        # a hareflow message of the wrong kind for its queue
        ({"message_type": "heartbeat"}, None, "task", "does not belong"),
        ({"message_type": "task"}, QUEUED_TRY_2, "results", "does not belong"),
        # results are replays the state machine makes harmless
        ({"body": RESULT, "message_type": "result"}, None, "results", None),
        # a BrokerTrigger's queue: anything (the DAG's params may have changed)
        ({"body": b"not json", "message_type": None}, None, "other", None),
    ],
)
def test_when_a_requeue_is_refused(
    values: dict[str, Any], ti: TaskState | None, kind: str, refused: str | None
) -> None:
    reason = requeue_refusal(row(**values), ti, kind=kind)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_a_requeued_message_keeps_its_headers_but_not_those_of_its_dead_lettering() -> None:
    dead = row(
        headers={
            **describe(TASK, {**OURS, **X_DEATH}, message_id=None, content_type=None, now=NOW)["headers"]
        }
    )
    headers = requeue_headers(dead)
    assert headers == {"trace": "kept", "x-hareflow-requeued-from": 7}
    assert not DEAD_LETTERING_HEADERS & set(headers) - {"x-hareflow-requeued-from"}


def test_the_local_executors_dead_letters_are_recorded_once_and_requeued_to_their_queue(
    tmp_path: Any,
) -> None:
    """``hareflow standalone``: no broker, the same table. A worker's dead letter reaches the
    recorder beside the results consumer; requeue puts it back in the in-process queue."""
    from hareflow.common import dead_letters
    from hareflow.common.broker.local import LocalExecutor
    from hareflow.common.db import Base, create_engine_for, make_session_factory
    from hareflow.scheduler.dead_letters import DeadLetterRecorder

    engine = create_engine_for(f"sqlite:///{tmp_path / 'm.db'}")
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    executor = LocalExecutor()
    executor.start()
    try:
        inbox: list[Any] = []
        executor.consume_tasks(["default"], 1, inbox.append)
        executor.declare_queues(["default"])
        with executor._cond:
            executor._state.queues["default"].append((b'{"type": "task", "v": 99}', 0))
            executor._cond.notify_all()
        import time

        deadline = time.monotonic() + 5
        while not inbox and time.monotonic() < deadline:
            time.sleep(0.01)
        executor.dead_letter(inbox.pop(), "malformed message: unsupported protocol version 99")
        executor.stop_consuming_tasks()

        recorder = DeadLetterRecorder(executor=executor, session_factory=sessions)
        recorder.start()  # after the dead-lettering: it gets what waited for it
        assert recorder.run_once(timeout=1, now=NOW) == 1
        assert {q.name: q.messages for q in executor.queue_stats(["default"])}["(dead letters)"] == 0
        with sessions() as s:
            (row,) = dead_letters.list_dead_letters(s)
            assert (row.queue, row.deliveries, row.reason) == (
                "default",
                1,
                "malformed message: unsupported protocol version 99",
            )
        with sessions() as s, s.begin():
            dead_letters.requeue(s, executor, row.id, username="tests", origin=None, prefix=None, now=NOW)
        assert list(executor._state.queues["default"]) == [(b'{"type": "task", "v": 99}', 0)]
    finally:
        executor.close()
        engine.dispose()
