"""Notifiers end to end, against real servers: an SMTP server (aiosmtpd) and an HTTP server, both on
127.0.0.1, receive what DAGs run here (``hareflow.inprocess``) and through the scheduler and a
worker send. Connections come from ``HAREFLOW_CONN_<ID>``, the UI's address from
``HAREFLOW_BASE_URL``, as a deployment would set them."""

from __future__ import annotations

import io
import json
import socket
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from hareflow.common.dag.callback_child import run_callback
from hareflow.common.dag.loader import load_dag_file
from hareflow.common.dag.serialize import serialize_dag
from hareflow.common.db import create_engine_for
from hareflow.common.db.migrate import migrate
from hareflow.common.secrets.client import set_resolver
from hareflow.common.secrets.crypto import generate_key

from hareflow import DAG, EmailNotifier, SlackWebhookNotifier, WebhookNotifier, task
from hareflow.inprocess import DagTestResult, run_dag
from tests.integration.conftest import System, wait_until

BASE_URL = "http://hareflow.example:8080"
PASSWORD = "s3cret-pw-42"


@pytest.fixture(autouse=True)
def clean_lookups(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No settings or connections from the machine, and no resolver cached by another test."""
    monkeypatch.setenv("HAREFLOW_HOME", str(tmp_path / "home"))
    for name in ("HAREFLOW_CONFIG", "HAREFLOW_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    set_resolver(None)
    yield
    set_resolver(None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- an SMTP server ---------------------------------------------------------------------------------


@dataclass
class Mailbox:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return "250 OK"


def _start_smtp(**options: Any) -> Iterator[Mailbox]:
    box = Mailbox(free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    yield from _start_smtp()


@pytest.fixture
def smtp_with_auth() -> Iterator[Mailbox]:
    """Accepts only alerts / PASSWORD, over the plain connection (AUTH without TLS)."""
    box: Mailbox | None = None

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert box is not None
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            box.logins.append((login, password))
            if (login, password) == ("alerts", PASSWORD):
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    for box in _start_smtp(auth_require_tls=False, auth_required=True, authenticator=authenticator):
        yield box


def smtp_uri(box: Mailbox, auth: str = "") -> str:
    return f"smtp://{auth}127.0.0.1:{box.port}?from=alerts%40example.com"


# -- an HTTP server ---------------------------------------------------------------------------------


@dataclass
class Hook:
    port: int
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def hook() -> Iterator[Hook]:
    """An HTTP server that records each request's method, path, headers and JSON body."""
    state = Hook(0)

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "json": json.loads(body) if body else None,
                }
            )
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_POST = do_PUT = _record  # noqa: N815 - http.server's names

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- running a DAG here -----------------------------------------------------------------------------


def one_task_dag(dag_id: str, *, fail: bool = True, **task_settings: Any) -> DAG:
    """A DAG whose one task ``load`` raises ``ValueError("disk full")`` (or returns 1)."""
    with DAG(dag_id, params={"team": "data"}) as dag:

        @task(**task_settings)
        def load() -> int:
            if fail:
                raise ValueError("disk full")
            return 1

        load()
    return dag


def run_here(dag: DAG) -> tuple[DagTestResult, str]:
    out = io.StringIO()
    result = run_dag(dag, out=out, echo=lambda line: out.write(line + "\n"))
    return result, out.getvalue()


def body_of(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None and part.get_content_type() == f"text/{subtype}", msg.as_string()
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


# -- email ------------------------------------------------------------------------------------------


def test_a_failing_task_emails_its_templated_subject_with_a_link_to_its_page(
    smtp: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_SMTP_DEFAULT", smtp_uri(smtp))
    monkeypatch.setenv("HAREFLOW_BASE_URL", BASE_URL + "/")
    notifier = EmailNotifier(
        to="ops@example.com, oncall@example.com", subject="{{ dag_id }} failed: {{ exception }}"
    )
    dag = one_task_dag("mail", on_failure_callback=notifier)

    result, log = run_here(dag)

    assert result.states == {"load": "failed"}
    assert len(smtp.messages) == 1, log
    msg = smtp.messages[0]
    assert msg["Subject"] == "mail failed: disk full"
    assert msg["From"] == "alerts@example.com"
    assert smtp.envelopes == [("alerts@example.com", ["ops@example.com", "oncall@example.com"])]
    run_id = quote(_run_id_of(log), safe="")
    text = body_of(msg, "plain")
    assert f"Details: {BASE_URL}/dags/mail/runs/{run_id}/tasks/load\n" in text
    assert "Error: ValueError: disk full" in text
    assert f'href="{BASE_URL}/dags/mail/runs/{run_id}/tasks/load"' in body_of(msg, "html")


def _run_id_of(log: str) -> str:
    """The run id ``dags test`` announces in its last line (``=== run <id> of <dag>: <state>``)."""
    line = next(x for x in log.splitlines() if x.startswith("=== run "))
    return line.split()[2]


def test_the_default_email_has_a_text_and_an_html_part_and_no_link_without_base_url(
    smtp: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_SMTP_DEFAULT", smtp_uri(smtp))
    dag = one_task_dag("plain", on_failure_callback=EmailNotifier(to=["ops@example.com"]))

    run_here(dag)

    (msg,) = smtp.messages
    assert msg["Subject"] == "[hareflow] plain.load failed"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = body_of(msg, "plain"), body_of(msg, "html")
    assert "Error: ValueError: disk full" in text and "set base_url" in text
    assert "ValueError: disk full" in html and "<a " not in html and "http" not in text


def test_given_text_and_html_bodies_are_rendered_and_sent_as_two_parts(
    smtp: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_MAIL", smtp_uri(smtp))
    notifier = EmailNotifier(
        to="{{ params.team }}@example.com",
        subject="{{ ti.task_id }} try {{ ti.try_number }}: {{ state }}",
        text_content="team {{ params.team }}: {{ error }}",
        html_content="<p>team <b>{{ params.team }}</b></p>",
        conn_id="mail",
        cc="boss@example.com",
        from_email="robot@example.com",
    )
    dag = one_task_dag("parts", fail=False, on_success_callback=notifier)

    run_here(dag)

    (msg,) = smtp.messages
    assert (msg["Subject"], msg["To"], msg["Cc"], msg["From"]) == (
        "load try 1: success",
        "data@example.com",
        "boss@example.com",
        "robot@example.com",
    )
    assert body_of(msg, "plain").strip() == "team data:"
    assert body_of(msg, "html").strip() == "<p>team <b>data</b></p>"
    assert smtp.envelopes[0][1] == ["data@example.com", "boss@example.com"]


def test_flags_written_in_a_uri_query_are_read_as_yes_or_no(
    smtp: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_SMTP_DEFAULT", smtp_uri(smtp) + "&starttls=false&ssl=0")
    monkeypatch.setenv("HAREFLOW_CONN_TLS", smtp_uri(smtp) + "&starttls=true")
    callbacks = [EmailNotifier(to="ops@example.com"), EmailNotifier(to="ops@example.com", conn_id="tls")]
    dag = one_task_dag("flags", on_failure_callback=callbacks)

    _, log = run_here(dag)

    assert len(smtp.messages) == 1  # plain SMTP as asked; the server offers no STARTTLS to the second
    assert (
        "on_failure_callback[1] raised: NotificationError: EmailNotifier: cannot send to ops@example.com "
        in log
    )
    assert "STARTTLS extension not supported by server" in log


def test_connections_test_opens_smtp_the_way_the_notifier_does(smtp_with_auth: Mailbox) -> None:
    from hareflow.common.providers import test_connection
    from hareflow.common.secrets import Connection

    uri = smtp_uri(smtp_with_auth, f"alerts:{PASSWORD}@") + "&starttls=false"
    plain = test_connection(Connection.from_uri("mail", uri))
    wrong = test_connection(Connection.from_uri("mail", smtp_uri(smtp_with_auth, "alerts:nope@")))

    assert plain.ok, plain.message  # "false" in a query is no, not a truthy string
    assert smtp_with_auth.logins[0] == ("alerts", PASSWORD)
    assert not wrong.ok and "SMTPAuthenticationError" in wrong.message


def test_the_connection_login_and_password_authenticate_over_smtp_auth(
    smtp_with_auth: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_SMTP_DEFAULT", smtp_uri(smtp_with_auth, f"alerts:{PASSWORD}@"))
    dag = one_task_dag("auth", on_failure_callback=EmailNotifier(to="ops@example.com"))

    result, log = run_here(dag)

    assert smtp_with_auth.logins == [("alerts", PASSWORD)]
    assert [m["Subject"] for m in smtp_with_auth.messages] == ["[hareflow] auth.load failed"]
    assert "EmailNotifier: sent" in log and PASSWORD not in log


def test_a_refused_login_is_logged_with_the_server_and_without_the_password(
    smtp_with_auth: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_SMTP_DEFAULT", smtp_uri(smtp_with_auth, "alerts:wrong-password-9@"))
    dag = one_task_dag("denied", on_failure_callback=EmailNotifier(to="ops@example.com"))

    result, log = run_here(dag)

    assert result.states == {"load": "failed"}
    assert smtp_with_auth.messages == []
    expected = (
        f"SMTP 127.0.0.1:{smtp_with_auth.port} (connection 'smtp_default') refused the login of 'alerts': 535"
    )
    assert expected in log
    assert "wrong-password-9" not in log


# -- webhooks ---------------------------------------------------------------------------------------


def test_a_webhook_gets_a_json_summary_of_the_failed_try_by_default(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_HOOK", f"{hook.url}/api")
    monkeypatch.setenv("HAREFLOW_BASE_URL", BASE_URL)
    dag = one_task_dag("hooked", on_failure_callback=WebhookNotifier("hook", path="alerts"))

    result, log = run_here(dag)

    (request,) = hook.requests
    run_id = _run_id_of(log)
    assert (request["method"], request["path"]) == ("POST", "/api/alerts")
    assert request["json"] == {
        "dag_id": "hooked",
        "run_id": run_id,
        "task_id": "load",
        "map_index": -1,
        "try_number": 1,
        "state": "failed",
        "logical_date": request["json"]["logical_date"],
        "error": "ValueError: disk full",
        "reason": None,
        "url": f"{BASE_URL}/dags/hooked/runs/{quote(run_id, safe='')}/tasks/load",
    }
    assert request["json"]["logical_date"].startswith(run_id.removeprefix("test__")[:10])
    assert f"WebhookNotifier: POST {hook.url}/api/alerts: HTTP 200" in log


def test_a_webhook_body_and_headers_are_templates(hook: Hook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "HAREFLOW_CONN_HOOK",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": hook.port,
                "login": "bot",
                "password": PASSWORD,
            }
        ),
    )
    notifier = WebhookNotifier(
        "hook",
        path="/t/{{ params.team }}",
        json={"summary": "{{ dag_id }}.{{ task_id }} {{ state }}", "count": 3, "tags": ["{{ params.team }}"]},
        headers={"X-Team": "{{ params.team }}"},
        method="put",
    )
    dag = one_task_dag("templ", fail=False, on_success_callback=notifier)

    run_here(dag)

    (request,) = hook.requests
    assert (request["method"], request["path"]) == ("PUT", "/t/data")
    assert request["json"] == {"summary": "templ.load success", "count": 3, "tags": ["data"]}
    assert request["headers"]["x-team"] == "data"
    assert request["headers"]["authorization"].startswith("Basic ")


def test_slack_gets_its_text_at_the_webhook_path_of_the_uri_or_of_the_extra(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_SLACK_DEFAULT", f"{hook.url}/services/T1/B2/secretXYZ")
    monkeypatch.setenv(
        "HAREFLOW_CONN_SLACK_OTHER",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": hook.port,
                "extra": {"webhook_path": "/services/T9"},
            }
        ),
    )
    callbacks = [SlackWebhookNotifier(), SlackWebhookNotifier("slack_other", text="{{ dag_id }} is down")]
    dag = one_task_dag("slacked", on_failure_callback=callbacks)

    result, log = run_here(dag)

    assert [(r["path"], r["json"]) for r in hook.requests] == [
        ("/services/T1/B2/secretXYZ", {"text": "[hareflow] slacked.load failed: ValueError: disk full"}),
        ("/services/T9", {"text": "slacked is down"}),
    ]
    assert "secretXYZ" not in log  # a Slack webhook's path is its secret


# -- failures -----------------------------------------------------------------------------------------


def test_a_notifier_whose_server_is_down_leaves_the_task_state_and_logs_a_clear_message(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = free_port()
    monkeypatch.setenv(
        "HAREFLOW_CONN_SMTP_DEFAULT", f"smtp://alerts:{PASSWORD}@127.0.0.1:{down}?from=a%40example.com"
    )
    monkeypatch.setenv("HAREFLOW_CONN_DOWN_HOOK", f"http://127.0.0.1:{down}")
    monkeypatch.setenv("HAREFLOW_CONN_HOOK", hook.url)
    callbacks = [EmailNotifier(to="ops@example.com"), WebhookNotifier("down_hook"), WebhookNotifier("hook")]
    dag = one_task_dag("down", fail=False, on_success_callback=callbacks)

    result, log = run_here(dag)

    assert result.states == {"load": "success"} and result.tries["load"].result == 1
    assert (
        "on_success_callback[0] raised: NotificationError: EmailNotifier: cannot send to ops@example.com "
        f"through SMTP 127.0.0.1:{down} (connection 'smtp_default'): ConnectionRefusedError:"
    ) in log
    assert (
        f"on_success_callback[1] raised: NotificationError: WebhookNotifier: POST http://127.0.0.1:{down}"
        in log
    )
    assert "ConnectError" in log and "Traceback" not in log and PASSWORD not in log
    assert len(hook.requests) == 1  # the callbacks after a failed one still run


def test_a_webhook_answering_an_error_status_is_logged_with_it(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_HOOK", hook.url)
    hook.status = 503
    dag = one_task_dag("status", on_failure_callback=WebhookNotifier("hook", path="x"))

    result, log = run_here(dag)

    assert result.states == {"load": "failed"}
    assert f"WebhookNotifier: POST {hook.url}/x (connection 'hook') answered HTTP 503: ok" in log


def test_a_template_with_an_undefined_name_is_a_clear_error_in_the_log(
    smtp: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_SMTP_DEFAULT", smtp_uri(smtp))
    dag = one_task_dag(
        "undefined", on_failure_callback=EmailNotifier(to="ops@example.com", subject="{{ nope }} x")
    )

    result, log = run_here(dag)

    assert result.states == {"load": "failed"}
    assert smtp.messages == []
    assert (
        "on_failure_callback raised: NotificationError: EmailNotifier, field 'subject': "
        "cannot render template '{{ nope }} x': 'nope' is undefined"
    ) in log


def test_a_missing_connection_or_one_of_another_type_is_a_clear_error_in_the_log(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    engine = create_engine_for(sqlite_url)
    migrate(engine)  # the metastore, asked after the environment
    engine.dispose()
    monkeypatch.setenv("HAREFLOW_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("HAREFLOW_FERNET_KEY", generate_key())
    monkeypatch.setenv("HAREFLOW_CONN_WEB", "http://127.0.0.1:1")
    callbacks = [EmailNotifier(to="ops@example.com", conn_id="web"), WebhookNotifier("nowhere")]
    dag = one_task_dag("noconn", on_failure_callback=callbacks)

    _, log = run_here(dag)

    assert "EmailNotifier: connection 'web' has type 'http'; it needs smtp" in log
    assert "WebhookNotifier: connection 'nowhere' is not defined (looked in: environment" in log


# -- parse time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            'on_failure_callback=EmailNotifier(to="not-an-address")',
            "on_failure_callback of task 'load': EmailNotifier: to: 'not-an-address' is not an email address",
        ),
        (
            'on_retry_callback=[EmailNotifier(to="a@example.com"), WebhookNotifier(conn_id=None)]',
            "on_retry_callback of task 'load': WebhookNotifier: conn_id None is not a connection id",
        ),
        (
            'on_success_callback=SlackWebhookNotifier(text="{{ oops")',
            "on_success_callback of task 'load': SlackWebhookNotifier: text is not a valid template",
        ),
        (
            'on_failure_callback=[print, "not callable"]',
            "on_failure_callback of task 'load' must be callable, a list of callables or None",
        ),
    ],
)
def test_bad_notifier_arguments_are_refused_when_the_dag_file_loads_naming_the_task(
    tmp_path: Path, setting: str, message: str
) -> None:
    path = tmp_path / "bad.py"
    path.write_text(
        "from hareflow import DAG, BashTask, EmailNotifier, SlackWebhookNotifier, WebhookNotifier, task\n"
        'with DAG("bad"):\n'
        '    BashTask("first", "true")\n'
        f'    BashTask("load", "true", {setting})\n'
    )

    result = load_dag_file(path)

    assert result.dags == [] and len(result.errors) == 1, result.errors
    assert message in result.errors[0].message
    assert result.errors[0].line == 4


def test_a_task_decorator_with_a_bad_notifier_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(
        textwrap.dedent(
            """\
            from hareflow import DAG, WebhookNotifier, task
            with DAG("bad"):
                @task(on_failure_callback=WebhookNotifier("hook", method="GET"))
                def load():
                    pass
                load()
            """
        )
    )

    (error,) = load_dag_file(path).errors

    assert "on_failure_callback of @task(): WebhookNotifier: method 'GET' is not one of POST, PUT, PATCH" in (
        error.message
    )
    assert error.line == 3


def test_a_dag_level_notifier_with_a_bad_address_is_refused_naming_the_dag(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(
        'from hareflow import DAG, EmailNotifier\nDAG("bad", on_failure_callback=EmailNotifier(to=[]))\n'
    )

    (error,) = load_dag_file(path).errors

    assert "on_failure_callback of DAG 'bad': EmailNotifier: to names no address" in error.message


def test_a_dag_callback_list_of_notifiers_runs_in_the_callback_child_with_the_run_s_summary(
    hook: Hook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HAREFLOW_CONN_HOOK", hook.url)
    monkeypatch.setenv("HAREFLOW_CONN_SLACK", f"{hook.url}/services/T1")
    monkeypatch.setenv("HAREFLOW_BASE_URL", BASE_URL)
    path = tmp_path / "dag_level.py"
    path.write_text(
        "from hareflow import DAG, SlackWebhookNotifier, WebhookNotifier\n"
        'DAG("lvl", on_failure_callback=[WebhookNotifier("hook"), SlackWebhookNotifier("slack")],\n'
        "    on_success_callback=[])\n"
    )
    (dag,) = load_dag_file(path).dags
    assert serialize_dag(dag)["callbacks"] == ["failure"]  # an empty list is no callback
    request = {"dag_id": "lvl", "kind": "failure", "reason": "timed_out", "run_id": "manual__1", "conf": {}}

    assert run_callback(str(path), request) == 0

    summary, slack = (r["json"] for r in hook.requests)
    assert summary == {
        "dag_id": "lvl",
        "run_id": "manual__1",
        "task_id": None,
        "map_index": None,
        "try_number": None,
        "state": "failed",
        "logical_date": None,
        "error": None,
        "reason": "timed_out",
        "url": f"{BASE_URL}/dags/lvl/runs/manual__1",
    }
    link = f"<{BASE_URL}/dags/lvl/runs/manual__1|View in hareflow>"
    assert slack == {"text": f"[hareflow] DAG lvl run manual__1 failed (timed_out) {link}"}


# -- through the scheduler and a worker ---------------------------------------------------------------


@pytest.mark.parametrize("system", ["local", "rabbitmq"], indirect=True)
def test_through_the_scheduler_and_a_worker_the_task_and_the_dag_notify_once_per_failed_run(
    system: System, write_dag: Any, smtp: Mailbox, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DAG callback child, started by the scheduler, reads this process's environment. The
    # worker's task processes descend from multiprocessing's fork server, which keeps the
    # environment of the moment the first worker of this pytest process started it (maybe in
    # another test), so the DAG file itself sets the webhook's connection for them.
    monkeypatch.setenv("HAREFLOW_CONN_SMTP_DEFAULT", smtp_uri(smtp))
    monkeypatch.setenv("HAREFLOW_BASE_URL", BASE_URL)
    monkeypatch.setenv("HAREFLOW_CONN_HOOK", hook.url)  # restored after the test, whoever set it
    write_dag(
        "alerting.py",
        f"""
        import os
        from hareflow import DAG, EmailNotifier, TaskFailed, WebhookNotifier, task

        os.environ["HAREFLOW_CONN_HOOK"] = {hook.url!r}

        with DAG(
            "alerting",
            on_failure_callback=EmailNotifier(
                to="team@example.com",
                subject="run {{{{ run_id }}}} of {{{{ dag_id }}}}: {{{{ state }}}} ({{{{ reason }}}})",
            ),
        ):
            hook = WebhookNotifier("hook", json={{"task": "{{{{ task_id }}}}", "run": "{{{{ run_id }}}}"}})

            @task(on_failure_callback=hook)
            def load():
                raise TaskFailed("source is empty")

            load()
        """,
    )
    system.start()

    first, first_state = system.run_dag("alerting")
    wait_until(lambda: len(smtp.messages) == 1, message="the first run's DAG email")
    second, second_state = system.run_dag("alerting")
    wait_until(lambda: len(smtp.messages) == 2, message="the second run's DAG email")

    assert (first_state, second_state) == ("failed", "failed")
    assert [m["Subject"] for m in smtp.messages] == [
        f"run {first} of alerting: failed (task_failure)",
        f"run {second} of alerting: failed (task_failure)",
    ]
    text = body_of(smtp.messages[1], "plain")
    assert f"Details: {BASE_URL}/dags/alerting/runs/{quote(second, safe='')}\n" in text
    assert "Reason: task_failure" in text
    wait_until(lambda: len(hook.requests) == 2, message="the two task webhooks")
    assert [r["json"] for r in hook.requests] == [
        {"task": "load", "run": first},
        {"task": "load", "run": second},
    ]
    assert system.tis("alerting", second)["load"].state == "failed"
    assert "WebhookNotifier: POST" in system.log_text("alerting", second, "load")
