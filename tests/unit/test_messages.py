import json

import pytest
from hareflow.common.messages import (
    EventBatch,
    HeartbeatMessage,
    LogMessage,
    MessageError,
    ResultMessage,
    StateEvent,
    TaskKey,
    TaskMessage,
    decode,
)

KEY = TaskKey(ti_id=7, dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=2)


@pytest.mark.parametrize(
    "message",
    [
        TaskMessage(
            key=KEY,
            max_tries=3,
            dag_file="/dags/d.py",
            queue="default",
            execution_timeout=5.0,
            logical_date="2026-01-01T00:00:00+00:00",
            data_interval_start=None,
            data_interval_end=None,
            conf={"a": 1},
            params={"p": [1, 2]},
            upstream_results={"up": {"x": 1}},
        ),
        ResultMessage(key=KEY, outcome="success", worker="w", hostname="h", pid=1, at=1.5, result_json="3"),
        LogMessage(key=KEY, seq=4, text="hello\n", at=2.0),
        HeartbeatMessage(
            worker="w", hostname="h", pid=1, queues=["default"], concurrency=4, running=[7], at=3.0
        ),
        StateEvent(kind="task", dag_id="d", run_id="r", state="success", at=4.0, task_id="t", ti_id=7),
        EventBatch(
            events=[
                StateEvent(kind="run", dag_id="d", run_id="r", state="running", at=5.0),
                StateEvent(kind="task", dag_id="d", run_id="r", state="queued", at=5.0, task_id="t", ti_id=7),
            ]
        ),
    ],
)
def test_every_message_type_round_trips_through_json(message: object) -> None:
    body = message.encode()  # type: ignore[attr-defined]
    assert json.loads(body)["v"] == 1
    assert decode(body) == message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "nope", "v": 1}', "unknown message type"),
        (b'{"type": "log", "v": 99}', "unsupported protocol version"),
        (b'{"type": "log", "v": 1, "key": 3, "seq": 1, "text": "", "at": 0}', "'key' must be an object"),
        (b'{"type": "log", "v": 1, "seq": 1}', "bad 'log' message"),
        (b'{"type": "events", "v": 1, "events": {}}', "'events' must be a list"),
        (
            b'{"type": "events", "v": 1, "events": [{"type": "log", "v": 1, "key": {"ti_id": 1,'
            b' "dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1, "try_number": 1},'
            b' "seq": 1, "text": "", "at": 0}]}',
            "only state events",
        ),
        (
            b'{"type": "result", "v": 1, "key": {"ti_id": 1, "dag_id": "d", "run_id": "r", "task_id": "t",'
            b' "map_index": -1, "try_number": 1}, "outcome": "exploded", "worker": "w", "hostname": "h",'
            b' "pid": 1, "at": 0}',
            "bad outcome",
        ),
    ],
)
def test_malformed_bodies_raise_one_domain_error(body: bytes, fragment: str) -> None:
    with pytest.raises(MessageError, match=fragment):
        decode(body)
