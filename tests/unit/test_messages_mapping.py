"""Protocol version 2: a task message may carry a mapped instance's own arguments."""

from __future__ import annotations

import json

import pytest
from hareflow.common.messages import MessageError, TaskKey, TaskMessage, decode

KEY = TaskKey(ti_id=1, dag_id="d", run_id="r", task_id="t", map_index=3, try_number=1)


def _task(**extra: object) -> TaskMessage:
    return TaskMessage(
        key=KEY,
        max_tries=1,
        dag_file="/dags/d.py",
        queue="default",
        execution_timeout=None,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
        **extra,  # type: ignore[arg-type]
    )


def test_a_task_message_without_mapped_arguments_keeps_the_version_1_form() -> None:
    body = json.loads(_task().encode())
    assert body["v"] == 1 and "expand_args" not in body
    assert decode(json.dumps(body)) == _task()


def test_a_mapped_instance_message_is_version_2_and_round_trips_its_arguments() -> None:
    message = _task(expand_args={"x": [1, 2]})
    body = json.loads(message.encode())
    assert body["v"] == 2 and body["expand_args"] == {"x": [1, 2]}
    assert decode(message.encode()) == message


def test_mapped_arguments_that_are_not_an_object_are_a_message_error() -> None:
    body = json.loads(_task().encode())
    body.update(v=2, expand_args=[1])
    with pytest.raises(MessageError, match="expand_args must be an object"):
        decode(json.dumps(body))
