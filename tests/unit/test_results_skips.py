"""The results consumer's skips: self-skip, fail without retry, and a branch's downstream skips,
on a real (file) SQLite metastore."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hareflow.common.db import Base, DagRun, TaskInstance, create_engine_for, make_session_factory
from hareflow.common.messages import ResultMessage, TaskKey, decode
from hareflow.scheduler.results import apply_results, read_reports, write_reports
from sqlalchemy import select
from sqlalchemy.orm import Session

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TASKS = {"pick": "queued", "a": "none", "b": "none", "c": "running"}


@pytest.fixture
def session(tmp_path: Path):
    engine = create_engine_for(f"sqlite:///{tmp_path / 'm.db'}")
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as s:
        with s.begin():
            run = DagRun(dag_id="d", run_id="r", run_type="manual", state="running", queued_at=NOW, conf={})
            s.add(run)
            s.flush()
            for task_id, state in TASKS.items():
                try_number = 0 if state == "none" else 1
                s.add(
                    TaskInstance(
                        run_pk=run.id,
                        dag_id="d",
                        run_id="r",
                        task_id=task_id,
                        state=state,
                        try_number=try_number,
                        max_tries=3,
                    )
                )
        yield s
    engine.dispose()


def result(outcome: str, **kw: object) -> ResultMessage:
    key = TaskKey(ti_id=1, dag_id="d", run_id="r", task_id="pick", map_index=-1, try_number=1)
    return ResultMessage(key=key, outcome=outcome, worker="w1", hostname="h1", pid=5, at=100.0, **kw)  # type: ignore[arg-type]


def apply(session: Session, *messages: ResultMessage) -> list:
    if session.in_transaction():
        session.commit()
    with session.begin():
        return apply_results(session, list(messages), NOW)


def states(session: Session) -> dict[str, tuple[str, str | None]]:
    session.expire_all()
    return {ti.task_id: (ti.state, ti.error) for ti in session.scalars(select(TaskInstance))}


def test_a_self_skip_ends_the_try_skipped_with_its_reason(session: Session) -> None:
    events = apply(session, result("skipped", error="no new files"))
    assert states(session)["pick"] == ("skipped", "no new files")
    assert [e.state for e in events] == ["skipped"]


def test_fail_without_retry_fails_the_try_although_tries_remain(session: Session) -> None:
    apply(session, result("failed", error="FailTask: bad credentials", no_retry=True))
    assert states(session)["pick"] == ("failed", "FailTask: bad credentials")


def test_an_ordinary_failure_with_tries_left_is_up_for_retry(session: Session) -> None:
    apply(session, result("failed", error="boom"))
    assert states(session)["pick"][0] == "up_for_retry"


def test_a_branch_success_skips_the_named_downstream_tasks_in_the_same_transaction(session: Session) -> None:
    reason = "skipped by branch 'pick' (it followed 'a')"
    events = apply(session, result("success", result_json='"a"', skip_task_ids=["b"], skip_reason=reason))
    got = states(session)
    assert got["pick"][0] == "success"
    assert got["a"] == ("none", None)
    assert got["b"] == ("skipped", reason)
    assert sorted((e.task_id, e.state) for e in events) == [("b", "skipped"), ("pick", "success")]


def test_a_skip_never_touches_a_task_instance_already_running(session: Session) -> None:
    apply(session, result("success", skip_task_ids=["b", "c"], skip_reason="r"))
    got = states(session)
    assert got["b"][0] == "skipped"
    assert got["c"] == ("running", None)


def test_a_duplicate_branch_result_skips_nothing_the_second_time(session: Session) -> None:
    apply(session, result("success", skip_task_ids=["b"], skip_reason="r"))
    with session.begin():  # an operator clears b meanwhile
        session.get(TaskInstance, 3).state = "none"  # type: ignore[union-attr]
    events = apply(session, result("success", skip_task_ids=["b"], skip_reason="r"))
    assert events == []
    assert states(session)["b"][0] == "none"


def test_the_optional_result_fields_are_absent_unless_set_and_round_trip() -> None:
    plain = result("success")
    assert set(plain.to_dict()) >= {"type", "v"} and "skip_task_ids" not in plain.to_dict()
    assert "no_retry" not in plain.to_dict()
    assert decode(plain.encode()) == plain
    branchy = result("success", skip_task_ids=["b"], skip_reason="r", no_retry=False)
    assert decode(branchy.encode()) == branchy
    assert decode(result("skipped", error="why").encode()).outcome == "skipped"


def test_a_consumer_whose_success_write_lost_the_race_skips_nothing(session: Session) -> None:
    message = result("success", skip_task_ids=["b"], skip_reason="r")
    with session.begin():  # two consumers read the same redelivered result before either commits
        first, second = read_reports(session, [message]), read_reports(session, [message])
    with session.begin():
        write_reports(session, first, NOW)
    with session.begin():  # an operator clears b meanwhile
        session.get(TaskInstance, 3).state = "none"  # type: ignore[union-attr]
    with session.begin():
        events = write_reports(session, second, NOW)
    assert events == []
    assert states(session)["b"][0] == "none"
