"""Encoding of task return values: JSON only, and capped in size so results stay cheap to move."""

from __future__ import annotations

import json
from typing import Any

from hareflow.common.dag.errors import TaskResultNotSerializable, TaskResultTooLarge


def encode_result(value: Any, limit_bytes: int, *, task_id: str = "<unknown>") -> str:
    """JSON-encode a task's return value, refusing values that are not JSON or are over the limit.

    Raises TaskResultNotSerializable (a TypeError) naming the offending type, or TaskResultTooLarge.
    """
    bad_types: list[str] = []

    def reject(obj: Any) -> Any:
        bad_types.append(type(obj).__name__)
        raise TypeError(type(obj).__name__)

    try:
        text = json.dumps(value, default=reject, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        raise TaskResultNotSerializable(task_id, "a NaN or infinite float") from None
    except TypeError:
        type_name = bad_types[0] if bad_types else "a non-string dict key"
        raise TaskResultNotSerializable(task_id, type_name) from None
    size = len(text.encode("utf-8"))
    if size > limit_bytes:
        raise TaskResultTooLarge(task_id, size, limit_bytes)
    return text


def decode_result(text: str | None) -> Any:
    """Inverse of ``encode_result``; None (no stored result) decodes to None."""
    return None if text is None else json.loads(text)
