"""`hareflow dags trigger --wait` follows its run: every task instance (each mapped instance apart)
printed as it changes, and, on RabbitMQ, by the run's state events rather than by reading the whole
run every 0.2 s, so what it costs grows with the events and not with the run's width x duration."""

from __future__ import annotations

import re
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import DagRun, create_engine_for, make_session_factory
from sqlalchemy import event, select

from hareflow.cli.follow import follow_run
from tests.integration.conftest import System

FOLLOWED = '''
    """A slow task, then three mapped instances (one fails once and retries), then the end."""
    import time
    from datetime import timedelta
    from hareflow import DAG, task

    with DAG("followed", schedule=None):
        @task
        def slow():
            time.sleep(3)
            return [1, 2, 3]

        @task(retries=1, retry_delay=timedelta(seconds=0.2))
        def part(n, ti=None):
            if n == 2 and ti.try_number == 1:
                raise ValueError("not this time")
            return n

        @task
        def end(values):
            return sum(values)

        end(part.expand(n=slow()))
'''


def _follow(system: System, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], int]:
    """Trigger ``followed`` and follow it with a metastore connection of its own, as the CLI does;
    the exit code, the lines printed and the SQL statements the following ran."""
    (Path(str(system.settings.dags_folder)) / "followed.py").write_text(textwrap.dedent(FOLLOWED))
    system.c.wait_for_dag("followed")
    engine = create_engine_for(system.settings.database_url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        run_id = system.c.trigger("followed")
        with system.c.sessions() as s:
            run_pk = s.scalar(select(DagRun.id).where(DagRun.dag_id == "followed", DagRun.run_id == run_id))
        code = follow_run(system.settings, make_session_factory(engine), run_pk, "followed", run_id, 90)
    finally:
        engine.dispose()
    return code, capsys.readouterr().out.splitlines(), len(statements)


def _states(lines: list[str]) -> dict[str, list[str]]:
    """Task (or ``task[i]``) -> the states printed for it, in order."""
    out: dict[str, list[str]] = {}
    for line in lines:
        m = re.match(r"\d\d:\d\d:\d\d  (\S+)\s+(\w+)", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


@pytest.mark.parametrize("system", ["rabbitmq", "local"], indirect=True)
def test_trigger_wait_prints_each_mapped_instance_and_the_retry_with_its_error(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    system.start()
    code, lines, _ = _follow(system, capsys)

    assert code == 0, lines
    assert lines[-1].endswith(": success")
    states = _states(lines)
    for name in ("slow", "part[0]", "part[1]", "part[2]", "end"):
        assert states.get(name, [])[-1:] == ["success"], (name, lines)
    retry = [line for line in lines if " part[1] " in line and " up_for_retry" in line]
    assert retry and retry[0].endswith("up_for_retry: ValueError: not this time"), lines
    assert any(line.split()[1] == "part[1]" and "(try 2)" in line for line in lines), lines


@pytest.mark.parametrize("system", ["rabbitmq"], indirect=True)
def test_following_a_run_on_rabbitmq_reads_the_run_only_at_the_start_the_end_and_every_few_seconds(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    system.start()
    code, lines, statements = _follow(system, capsys)

    assert code == 0, lines
    # The run takes over 3 s: reading it every 0.2 s would be 2 statements x 15 reads at least.
    # Followed by events: two full reads (start, end), one safety read, and the retry's error.
    assert statements <= 10, (statements, lines)


def test_following_stops_when_the_run_is_deleted(tmp_path: Path, postgres_url: str, capsys: Any) -> None:
    from hareflow.common.db.migrate import migrate

    from tests.conftest import fast_settings

    settings = fast_settings(tmp_path, database_url=postgres_url)
    engine = create_engine_for(postgres_url)
    migrate(engine)
    done: list[int] = []
    thread = threading.Thread(
        target=lambda: done.append(follow_run(settings, make_session_factory(engine), 424242, "d", "r", 10))
    )
    thread.start()
    thread.join(timeout=20)
    engine.dispose()
    assert done == [1]
    assert "the run was deleted" in capsys.readouterr().out
