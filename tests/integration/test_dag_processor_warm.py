"""Parse children are forked from a warm parse server, with every guarantee of a fresh interpreter."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hareflow.common.db import Dag, ImportError_, create_engine_for, make_session_factory
from hareflow.common.db.migrate import migrate
from hareflow.scheduler.dag_processor import DagProcessor
from hareflow.scheduler.warm_parse import RESTART_AFTER
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import fast_settings

DAG_SOURCE = """
from datetime import datetime
from hareflow import DAG, BashTask
{body}
with DAG({dag_id}, start_date=datetime(2026, 1, 1)):
    BashTask("t", "echo hi")
"""


@pytest.fixture(params=["postgres_url", "mysql_url"])
def sessions(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    engine = create_engine_for(request.getfixturevalue(request.param))
    migrate(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def processor(tmp_path: Path, dags_folder: Path, sessions: sessionmaker[Session]) -> Iterator[DagProcessor]:
    settings = fast_settings(tmp_path, dags_folder=str(dags_folder), dag_file_processor_timeout=3.0)
    p = DagProcessor(settings=settings, session_factory=sessions)
    yield p
    p.close()


def dag_file(folder: Path, name: str, dag_id: str, body: str = "") -> Path:
    path = folder / name
    path.write_text(DAG_SOURCE.format(dag_id=dag_id, body=textwrap.dedent(body)))
    return path


def touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def active(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as s:
        return set(s.scalars(select(Dag.dag_id).where(Dag.is_active)))


def errors(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions() as s:
        return {Path(e.filename).name: e.message for e in s.scalars(select(ImportError_))}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_each_file_is_parsed_in_a_child_forked_from_the_one_warm_server(
    processor: DagProcessor, dags_folder: Path, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    for n in range(3):
        body = f"import os\nopen({str(tmp_path / f'ppid{n}')!r}, 'w').write(str(os.getppid()))\n"
        dag_file(dags_folder, f"d{n}.py", f"'d{n}'", body)
    processor.run_once()
    assert active(sessions) == {"d0", "d1", "d2"}
    server = processor.parse_server.pid
    assert server is not None and server != os.getpid()
    assert {(tmp_path / f"ppid{n}").read_text() for n in range(3)} == {str(server)}


def test_module_state_of_one_file_never_reaches_the_next_and_a_changed_helper_module_is_seen(
    processor: DagProcessor, dags_folder: Path, sessions: sessionmaker[Session]
) -> None:
    (dags_folder / "shared_name.py").write_text("NAME = 'one'\n")
    dag_file(
        dags_folder, "a.py", "'a_' + shared_name.NAME", "import json, shared_name\njson.LEFT_BY_A = True\n"
    )
    processor.run_once()
    assert active(sessions) == {"a_one"}
    b = dag_file(
        dags_folder, "b.py", "'b_leaked' if hasattr(json, 'LEFT_BY_A') else 'b_clean'", "import json\n"
    )
    processor.run_once()
    assert active(sessions) == {"a_one", "b_clean"}
    (dags_folder / "shared_name.py").write_text("NAME = 'two'\n")
    touch(dags_folder / "a.py")
    touch(b)
    processor.run_once()
    assert active(sessions) == {"a_two", "b_clean"}


def test_a_hang_a_crash_and_whatever_a_file_started_end_with_its_parse(
    processor: DagProcessor, dags_folder: Path, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    dag_file(dags_folder, "good.py", "'good'")
    dag_file(dags_folder, "hang.py", "'hang'", "import time\ntime.sleep(600)\n")
    dag_file(dags_folder, "crash.py", "'crash'", "import os\nos._exit(3)\n")
    pid_file = tmp_path / "escaped.pid"
    # A process in a session of its own: it leaves the parse's process group, not the parse's tree.
    body = f"""
        import subprocess
        p = subprocess.Popen(["sleep", "300"], start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(p.pid))
    """
    dag_file(dags_folder, "spawner.py", "'spawner'", body)
    processor.run_once()
    assert active(sessions) == {"good", "spawner"}
    found = errors(sessions)
    assert set(found) == {"hang.py", "crash.py"}
    assert found["hang.py"] == "parsing took longer than 3s (dag_file_processor_timeout) and was stopped"
    assert found["crash.py"].startswith("DAG processor exited with code 3")
    escaped = int(pid_file.read_text())
    wait_for(lambda: not alive(escaped))


def test_a_parse_server_that_died_is_started_again_and_no_parse_is_lost_meanwhile(
    processor: DagProcessor, dags_folder: Path, sessions: sessionmaker[Session]
) -> None:
    first = dag_file(dags_folder, "a.py", "'a'")
    processor.run_once()
    server = processor.parse_server.pid
    assert server is not None
    os.kill(server, signal.SIGKILL)
    wait_for(lambda: processor.parse_server.pid is None)
    dag_file(dags_folder, "b.py", "'b'")  # parsed while the server is down: in a fresh interpreter
    processor.run_once()
    assert active(sessions) == {"a", "b"}
    time.sleep(RESTART_AFTER)
    dag_file(dags_folder, "c.py", "'c'")
    touch(first)
    processor.run_once()
    assert active(sessions) == {"a", "b", "c"}
    restarted = processor.parse_server.pid
    assert restarted is not None and restarted != server


def test_closing_the_processor_stops_the_server_and_the_parses_in_flight(
    processor: DagProcessor, dags_folder: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    body = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
    dag_file(dags_folder, "hang.py", "'hang'", body)
    processor.run_once(wait=False)
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
    server = processor.parse_server.pid
    assert server is not None
    processor.close()
    wait_for(lambda: not alive(int(pid_file.read_text())) and not alive(server))


def restarted(processor: DagProcessor) -> DagProcessor:
    """A new processor over the same folder and metastore: the scheduler after a restart."""
    return DagProcessor(settings=processor._settings, session_factory=processor._sessions)  # noqa: SLF001


def test_a_restart_with_nothing_changed_parses_nothing_and_still_sees_later_changes(
    processor: DagProcessor, dags_folder: Path, sessions: sessionmaker[Session]
) -> None:
    (dags_folder / "steps.py").write_text("NAME = 'x'\n")
    dag_file(dags_folder, "a.py", "'a'", "import steps\n")
    dag_file(dags_folder, "b.py", "'b'")
    processor.run_once()
    assert active(sessions) == {"a", "b"}
    again = restarted(processor)
    try:
        assert again.run_once().parsed == []
        assert again.files_parsed == 0
        assert active(sessions) == {"a", "b"}
        assert again.run_once().parsed == []  # marked seen with its mtime and size
        dag_file(dags_folder, "b.py", "'b2'")
        assert [Path(p).name for p in again.run_once().parsed] == ["b.py"]
        assert active(sessions) == {"a", "b2"}
    finally:
        again.close()


def test_a_changed_helper_module_or_source_re_parses_the_files_that_use_it_on_restart(
    processor: DagProcessor, dags_folder: Path, sessions: sessionmaker[Session]
) -> None:
    (dags_folder / "steps.py").write_text("NAME = 'one'\n")
    dag_file(dags_folder, "uses.py", "'uses_' + steps.NAME", "import steps\n")
    dag_file(dags_folder, "plain.py", "'plain'")
    edited = dag_file(dags_folder, "edited.py", "'edited'")
    processor.run_once()
    assert active(sessions) == {"uses_one", "plain", "edited"}
    (dags_folder / "steps.py").write_text("NAME = 'two'\n")
    stat = edited.stat()
    dag_file(dags_folder, "edited.py", "'edite2'")  # same size, same mtime: only the content says so
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = restarted(processor)
    try:
        parsed = {Path(p).name for p in again.run_once().parsed}
    finally:
        again.close()
    assert parsed == {"uses.py", "edited.py"}
    assert active(sessions) == {"uses_two", "plain", "edite2"}


def test_a_file_with_an_import_error_or_an_inactive_dag_is_parsed_again_on_restart(
    processor: DagProcessor, dags_folder: Path, sessions: sessionmaker[Session]
) -> None:
    dag_file(dags_folder, "broken.py", "'broken'", "raise RuntimeError('no')\n")
    dag_file(dags_folder, "good.py", "'good'")
    processor.run_once()
    assert set(errors(sessions)) == {"broken.py"}
    with sessions() as s, s.begin():
        dag = s.get(Dag, "good")
        assert dag is not None
        dag.is_active = False
    again = restarted(processor)
    try:
        parsed = {Path(p).name for p in again.run_once().parsed}
    finally:
        again.close()
    assert parsed == {"broken.py", "good.py"}
    assert active(sessions) == {"good"}
    assert set(errors(sessions)) == {"broken.py"}
