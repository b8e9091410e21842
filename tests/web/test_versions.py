"""DAG versions on the web: the API lists them and serves each in full, a run's JSON names its
version, and the graph and source pages show the DAG as a chosen run (or version) saw it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hareflow.common.config import Settings
from hareflow.common.runs import trigger_run
from hareflow.scheduler.dag_processor import DagProcessor
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client, unique

SOURCE = """
from hareflow import DAG, task
with DAG("{dag_id}"):
    @task
    def extract():
        return 1
    extract(){extra}
"""
LOAD = """ >> load()

    @task
    def load():
        return 2
"""
SECOND = """
    @task
    def load():
        return 2
    load()"""


def _parse(
    settings: Settings, sessions: sessionmaker[Session], folder: Path, dag_id: str, extra: str
) -> None:
    (folder / f"{dag_id}.py").write_text(SOURCE.format(dag_id=dag_id, extra=extra))
    DagProcessor(settings=settings, session_factory=sessions, folder=folder).run_once(T0)


def _trigger(sessions: sessionmaker[Session], dag_id: str, run_id: str, hour: int) -> None:
    with sessions() as s, s.begin():
        trigger_run(s, dag_id, run_id=run_id, logical_date=T0.replace(hour=hour), now=T0)


@pytest.fixture
def client(viewer: Client) -> Client:
    return viewer


@pytest.fixture
def versioned(web_settings: Settings, web_sessions: sessionmaker[Session], tmp_path: Path) -> str:
    """A DAG at version 2 (a task added), with run ``old`` of version 1 and ``new`` of version 2."""
    dag_id = unique("ver")
    _parse(web_settings, web_sessions, tmp_path, dag_id, "")
    _trigger(web_sessions, dag_id, "old", 1)
    _parse(web_settings, web_sessions, tmp_path, dag_id, SECOND)
    _trigger(web_sessions, dag_id, "new", 2)
    return dag_id


def _embedded(html: str, element_id: str) -> Any:
    return json.loads(html.split(f'id="{element_id}">')[1].split("</script>")[0])


def test_the_api_lists_versions_newest_first_with_their_runs(client: Client, versioned: str) -> None:
    listed = client.api("GET", f"/dags/{versioned}/versions").json["versions"]

    assert [(v["version_number"], v["runs"], v["is_latest"]) for v in listed] == [(2, 1, True), (1, 1, False)]
    assert all(len(v["version_hash"]) == 64 and v["created_at"] for v in listed)


def test_a_version_is_served_with_its_serialized_form_and_source(client: Client, versioned: str) -> None:
    first = client.api("GET", f"/dags/{versioned}/versions/1").json
    second = client.api("GET", f"/dags/{versioned}/versions/2").json
    missing = client.api("GET", f"/dags/{versioned}/versions/3")

    assert [t["task_id"] for t in first["serialized"]["tasks"]] == ["extract"]
    assert "def load" not in first["source"] and "def load" in second["source"]
    assert [t["task_id"] for t in second["serialized"]["tasks"]] == ["extract", "load"]
    assert (first["is_latest"], second["is_latest"]) == (False, True)
    assert missing.status_code == 404 and "has no version 3" in missing.json["error"]


def test_a_runs_json_names_the_version_it_was_created_with(client: Client, versioned: str) -> None:
    old = client.api("GET", f"/dags/{versioned}/runs/old").json
    listed = client.api("GET", f"/dags/{versioned}/runs").json["runs"]

    assert old["dag_version"] == 1
    assert {r["run_id"]: r["dag_version"] for r in listed} == {"old": 1, "new": 2}


def test_the_graph_of_an_old_run_is_the_dag_as_that_run_saw_it(client: Client, versioned: str) -> None:
    old = client.get(f"/dags/{versioned}/graph?run_id=old").text
    latest = client.get(f"/dags/{versioned}/graph").text
    by_version = client.get(f"/dags/{versioned}/graph?version=1").text

    assert [n["id"] for n in _embedded(old, "graph-data")["nodes"]] == ["extract"]
    assert [n["id"] for n in _embedded(by_version, "graph-data")["nodes"]] == ["extract"]
    assert [n["id"] for n in _embedded(latest, "graph-data")["nodes"]] == ["extract", "load"]
    assert 'id="version-note"' in old and "the latest is version 2" in old
    assert 'id="version-note"' not in latest
    assert '<option value="1" selected>' in old and '<option value="2" selected>' in latest
    assert _embedded(latest, "run-versions") == {"old": 1, "new": 2}
    assert 'src="/static/js/versions.js?v=' in old
    assert '<input type="hidden" name="run_id" value="old">' in old  # the picker keeps the run


def test_the_source_page_shows_a_runs_version_of_the_file(client: Client, versioned: str) -> None:
    old = client.get(f"/dags/{versioned}/source?run_id=old").text
    newest = client.get(f"/dags/{versioned}/source?version=2").text

    assert "def extract" in old and "def load" not in old and "as run <code>old</code> saw it" in old
    assert "def load" in newest and 'id="version-note"' not in newest
    assert client.get(f"/dags/{versioned}/source?version=9").status_code == 404
    assert client.get(f"/dags/{versioned}/graph?version=x").status_code == 404


def test_a_run_older_than_versions_is_shown_as_unknown(
    client: Client, versioned: str, run_factory: Any
) -> None:
    legacy = run_factory(versioned, logical_date=T0.replace(hour=5))  # no version recorded

    html = client.get(f"/dags/{versioned}/source?run_id={quote(legacy, safe='')}").text
    run = client.api("GET", f"/dags/{versioned}/runs/{quote(legacy, safe='')}").json

    assert "the version it ran is unknown" in html
    assert run["dag_version"] is None


def test_the_details_page_lists_versions_with_when_they_appeared(client: Client, versioned: str) -> None:
    html = client.get(f"/dags/{versioned}/details").text

    table = html.split('id="versions"')[1].split("</table>")[0]
    assert table.index('data-version="2"') < table.index('data-version="1"')
    assert "latest" in table and f"/dags/{versioned}/graph?version=1" in table


def test_the_run_page_names_its_version_with_links_to_its_graph_and_source(
    client: Client, versioned: str
) -> None:
    html = client.get(f"/dags/{versioned}/runs/old").text

    cell = html.split('id="run-dag-version">')[1].split("</td>")[0]
    assert cell.startswith("v1") and "graph?run_id=old" in cell and "source?run_id=old" in cell
