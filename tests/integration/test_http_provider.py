"""The HTTP provider against a real HTTP server the test starts on 127.0.0.1 (no mocks).

Tasks run through ``hareflow.inprocess`` (the ``dags test`` path), so templates, results and their
size limit are the worker's own. The server counts requests, so retries are seen from its side.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hareflow.common.providers import test_connection as probe_connection
from hareflow.common.providers.errors import HttpRequestFailed
from hareflow.common.providers.http import HttpHook, backoff_delays
from hareflow.common.secrets import Connection

from hareflow import DAG, DagDefinitionError, HttpTask
from tests.integration.provider_support import Connections, run_here
from tests.integration.provider_support import connections as connections  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


class Service(ThreadingHTTPServer):
    """A small scripted service: ``/echo`` tells what it received, ``/flaky`` fails ``fail_first``
    times with 503, ``/down`` always does, ``/slow`` waits, ``/text`` is plain text, ``/status/N``
    answers N. Every request is counted (and timed) by path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: dict[str, list[float]] = defaultdict(list)
        self.fail_first = 2
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out closed its end: nothing to report

    def count(self, path: str) -> int:
        with self.lock:
            return len(self.hits[path])


class Handler(BaseHTTPRequestHandler):
    server: Service

    def log_message(self, *_: Any) -> None:  # keep the test output quiet
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = (json.dumps(body) if content_type == "application/json" else str(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        with self.server.lock:
            self.server.hits[path].append(time.monotonic())
            seen = len(self.server.hits[path])
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if path.startswith("/flaky") and seen <= self.server.fail_first:
            self._send(503, {"error": "try later"})
        elif path == "/down":
            self._send(503, {"error": "down"})
        elif path == "/slow":
            time.sleep(float(parse_qs(url.query).get("seconds", ["2"])[0]))
            self._send(200, {"slow": True})
        elif path == "/text":
            self._send(200, "hello, plain", "text/plain")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), {"status": path})
        else:
            self._send(
                200,
                {
                    "ok": path != "/echo/not-ok",
                    "method": self.command,
                    "path": path,
                    "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(body) if body else None,
                    "attempt": seen,
                },
            )

    do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 - http.server's names


@pytest.fixture
def service() -> Iterator[Service]:
    server = Service()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(service: Service, connections: Connections) -> str:
    """Connection ``api``: the service, basic auth, a header of its own, fast retries."""
    connections.define(
        "api",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": service.port,
                "login": "ada",
                "password": "s3cret-pw",
                "extra": {"headers": {"X-Team": "data"}, "retry_backoff": 0.05},
            }
        ),
    )
    return "api"


def test_an_http_task_uses_the_connections_base_url_auth_and_headers_and_renders_templates(
    service: Service, api: str
) -> None:
    with DAG("http_echo", params={"region": "north"}) as dag:
        HttpTask(
            "post",
            api,
            method="post",
            path="/echo/{{ ds }}",
            json={"region": "{{ params.region }}", "n": 1},
            params={"day": "{{ ds_nodash }}"},
            headers={"X-Run": "{{ run_id }}"},
        )

    result, log = run_here(dag, conf={"region": "eu"})

    assert result.state == "success", log
    seen = result.tries["post"].result
    assert seen["method"] == "POST" and seen["path"] == "/echo/2026-01-05"
    assert seen["query"] == {"day": "20260105"}
    assert seen["body"] == {"region": "eu", "n": 1}
    assert seen["headers"]["authorization"] == "Basic " + base64.b64encode(b"ada:s3cret-pw").decode()
    assert seen["headers"]["x-team"] == "data"
    assert seen["headers"]["x-run"].startswith("test__2026-01-05")
    assert f"POST http://127.0.0.1:{service.port}/echo/2026-01-05?day=20260105: HTTP 200" in log


def test_a_bearer_token_and_a_base_url_with_a_path_come_from_the_connection(
    service: Service, connections: Connections
) -> None:
    connections.define(
        "tokened",
        json.dumps(
            {
                "conn_type": "https",
                "host": f"http://127.0.0.1:{service.port}/echo/api/",
                "extra": {"bearer_token": "tok-123456"},
            }
        ),
    )
    response = HttpHook("tokened").run("GET", "items", params={"page": 2})

    assert response.json()["path"] == "/echo/api/items"
    assert response.json()["query"] == {"page": "2"}
    assert response.json()["headers"]["authorization"] == "Bearer tok-123456"


def test_a_503_is_retried_with_growing_waits_until_the_service_answers(service: Service, api: str) -> None:
    service.fail_first = 2
    with DAG("http_flaky") as dag:
        HttpTask("get", api, path="/flaky")

    result, log = run_here(dag)

    assert result.state == "success", log
    assert result.tries["get"].result["attempt"] == 3
    assert service.count("/flaky") == 3
    first, second, third = service.hits["/flaky"]
    assert second - first >= 0.05 and third - second >= 0.1  # retry_backoff 0.05, doubling
    assert log.count("HTTP 503 Service Unavailable; retrying") == 2


def test_the_hook_gives_up_after_its_retries_with_a_clear_error(service: Service, api: str) -> None:
    with DAG("http_down") as dag:
        HttpTask("get", api, path="/down", request_retries=2)

    result, log = run_here(dag)

    assert result.states["get"] == "failed"
    assert service.count("/down") == 3
    assert result.tries["get"].error == (
        f"HttpRequestFailed: GET http://127.0.0.1:{service.port}/down failed after 3 attempts: "
        "HTTP 503 Service Unavailable"
    )


def test_a_refused_connection_is_retried_then_reported(service: Service, connections: Connections) -> None:
    port = service.port
    service.shutdown()
    service.server_close()
    connections.define("gone", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port}))

    with pytest.raises(HttpRequestFailed, match=r"failed after 2 attempts: ConnectError") as caught:
        HttpHook("gone", retries=1, retry_backoff=0.01).run("GET", "/echo")
    assert caught.value.attempts == 2 and caught.value.status is None


def test_a_read_timeout_from_the_connection_fails_the_request(
    service: Service, connections: Connections
) -> None:
    connections.define(
        "slow",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": service.port,
                "extra": {"timeout": {"connect": 2, "read": 0.3}, "retries": 0},
            }
        ),
    )
    started = time.monotonic()
    expected = r"GET http://127.0.0.1:\d+/slow failed \(no retries\): ReadTimeout"
    with pytest.raises(HttpRequestFailed, match=expected):
        HttpHook("slow").run("GET", "/slow", params={"seconds": 3})
    assert time.monotonic() - started < 2.5
    assert service.count("/slow") == 1


def test_a_failing_response_check_or_an_unexpected_status_fails_the_task(service: Service, api: str) -> None:
    def says_ok(response: Any) -> bool:
        return response.json()["ok"]

    with DAG("http_checks") as dag:
        HttpTask("rejected", api, path="/echo/not-ok", response_check=says_ok)
        HttpTask("accepted", api, path="/echo/fine", response_check=says_ok)
        HttpTask("missing", api, path="/status/404")
        HttpTask("expected_missing", api, path="/status/404", expected_status=404)

    result, log = run_here(dag)

    assert result.states == {
        "rejected": "failed",
        "accepted": "success",
        "missing": "failed",
        "expected_missing": "success",
    }
    assert result.tries["rejected"].error == (
        f"TaskFailed: GET http://127.0.0.1:{service.port}/echo/not-ok: response_check says_ok rejected "
        "the response (HTTP 200)"
    )
    assert "HTTP 404, expected 200-299" in (result.tries["missing"].error or "")
    assert result.tries["expected_missing"].result == {"status": "/status/404"}
    assert service.count("/status/404") == 2  # a 4xx is an answer: never retried


def test_the_result_is_json_when_the_body_is_json_else_text_and_is_held_to_the_size_limit(
    service: Service, api: str
) -> None:
    with DAG("http_results") as dag:
        HttpTask("text", api, path="/text")
        HttpTask("big", api, path="/echo/" + "x" * 300)

    result, log = run_here(dag, max_result_bytes=300)

    assert result.tries["text"].result == "hello, plain"
    assert result.states["big"] == "failed"
    assert "TaskResultTooLarge" in (result.tries["big"].error or "")


def test_connection_tests_make_one_get_through_the_hook(service: Service) -> None:
    base = {"conn_type": "http", "host": "127.0.0.1", "port": service.port}
    good = probe_connection(Connection.from_dict("probe", {**base, "extra": {"test_path": "/echo/probe"}}))
    bad = probe_connection(Connection.from_dict("probe", {**base, "extra": {"test_path": "/down"}}))

    assert good.ok and good.message == f"GET http://127.0.0.1:{service.port}/echo/probe: HTTP 200"
    assert not bad.ok and "HTTP 503" in bad.message
    assert service.count("/down") == 1  # a test reports at once, without retries


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    assert backoff_delays(0, 0.5) == []
    assert backoff_delays(4, 0.5) == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delays(3, 10, cap=15) == [10, 15, 15]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"method": "FETCH"}, "method of task 'bad' must be one of GET, POST"),
        ({"path": 3}, "path of task 'bad' must be a string"),
        ({"json": {"when": object()}}, "json of task 'bad' must be JSON-serialisable"),
        ({"headers": {"X-N": 1}}, "headers of task 'bad' must map strings to strings"),
        ({"params": "a=1"}, "params of task 'bad' must be a dict"),
        ({"response_check": True}, "response_check of task 'bad' must be a function"),
        ({"expected_status": "200"}, "expected_status of task 'bad' must be a status code"),
        ({"request_retries": -1}, "request_retries of task 'bad' must be a non-negative integer"),
        ({"path": "/{{ ds"}, "path of task 'bad' is not a valid template"),
    ],
)
def test_an_http_task_with_a_bad_argument_fails_at_parse_time(arguments: dict, message: str) -> None:
    with DAG("bad_http"), pytest.raises(DagDefinitionError, match=message) as caught:
        HttpTask("bad", "api", **arguments)
    assert caught.value.file == __file__
