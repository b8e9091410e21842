"""The results consumer stores each try's rendered template fields once, with its final report."""

from __future__ import annotations

import json

from hareflow.common.db import TaskRendered
from hareflow.common.messages import ResultMessage, decode
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.unit.test_results_apply import apply, key, result, session, ti

__all__ = ["session"]  # the fixture, shared with test_results_apply

FIELDS = json.dumps({"bash_command": "echo 2026-01-01"})


def stored(session: Session) -> list[tuple[int, str]]:
    session.expire_all()
    return [tuple(row) for row in session.execute(select(TaskRendered.try_number, TaskRendered.fields_json))]


def test_a_final_report_s_rendered_fields_are_stored_for_its_try(session: Session) -> None:
    apply(session, result("failed", error="exit 1", rendered_json=FIELDS))
    assert ti(session).state == "up_for_retry"
    assert stored(session) == [(1, FIELDS)]


def test_a_duplicate_final_report_stores_its_rendered_fields_once(session: Session) -> None:
    apply(session, result("success", rendered_json=FIELDS), result("success", at=200.0, rendered_json=FIELDS))
    apply(session, result("success", at=300.0, rendered_json=FIELDS))
    assert stored(session) == [(1, FIELDS)]


def test_a_report_without_rendered_fields_stores_no_row_and_older_reports_still_decode() -> None:
    body = ResultMessage(key=key(), outcome="success", worker="w", hostname="h", pid=1, at=1.0).to_dict()
    assert "rendered_json" not in body  # left out when unset: encoded as before templates existed
    decoded = decode(json.dumps(body))
    assert isinstance(decoded, ResultMessage) and decoded.rendered_json is None
    withfields = ResultMessage(
        key=key(), outcome="success", worker="w", hostname="h", pid=1, at=1.0, rendered_json=FIELDS
    )
    assert decode(withfields.encode()) == withfields
