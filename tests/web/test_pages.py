"""The pages: what each one shows, the forms behind them, and that user text is always escaped."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hareflow.common.db import (
    AuditLog,
    Backfill,
    Dag,
    DagRun,
    ImportError_,
    SchedulerHeartbeat,
    TaskInstance,
    TaskTry,
    User,
    Worker,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client, path_of, unique

XSS = "<script>alert(1)</script>"
XSS_ID = "<img src=x onerror=alert(1)>"  # a DAG id may not hold '/', so no closing tag


@pytest.fixture
def client(as_role: Any) -> Client:
    return as_role("op")


def test_the_dag_list_shows_each_dags_owner_tags_schedule_and_recent_runs(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory(
        tags=["sales", "daily"], owner="ana", schedule="0 2 * * *", description="Sums the day"
    )
    for day, state in enumerate(["success", "success", "failed"]):
        run_factory(dag_id, state=state, logical_date=T0 + timedelta(days=day))

    html = client.get(f"/dags?q={dag_id}").text

    row = html.split(f'<tr data-dag="{dag_id}"')[1].split("</tr>")[0]
    assert dag_id in row and "ana" in row and "0 2 * * *" in row and "Sums the day" in row
    assert 'href="/dags?tag=sales"' in row
    assert 'class="pill s-success" title="success">2<' in row
    assert 'class="pill s-failed" title="failed">1<' in row
    assert 'data-state="failed">failed</span>' in row  # the last run is the newest
    assert "2026-03-02 12:00:00" in row  # next run


def test_the_dag_list_filters_by_search_tag_and_paused(client: Client, dag_factory: Any) -> None:
    marker = unique("flt")
    a = dag_factory(f"{marker}_alpha", tags=["red"])
    b = dag_factory(f"{marker}_beta", tags=["blue"], paused=True)

    searched = client.get(f"/dags?q={marker}").text
    tagged = client.get(f"/dags?q={marker}&tag=blue").text
    active = client.get(f"/dags?q={marker}&paused=false").text

    assert a in searched and b in searched
    assert b in tagged and a not in tagged
    assert a in active and b not in active
    assert "No DAGs match these filters" in client.get("/dags?q=zzz-nothing-matches").text


def test_the_dag_list_shows_import_errors_with_file_and_line(
    client: Client, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s, s.begin():
        s.add(
            ImportError_(filename="/dags/broken_<b>.py", line=12, message=f"SyntaxError {XSS}", timestamp=T0)
        )
    try:
        html = client.get("/dags").text
    finally:
        with web_sessions() as s, s.begin():
            s.query(ImportError_).delete()

    assert 'id="import-errors"' in html
    assert "/dags/broken_&lt;b&gt;.py" in html and "line 12" in html
    assert XSS not in html and "SyntaxError &lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_user_text_is_escaped_on_every_page_that_shows_it(
    client: Client, dag_factory: Any, run_factory: Any, tmp_dag_file: Path
) -> None:
    dag_id = dag_factory(
        unique("x") + XSS_ID,
        tasks=(("t1", ()),),
        description=XSS,
        tags=[XSS],
        owner=XSS,
        params={"p": XSS},
        fileloc=str(tmp_dag_file),
        source=tmp_dag_file.read_text(),
    )
    run_id = run_factory(
        dag_id,
        tis={"t1": "failed"},
        conf={"c": XSS},
        logs={"t1": [(1, 1, f"log line {XSS}\n")]},
        results={"t1": {"r": XSS}},
        errors={"t1": f"ValueError: {XSS}"},
    )
    pages = [
        f"/dags?q={dag_id[:12]}",
        path_of("dags", dag_id, "grid"),
        path_of("dags", dag_id, "graph"),
        path_of("dags", dag_id, "runs"),
        path_of("dags", dag_id, "details"),
        path_of("dags", dag_id, "source"),
        path_of("dags", dag_id, "trigger"),
        path_of("dags", dag_id, "runs", run_id),
        path_of("dags", dag_id, "runs", run_id, "tasks", "t1"),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert "<script>alert" not in response.text, url
        assert "<img src=x" not in response.text, url
    ti_page = client.get(pages[-1]).text
    assert "log line &lt;script&gt;alert(1)&lt;/script&gt;" in ti_page
    assert "ValueError: &lt;script&gt;" in ti_page
    source = client.get(pages[5]).text
    assert "# &lt;script&gt;alert(&#39;source&#39;)&lt;/script&gt;" in source
    grid = client.get(pages[1]).text
    embedded = grid.split('<script type="application/json" id="grid-data">')[1].split("</script>")[0]
    assert json.loads(embedded)["dag_id"] == dag_id  # tojson escapes '<' as \u003c, still valid JSON


def test_the_grid_page_embeds_runs_and_task_states_for_its_script(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    first = run_factory(dag_id, tis={"extract": "success", "transform": "success", "load": "success"})
    second = run_factory(
        dag_id,
        state="running",
        logical_date=T0 + timedelta(hours=1),
        tis={"extract": "success", "transform": "running"},
    )

    html = client.get(f"/dags/{dag_id}/grid").text

    data = json.loads(html.split('id="grid-data">')[1].split("</script>")[0])
    assert data["tasks"] == ["extract", "transform", "load"]
    assert [r["run_id"] for r in data["runs"]] == [first, second]
    # The compact form: a letter per task (extract, transform, load) of the codes it lists; "." none yet.
    codes = data["state_codes"]
    assert (
        data["cells"][second] == "".join(chr(ord("a") + codes.index(s)) for s in ("success", "running")) + "."
    )
    assert 'src="/static/js/grid.js?v=' in html and "socket.io-4.8.4.min.js" in html


def test_the_graph_page_embeds_nodes_and_edges_and_the_layout_library(
    client: Client, dag_factory: Any
) -> None:
    dag_id = dag_factory(tasks=(("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("b", "c"))))

    html = client.get(f"/dags/{dag_id}/graph").text

    graph = json.loads(html.split('id="graph-data">')[1].split("</script>")[0])
    assert [n["id"] for n in graph["nodes"]] == ["a", "b", "c", "d"]
    assert sorted(graph["edges"]) == [["a", "b"], ["a", "c"], ["b", "d"], ["c", "d"]]
    assert "vendor/dagre-3.1.3.min.js" in html and "no runs yet" in html


def test_the_vendored_libraries_are_served_locally(client: Client) -> None:
    for name in ("socket.io-4.8.4.min.js", "dagre-3.1.3.min.js"):
        response = client.get(f"/static/vendor/{name}")
        assert response.status_code == 200 and len(response.data) > 10_000
        response.close()


def test_static_files_are_versioned_and_cached_for_good_and_an_edit_changes_the_version(
    client: Client, tmp_path: Path
) -> None:
    from flask import Flask

    html = client.get("/dags").text
    url = re.search(r'src="(/static/js/hareflow\.js\?v=[0-9a-f]{12})"', html)
    assert url is not None
    versioned = client.get(url.group(1))
    plain = client.get("/static/js/hareflow.js")
    stale = client.get("/static/js/hareflow.js?v=000000000000")

    assert versioned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "immutable" not in plain.headers.get("Cache-Control", "")
    assert "immutable" not in stale.headers.get("Cache-Control", "")
    for response in (versioned, plain, stale):
        response.close()
    from hareflow.web.static_files import static_version

    elsewhere = Flask("probe", static_folder=str(tmp_path))
    (tmp_path / "app.js").write_text("1;")
    before = static_version(elsewhere, "app.js")
    (tmp_path / "app.js").write_text("22;")  # an edit (a new release): a new version, fetched again
    assert before and static_version(elsewhere, "app.js") != before
    assert static_version(elsewhere, "missing.js") is None


def test_the_runs_page_lists_runs_newest_first_and_filters_by_state(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    old = run_factory(dag_id, state="failed")
    new = run_factory(dag_id, state="success", logical_date=T0 + timedelta(days=1))

    html = client.get(f"/dags/{dag_id}/runs").text
    failed = client.get(f"/dags/{dag_id}/runs?state=failed").text

    assert html.index(new) < html.index(old)
    assert old in failed and new not in failed
    assert '<option value="failed" selected>' in failed  # the filter shows what it filters by
    assert 'data-state="failed"' in failed  # and the live refresh asks for the same


def test_the_source_page_shows_the_stored_source_and_never_opens_a_path_a_dag_names(
    client: Client, dag_factory: Any, tmp_dag_file: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text("the-session-signing-key")
    stored = dag_factory(fileloc=str(tmp_dag_file), source=tmp_dag_file.read_text())
    pointing_at_secret = dag_factory(fileloc=str(secret))  # a DAG row naming a readable file

    shown = client.get(f"/dags/{stored}/source").text
    refused = client.get(f"/dags/{pointing_at_secret}/source").text

    assert "from hareflow import DAG" in shown and 'class="ln">2<' in shown
    assert "has not been stored yet" in refused and "the-session-signing-key" not in refused


def test_the_details_page_lists_tasks_and_params(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory(params={"parts": 3})

    html = client.get(f"/dags/{dag_id}/details").text

    assert "&#34;parts&#34;: 3" in html or '"parts": 3' in html
    for task in ("extract", "transform", "load"):
        assert f"<td>{task}</td>" in html


def test_the_run_page_shows_task_instances_conf_and_tasks_not_created_yet(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(
        dag_id, state="running", tis={"extract": "success", "transform": "running"}, conf={"k": 7}
    )

    html = client.get(path_of("dags", dag_id, "runs", run_id)).text

    assert 'data-task="extract"' in html and 'data-task="transform"' in html
    assert 'data-task="load" class="muted"' in html and "not created yet" in html
    assert "&#34;k&#34;: 7" in html or '"k": 7' in html
    assert 'id="run-state"' in html


def test_the_task_instance_page_shows_timings_host_result_error_and_the_log_of_each_try(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(
        dag_id,
        tis={"extract": "success"},
        logs={"extract": [(1, 1, "first try line\n"), (1, 2, "second line\n")]},
        results={"extract": {"rows": 3}},
    )
    url = path_of("dags", dag_id, "runs", run_id, "tasks", "extract")

    html = client.get(url).text
    other_try = client.get(url + "?try=2").text

    log = html.split('<pre id="log" class="log" >')[1].split("</pre>")[0]
    assert re.sub(r"<[^>]+>", "", log) == "first try line\nsecond line\n"  # one span per chunk
    assert log.count('<span class="chunk" data-at="2026-') == 2  # when each chunk was sent
    assert "worker-host-1" in html and "2026-03-01 12:00:00" in html and "2.0 s" in html
    assert "&#34;rows&#34;: 3" in html or '"rows": 3' in html
    assert 'data-offset="2"' in html and 'data-finished="true"' in html
    assert "first try line" not in other_try


def test_the_side_panel_follows_the_selected_try(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, tis={"extract": "success"})
    with web_sessions() as s, s.begin():
        ti = s.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)).one()
        ti.try_number, ti.max_tries = 3, 3
        s.add(
            TaskTry(
                ti_id=ti.id,
                try_number=1,
                state="up_for_retry",
                worker="w-old",
                hostname="old-host",
                pid=7,
                start_date=T0,
                end_date=T0 + timedelta(seconds=9),
                duration=9.0,
                error="ConnectionError: warehouse unavailable",
            )
        )
    url = path_of("dags", dag_id, "runs", run_id, "tasks", "extract")

    current = client.get(url).text
    first = client.get(url + "?try=1").text
    second = client.get(url + "?try=2").text  # ended before tries were kept

    assert "old-host" not in current and 'id="try-note"' not in current
    meta = first.split('id="ti-meta"')[1].split("</table>")[0]
    assert "old-host" in meta and "w-old" in meta and "9.0 s" in meta and "up_for_retry" in meta
    assert "ConnectionError: warehouse unavailable" in first
    assert "Try 1 as it ended" in first and "on try 3" in first
    assert 'data-current-try="3"' in first and 'data-try="1"' in first
    assert (
        "ended before its details were kept" in second
        and "worker-host-1" not in second.split('id="ti-meta"')[1]
    )


def test_the_task_instance_page_shows_why_a_task_was_skipped(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(
        dag_id, tis={"extract": "skipped"}, errors={"extract": "skipped by branch 'pick' (it followed 'a')"}
    )

    html = client.get(path_of("dags", dag_id, "runs", run_id, "tasks", "extract")).text

    assert "Why it was skipped" in html
    assert "skipped by branch &#39;pick&#39; (it followed &#39;a&#39;)" in html


def test_a_missing_dag_run_or_task_is_a_404_page(client: Client, dag_factory: Any, run_factory: Any) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, tis={"extract": "success"})

    assert client.get("/dags/no_such_dag/grid").status_code == 404
    assert client.get(path_of("dags", dag_id, "runs", "no-such-run")).status_code == 404
    missing_task = client.get(path_of("dags", dag_id, "runs", run_id, "tasks", "load"))
    assert missing_task.status_code == 404 and "has no task" in missing_task.text


# -- forms ----------------------------------------------------------------------------------------------


def test_the_trigger_form_shows_bad_json_inline_and_creates_nothing(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(params={"parts": 3})

    response = client.form(f"/dags/{dag_id}/trigger", {"conf": '{"parts": '})

    assert response.status_code == 400
    assert "conf is not valid JSON" in response.text and 'class="invalid"' in response.text
    assert "{&#34;parts&#34;: " in response.text  # what was typed is kept
    with web_sessions() as s:
        assert s.scalar(select(DagRun).where(DagRun.dag_id == dag_id)) is None


def test_the_trigger_form_names_a_conf_field_of_the_wrong_type(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory(params={"parts": 3, "name": "x"})

    response = client.form(f"/dags/{dag_id}/trigger", {"conf": '{"parts": "three"}'})

    assert response.status_code == 400
    assert "conf.parts must be a number" in response.text


def test_the_trigger_form_creates_a_run_with_the_conf_and_an_audit_row(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(params={"parts": 3})

    response = client.form(
        f"/dags/{dag_id}/trigger", {"conf": '{"parts": 5, "extra": true}', "run_id": "my-run"}
    )

    assert response.status_code == 302 and response.headers["Location"] == f"/dags/{dag_id}/grid"
    with web_sessions() as s:
        run = s.scalar(select(DagRun).where(DagRun.dag_id == dag_id))
        audit = s.scalar(select(AuditLog).where(AuditLog.dag_id == dag_id, AuditLog.action == "trigger"))
    assert run is not None and run.run_id == "my-run" and run.conf == {"parts": 5, "extra": True}
    assert run.triggered_by == "op" and run.state == "queued"
    assert audit is not None and audit.username == "op"
    assert "triggered run my-run" in client.get(f"/dags/{dag_id}/grid").text


def test_triggering_a_paused_dag_says_so_in_the_form(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory(paused=True)

    response = client.form(f"/dags/{dag_id}/trigger", {"conf": "{}"})

    assert response.status_code == 409 and "is paused" in response.text


def test_the_pause_toggle_pauses_and_unpauses_and_goes_back(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()

    paused = client.form(f"/dags/{dag_id}/pause", {"paused": "true", "next": "/dags?q=x"})
    with web_sessions() as s:
        assert s.get(Dag, dag_id).is_paused is True  # type: ignore[union-attr]
    unpaused = client.form(f"/dags/{dag_id}/pause", {"paused": "false", "next": "https://evil.example/"})

    assert paused.headers["Location"] == "/dags?q=x"
    assert unpaused.headers["Location"] == f"/dags/{dag_id}/grid"
    with web_sessions() as s:
        assert s.get(Dag, dag_id).is_paused is False  # type: ignore[union-attr]
        actions = s.scalars(
            select(AuditLog.action).where(AuditLog.dag_id == dag_id).order_by(AuditLog.id)
        ).all()
    assert actions == ["pause", "unpause"]


def _ti_states(sessions: sessionmaker[Session], dag_id: str) -> dict[str, str]:
    with sessions() as s:
        rows = s.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(TaskInstance.dag_id == dag_id)
        )
        return dict(rows.tuples().all())


def test_clearing_a_task_with_downstream_resets_them_and_requeues_the_run(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(
        dag_id, state="failed", tis={"extract": "success", "transform": "failed", "load": "upstream_failed"}
    )

    response = client.form(
        path_of("dags", dag_id, "runs", run_id, "clear"), {"task_id": "transform", "downstream": "true"}
    )

    assert response.status_code == 302
    assert _ti_states(web_sessions, dag_id) == {"extract": "success", "transform": "none", "load": "none"}
    with web_sessions() as s:
        assert s.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id)) == "queued"
    flashed = client.get(response.headers["Location"]).text
    assert "cleared transform, load" in flashed


def test_clearing_with_upstream_resets_the_upstream_tasks_too(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, tis={"extract": "success", "transform": "success", "load": "success"})

    client.form(
        path_of("dags", dag_id, "runs", run_id, "clear"), {"task_id": "transform", "upstream": "true"}
    )

    assert _ti_states(web_sessions, dag_id) == {"extract": "none", "transform": "none", "load": "success"}


def test_marking_a_task_instance_success_or_failed(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, state="failed", tis={"extract": "failed"})
    url = path_of("dags", dag_id, "runs", run_id, "tasks", "extract", "mark")

    ok = client.form(url, {"state": "success"})
    assert _ti_states(web_sessions, dag_id) == {"extract": "success"}
    bad = client.form(url, {"state": "running"})

    assert ok.status_code == bad.status_code == 302
    assert "state must be" in client.get(bad.headers["Location"]).text
    assert _ti_states(web_sessions, dag_id) == {"extract": "success"}


def test_cancelling_a_backfill_drops_its_runs_not_started(
    client: Client, dag_factory: Any, run_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory()
    with web_sessions() as s, s.begin():
        backfill = Backfill(
            dag_id=dag_id, from_date=T0, to_date=T0 + timedelta(days=2), state="running", created_at=T0
        )
        s.add(backfill)
        s.flush()
        backfill_id = backfill.id
    run_factory(dag_id, state="success", backfill_id=backfill_id)
    run_factory(dag_id, state="queued", backfill_id=backfill_id, logical_date=T0 + timedelta(days=1))

    listed = client.get(f"/backfills?dag_id={dag_id}").text
    assert "1 ok, 0 failed, 0 running, 1 queued of 2" in listed and "Cancel</button>" in listed
    response = client.form(f"/backfills/{backfill_id}/cancel")
    assert "1 run(s) not started were dropped" in client.get(response.headers["Location"]).text
    again = client.form(f"/backfills/{backfill_id}/cancel")

    assert "already cancelled" in client.get(again.headers["Location"]).text
    with web_sessions() as s:
        assert s.get(Backfill, backfill_id).state == "cancelled"  # type: ignore[union-attr]


def _worker(
    name: str, *, state: str = "active", running: int = 0, age: timedelta = timedelta(seconds=3)
) -> Worker:
    now = datetime.now(UTC)
    return Worker(
        name=name,
        hostname="gpu-host-7",
        pid=99,
        queues=["default", "heavy"],
        concurrency=8,
        running=running,
        state=state,
        first_seen=now - age - timedelta(hours=1),
        last_heartbeat=now - age,
    )


def test_the_workers_page_shows_host_queues_load_and_heartbeat_age(
    client: Client, web_sessions: sessionmaker[Session], dag_factory: Any, run_factory: Any
) -> None:
    name = unique("worker")
    dag_id = dag_factory(tasks=[(t, ()) for t in "abcde"])
    run_id = run_factory(
        dag_id,
        state="running",
        tis={"a": "running", "b": "running", "c": "running", "d": "running", "e": "success"},
    )
    with web_sessions() as s, s.begin():
        # The heartbeat's count (1) is stale: four of the worker's task instances are running.
        s.add(_worker(name, running=1))
        for ti in s.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id)):
            ti.worker = name

    html = client.get("/workers").text

    row = html.split(f"<td>{name}</td>")[1].split("</tr>")[0]
    assert "gpu-host-7" in row and ">heavy<" in row and '<td class="running">4</td><td>8</td>' in row
    assert re.search(r"[34]\.\d s ago", row)
    assert "load-5" in row


def test_workers_gone_for_over_a_day_are_hidden_unless_asked_and_a_lost_one_runs_nothing(
    client: Client, web_sessions: sessionmaker[Session]
) -> None:
    old, lost = unique("old"), unique("lost")
    with web_sessions() as s, s.begin():
        s.add(_worker(old, state="stopped", age=timedelta(days=2)))
        s.add(_worker(lost, state="lost", running=3, age=timedelta(minutes=5)))

    default = client.get("/workers").text
    everything = client.get("/workers?all=true").text
    api = client.api("GET", "/workers").json
    api_all = client.api("GET", "/workers?all=true").json

    assert old not in default and "stopped or lost for over a day not shown" in default
    assert old in everything and lost in default
    lost_row = default.split(f"<td>{lost}</td>")[1].split("</tr>")[0]
    assert '<td class="running">0</td>' in lost_row  # its last heartbeat said 3
    assert old not in {w["name"] for w in api["workers"]} and api["hidden"] >= 1
    assert old in {w["name"] for w in api_all["workers"]} and api_all["hidden"] == 0


def test_the_queues_page_shows_depth_and_consumers_from_the_executor(client: Client) -> None:
    html = client.get("/queues").text

    assert "executor local" in html and "<td>default</td>" in html and "(dead letters)" in html


def test_the_audit_page_lists_who_did_what(client: Client, dag_factory: Any) -> None:
    dag_id = dag_factory()
    client.form(f"/dags/{dag_id}/pause", {"paused": "true"})

    html = client.get(f"/audit?dag_id={dag_id}").text

    assert "<td>op</td><td>pause</td>" in html.replace("\n", "")


def test_an_admin_creates_changes_issues_a_token_for_and_deletes_a_user(
    as_role: Any, web_sessions: sessionmaker[Session]
) -> None:
    admin = as_role("admin")
    name = unique("newbie")

    created = admin.form("/users", {"username": name, "password": "long enough pw", "role": "viewer"})
    assert created.status_code == 302 and f"user {name} created" in admin.get("/users").text
    short = admin.form("/users", {"username": unique("x"), "password": "short", "role": "viewer"})
    assert "at least 8 characters" in admin.get(short.headers["Location"]).text
    admin.form(f"/users/{name}/role", {"role": "op"})
    token_page = admin.form(f"/users/{name}/token")
    admin.form(f"/users/{name}/delete")

    assert 'id="new-token"' in token_page.text and "hft_" in token_page.text
    with web_sessions() as s:
        assert s.scalar(select(User).where(User.username == name)) is None
        actions = s.scalars(select(AuditLog.action).where(AuditLog.action.like("user_%"))).all()
    assert {"user_create", "user_set_role", "user_delete"} <= set(actions)


def test_an_admin_cannot_delete_or_demote_themself(as_role: Any) -> None:
    admin = as_role("admin")

    deleted = admin.form("/users/admin/delete")
    assert "cannot delete yourself" in admin.get(deleted.headers["Location"]).text
    demoted = admin.form("/users/admin/role", {"role": "viewer"})

    assert "cannot take the admin role from yourself" in admin.get(demoted.headers["Location"]).text
    assert admin.api("GET", "/me").json["role"] == "admin"


def test_every_page_says_when_no_scheduler_is_running(
    viewer: Client, web_sessions: sessionmaker[Session]
) -> None:
    def banner() -> str | None:
        page = viewer.http.get("/dags").text
        start = page.index('id="scheduler-alert"')
        tag_end = page.index(">", start)
        if " hidden" in page[start:tag_end]:
            return None
        return page[tag_end + 1 : page.index("</div>", tag_end)]

    now = datetime.now(UTC)
    with web_sessions() as s, s.begin():
        s.query(SchedulerHeartbeat).delete()
    try:
        never = banner()
        with web_sessions() as s, s.begin():
            s.add(SchedulerHeartbeat(id="h:1", hostname="h", pid=1, started_at=now, last_heartbeat=now))
        running = banner()
        with web_sessions() as s, s.begin():
            s.get(SchedulerHeartbeat, "h:1").last_heartbeat = now - timedelta(seconds=125)
        stale = banner()
    finally:
        with web_sessions() as s, s.begin():
            s.query(SchedulerHeartbeat).delete()

    assert never is not None and "No scheduler has run against this metastore yet" in never
    assert running is None
    assert stale is not None and "last heard from 2m 0" in stale and "hareflow health scheduler" in stale


def test_a_dag_that_claims_another_file_as_its_fileloc_shows_its_own_source_and_runs_its_own_file(
    client: Client, web_settings: Any, web_sessions: Any, tmp_path: Path
) -> None:
    from hareflow.common.db import Dag
    from hareflow.scheduler.dag_processor import DagProcessor

    secret = tmp_path / "secret_key"
    secret.write_text("the-session-signing-key")
    folder = tmp_path / "dags"
    folder.mkdir()
    dag_id = unique("claims")
    dag_file = folder / "claims.py"
    dag_file.write_text(
        "from hareflow import DAG, task\n"
        f"with DAG({dag_id!r}) as dag:\n"
        "    @task\n    def t():\n        return 1\n\n    t()\n"
        f"dag.fileloc = {str(secret)!r}\n"
    )
    DagProcessor(settings=web_settings, session_factory=web_sessions, folder=folder).run_once()

    with web_sessions() as s:
        stored = s.get(Dag, dag_id)
        assert stored is not None and stored.fileloc == str(dag_file.resolve())
        assert stored.serialized["fileloc"] == str(dag_file.resolve())
    page = client.get(f"/dags/{dag_id}/source").text
    assert "dag.fileloc = " in page and "the-session-signing-key" not in page


def test_an_unknown_address_is_a_404_page_and_under_the_api_a_404_json(client: Client, anon: Any) -> None:
    for http in (client, anon):
        page = http.get("/no/such/page")
        assert page.status_code == 404 and "text/html" in page.content_type
        assert "Not Found" in page.text
        api = http.get("/api/v1/no/such/thing")
        assert api.status_code == 404 and api.json == {"error": "Not Found", "status": 404}


# -- times and zones ---------------------------------------------------------------------------------


def test_every_time_on_a_page_is_labelled_with_its_zone(
    client: Client, dag_factory: Any, run_factory: Any
) -> None:
    dag_id = dag_factory()
    run_id = run_factory(dag_id, tis={"extract": "success"})

    html = client.get(path_of("dags", dag_id, "runs", run_id)).text

    times = re.findall(r'<time datetime="([^"]+)" data-ts>([^<]+)</time>', html)
    assert times and all(text.endswith(" UTC") for _, text in times)
    assert ("2026-03-01T12:00:00+00:00", "2026-03-01 12:00:00 UTC") in times  # the logical date


def test_the_dag_list_shows_the_next_run_in_the_dags_zone_with_utc_on_hover(
    client: Client, dag_factory: Any, web_sessions: sessionmaker[Session]
) -> None:
    dag_id = dag_factory(schedule="@daily")
    with web_sessions() as s, s.begin():
        dag = s.get(Dag, dag_id)
        assert dag is not None
        dag.timezone = "Europe/Paris"

    html = client.get(f"/dags?q={dag_id}").text
    header = client.get(f"/dags/{dag_id}/grid").text

    next_run = '<time datetime="2026-03-02T12:00:00+00:00" data-pinned title="2026-03-02 12:00:00 UTC"'
    assert next_run + ' data-tz="Europe/Paris">2026-03-02 13:00:00 CET</time>' in html
    assert "2026-03-02 13:00:00 CET</time>" in header and 'data-tz="Europe/Paris"' in header
    assert 'id="tz-select"' in html  # the zone picker in the header
