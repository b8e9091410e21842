"""HTTP: ``HttpHook`` (httpx, with the connection's base URL, auth, timeouts and retries) and the
``HttpTask`` task type.

A connection of type ``http`` or ``https`` gives the base URL (``http_base_url``: scheme from the
schema field or the type, host, port; a host holding a whole URL is used as it is) and:

- login/password: HTTP basic auth;
- ``extra["headers"]``: headers sent with every request;
- ``extra["bearer_token"]``: ``Authorization: Bearer ...``;
- ``extra["timeout"]``: seconds, or ``{"connect": s, "read": s}`` (defaults 10 and 60);
- ``extra["retries"]``, ``extra["retry_backoff"]``: the hook's retry policy (defaults 3 and 0.5 s).

Retries cover what is worth retrying: connection errors, timeouts and 5xx statuses, with
exponential backoff (``retry_backoff * 2**n``, at most ``MAX_BACKOFF_SECONDS``). A 4xx is an
answer, not an outage: it is returned at once, and ``HttpTask`` judges it.
"""

from __future__ import annotations

import json as jsonlib
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Unpack

from hareflow.common.dag.context import Context
from hareflow.common.dag.dag import DAG
from hareflow.common.dag.errors import TaskFailed
from hareflow.common.dag.settings import TaskSettings
from hareflow.common.dag.task import BaseTask
from hareflow.common.providers import checks
from hareflow.common.providers.errors import HttpRequestFailed, WrongConnectionType
from hareflow.common.secrets.connection import Connection

if TYPE_CHECKING:
    import httpx

HTTP_TYPES = ("http", "https")
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def http_base_url(conn: Connection) -> str:
    """The URL every path of an HTTP connection is relative to, without a trailing slash."""
    scheme = (
        conn.schema
        if conn.schema in ("http", "https")
        else ("https" if conn.conn_type == "https" else "http")
    )
    host = conn.host or ""
    if "://" in host:
        return host.rstrip("/")
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}"


def backoff_delays(retries: int, base: float, cap: float = MAX_BACKOFF_SECONDS) -> list[float]:
    """The waits before each retry: ``base``, ``2*base``, ``4*base``... each at most ``cap``."""
    return [min(cap, base * 2**n) for n in range(retries)]


def _number(conn: Connection, key: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(
            f"connection {conn.conn_id!r}: extra {key!r} must be a non-negative number, not {value!r}"
        )
    if integer and value != int(value):
        raise ValueError(f"connection {conn.conn_id!r}: extra {key!r} must be a whole number, not {value!r}")
    return float(value)


def _timeouts(conn: Connection) -> tuple[float, float]:
    """(connect, read) seconds from ``extra["timeout"]`` (a number for both, or a dict)."""
    given = conn.extra.get("timeout")
    if given is None:
        return DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
    if isinstance(given, dict):
        connect = _number(conn, "timeout.connect", given.get("connect", DEFAULT_CONNECT_TIMEOUT))
        read = _number(conn, "timeout.read", given.get("read", DEFAULT_READ_TIMEOUT))
        return connect, read
    seconds = _number(conn, "timeout", given)
    return seconds, seconds


class HttpHook:
    """HTTP requests to the service behind connection ``conn_id``.

    Keyword arguments override the connection's policy: ``retries`` (retries after the first
    attempt), ``retry_backoff`` (seconds before the first retry, doubling), ``connect_timeout`` and
    ``read_timeout`` (seconds). ``sleep`` is how the hook waits between attempts (tests of the
    policy pass their own).

    A provider's hook for an HTTP service subclasses this one and sets ``conn_types`` to its own
    connection types.
    """

    #: Connection types this hook accepts from ``Connection.get`` (empty: any).
    conn_types: tuple[str, ...] = HTTP_TYPES

    def __init__(
        self,
        conn_id: str,
        *,
        connection: Connection | None = None,
        retries: int | None = None,
        retry_backoff: float | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conn_id = conn_id
        self._connection = connection
        self._retries = retries
        self._retry_backoff = retry_backoff
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._sleep = sleep

    @classmethod
    def from_connection(cls, connection: Connection, **options: Any) -> HttpHook:
        return cls(connection.conn_id, connection=connection, **options)

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            conn = Connection.get(self.conn_id)
            if self.conn_types and conn.conn_type not in self.conn_types:
                raise WrongConnectionType(
                    f"connection {conn.conn_id!r} is of type {conn.conn_type!r}, not "
                    f"{' or '.join(self.conn_types)}"
                )
            self._connection = conn
        return self._connection

    # -- what the connection says -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return http_base_url(self.connection)

    @property
    def retries(self) -> int:
        if self._retries is not None:
            return self._retries
        return int(
            _number(
                self.connection,
                "retries",
                self.connection.extra.get("retries", DEFAULT_RETRIES),
                integer=True,
            )
        )

    @property
    def retry_backoff(self) -> float:
        if self._retry_backoff is not None:
            return self._retry_backoff
        given = self.connection.extra.get("retry_backoff", DEFAULT_BACKOFF_SECONDS)
        return _number(self.connection, "retry_backoff", given)

    def timeout(self) -> httpx.Timeout:
        import httpx

        connect, read = _timeouts(self.connection)
        connect = self._connect_timeout if self._connect_timeout is not None else connect
        read = self._read_timeout if self._read_timeout is not None else read
        return httpx.Timeout(read, connect=connect)

    def headers(self) -> dict[str, str]:
        """The connection's headers: ``extra["headers"]``, then the bearer token."""
        conn = self.connection
        given = conn.extra.get("headers") or {}
        if isinstance(given, str):  # a URI's extra holds text only
            given = jsonlib.loads(given)
        if not isinstance(given, dict):
            raise ValueError(f"connection {conn.conn_id!r}: extra 'headers' must be a JSON object")
        headers = {str(k): str(v) for k, v in given.items()}
        token = conn.extra.get("bearer_token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def auth(self) -> tuple[str, str] | None:
        conn = self.connection
        return (conn.login, conn.password or "") if conn.login else None

    def url(self, path: str) -> str:
        if "://" in path:
            return path
        return self.base_url + ("/" + path.lstrip("/") if path else "")

    # -- requests ---------------------------------------------------------------------------------

    def run(
        self,
        method: str,
        path: str = "",
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **request: Any,
    ) -> httpx.Response:
        """Send one request (retried as the module docstring says) and return the response.

        Raise ``HttpRequestFailed`` when the last attempt still had a connection error, a timeout
        or a 5xx status. ``request`` goes to ``httpx.Client.request`` (``content=``, ``data=``...).
        """
        import httpx

        url = self.url(path)
        what = f"{method.upper()} {url}"
        delays = backoff_delays(self.retries, self.retry_backoff)
        attempts = len(delays) + 1
        with httpx.Client(auth=self.auth(), headers=self.headers(), timeout=self.timeout()) as client:
            for attempt in range(1, attempts + 1):
                try:
                    response = client.request(
                        method.upper(), url, json=json, params=params, headers=headers, **request
                    )
                except httpx.TransportError as exc:
                    problem, status = f"{type(exc).__name__}: {exc or 'no detail'}", None
                else:
                    if response.status_code < 500:
                        return response
                    problem, status = (
                        f"HTTP {response.status_code} {response.reason_phrase}",
                        response.status_code,
                    )
                if attempt < attempts:
                    delay = delays[attempt - 1]
                    print(f"{what}: {problem}; retrying in {delay:g}s (attempt {attempt} of {attempts})")
                    self._sleep(delay)
        tries = f"after {attempts} attempts" if attempts > 1 else "(no retries)"
        raise HttpRequestFailed(f"{what} failed {tries}: {problem}", status=status, attempts=attempts)

    def get(self, path: str = "", **kwargs: Any) -> httpx.Response:
        return self.run("GET", path, **kwargs)

    def post(self, path: str = "", **kwargs: Any) -> httpx.Response:
        return self.run("POST", path, **kwargs)

    def __repr__(self) -> str:
        return f"<HttpHook {self.conn_id}>"


def _check_status(task_id: str, expected: Any) -> Collection[int]:
    if isinstance(expected, int) and not isinstance(expected, bool):
        return (expected,)
    if isinstance(expected, range) or (
        isinstance(expected, list | tuple | set | frozenset)
        and expected
        and all(isinstance(s, int) and not isinstance(s, bool) for s in expected)
    ):
        return expected if isinstance(expected, range) else tuple(sorted(expected))
    raise checks.fail(
        task_id, "expected_status", f"must be a status code, a range or a list of them, not {expected!r}"
    )


def _describe_statuses(expected: Collection[int]) -> str:
    if isinstance(expected, range) and expected.step == 1:
        return f"{expected.start}-{expected.stop - 1}"
    return ", ".join(str(s) for s in expected)


def response_body(response: httpx.Response) -> Any:
    """The body as JSON when it parses as JSON, else as text (None when empty)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


class HttpTask(BaseTask):
    """Sends one HTTP request through connection ``conn_id``; the result is the response body
    (parsed JSON, else text), so it must fit in the result size limit (``max_result_bytes``).

    ``path``, ``json``, ``params`` and ``headers`` are templates. A status outside
    ``expected_status`` (default 200-299) fails the try; so does a ``response_check(response)``
    returning something falsy. ``request_retries`` overrides the connection's HTTP-level retries
    (``retries`` is the task's own retry setting, as for every task).
    """

    template_fields = ("path", "json", "params", "headers")

    def __init__(
        self,
        task_id: str,
        conn_id: str,
        method: str = "GET",
        path: str = "",
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        response_check: Callable[[httpx.Response], Any] | None = None,
        expected_status: int | Collection[int] = range(200, 300),
        request_retries: int | None = None,
        *,
        dag: DAG | None = None,
        **settings: Unpack[TaskSettings],
    ) -> None:
        self.conn_id = checks.conn_id(task_id, "conn_id", conn_id)
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise checks.fail(task_id, "method", f"must be one of {', '.join(METHODS)}, not {method!r}")
        self.method = method.upper()
        if not isinstance(path, str):
            raise checks.fail(task_id, "path", f"must be a string, not {type(path).__name__}")
        self.path = path
        try:
            jsonlib.dumps(json, allow_nan=False)
        except (TypeError, ValueError):
            raise checks.fail(
                task_id, "json", "must be JSON-serialisable (dict, list, str, number, bool, None)"
            ) from None
        self.json = json
        self.params = checks.string_mapping(task_id, "params", params, str_values=False)
        self.headers = checks.string_mapping(task_id, "headers", headers, str_values=True)
        if response_check is not None and not callable(response_check):
            raise checks.fail(task_id, "response_check", "must be a function taking the response")
        self.response_check = response_check
        self.expected_status = _check_status(task_id, expected_status)
        if request_retries is not None and (
            isinstance(request_retries, bool) or not isinstance(request_retries, int) or request_retries < 0
        ):
            raise checks.fail(
                task_id, "request_retries", f"must be a non-negative integer, not {request_retries!r}"
            )
        self.request_retries = request_retries
        for name in self.template_fields:
            checks.template(task_id, name, getattr(self, name))
        super().__init__(task_id, dag=dag, **settings)

    def execute(self, ctx: Context) -> Any:
        hook = HttpHook(self.conn_id, retries=self.request_retries)
        response = hook.run(self.method, self.path, json=self.json, params=self.params, headers=self.headers)
        what = f"{self.method} {response.request.url}"
        print(f"{what}: HTTP {response.status_code}, {len(response.content)} bytes")
        if response.status_code not in self.expected_status:
            raise TaskFailed(
                f"{what}: HTTP {response.status_code}, expected {_describe_statuses(self.expected_status)}; "
                f"body: {response.text[:500]!r}"
            )
        if self.response_check is not None and not self.response_check(response):
            name = getattr(self.response_check, "__name__", "response_check")
            raise TaskFailed(
                f"{what}: response_check {name} rejected the response (HTTP {response.status_code})"
            )
        return response_body(response)
