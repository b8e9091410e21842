"""Sensors on the built-in providers: ``SqlSensor`` (on ``SqlHook``) and ``HttpSensor`` (on
``HttpHook``). Like the hooks, they import SQLAlchemy and httpx only when they first poke."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from hareflow.common.dag.context import Context
from hareflow.common.dag.sensors import BaseSensor, PokeReturnValue
from hareflow.common.providers import checks
from hareflow.common.providers.http import METHODS, HttpHook
from hareflow.common.providers.sql import SqlHook

if TYPE_CHECKING:
    import httpx


class SqlCriterionMet(Exception):
    """A ``SqlSensor``'s ``failure`` callable accepted the first cell: the sensor fails."""


class SqlSensor(BaseSensor):
    """Runs ``sql`` on connection ``conn_id`` at each poke; done when the first cell of the first
    row is truthy (Airflow's ``SqlSensor``). ``success(cell)`` decides instead, when given;
    ``failure(cell)`` returning something truthy fails the sensor. No row: not yet (or a failure,
    with ``fail_on_empty=True``). ``sql`` and ``parameters`` are templates."""

    template_fields = ("sql", "parameters")

    def __init__(
        self,
        task_id: str,
        *,
        conn_id: str,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        success: Callable[[Any], Any] | None = None,
        failure: Callable[[Any], Any] | None = None,
        fail_on_empty: bool = False,
        **arguments: Any,
    ) -> None:
        self.conn_id = checks.conn_id(task_id, "conn_id", conn_id)
        if not isinstance(sql, str) or not sql.strip():
            raise checks.fail(task_id, "sql", "must be a non-empty SQL string")
        checks.template(task_id, "sql", sql)
        self.sql = sql
        self.parameters = checks.string_mapping(task_id, "parameters", parameters, str_values=False)
        for name, value in (("success", success), ("failure", failure)):
            if value is not None and not callable(value):
                raise checks.fail(task_id, name, f"must be a function of the first cell, not {value!r}")
        self.success = success
        self.failure = failure
        self.fail_on_empty = checks.boolean(task_id, "fail_on_empty", fail_on_empty)
        super().__init__(task_id, **arguments)

    def poke(self, ctx: Context) -> bool:
        row = SqlHook(self.conn_id).get_first(self.sql, self.parameters)
        print(f"Poking {self.conn_id}: first row {row!r}", flush=True)
        if not row:
            if self.fail_on_empty:
                raise SqlCriterionMet(f"sensor '{self.task_id}': the query returned no row (fail_on_empty)")
            return False
        cell = row[0]
        if self.failure is not None and self.failure(cell):
            name = getattr(self.failure, "__name__", "failure")
            raise SqlCriterionMet(f"sensor '{self.task_id}': failure criterion met: {name}({cell!r}) is true")
        if self.success is not None:
            return bool(self.success(cell))
        return bool(cell)


class HttpSensor(BaseSensor):
    """Requests ``endpoint`` through connection ``http_conn_id`` at each poke (Airflow's
    ``HttpSensor``). A status in ``response_error_codes_allowlist`` (default 404) means not yet;
    any other status of 400 or more fails the sensor. With ``response_check(response)`` its
    result decides (a bool or a ``PokeReturnValue``); without it any other response is done.
    ``request_params`` are the query string of a GET or HEAD and the JSON body otherwise;
    ``endpoint``, ``request_params`` and ``headers`` are templates."""

    template_fields = ("endpoint", "request_params", "headers")

    def __init__(
        self,
        task_id: str,
        *,
        endpoint: str = "",
        http_conn_id: str = "http_default",
        method: str = "GET",
        request_params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        response_check: Callable[[httpx.Response], Any] | None = None,
        response_error_codes_allowlist: Collection[int | str] = (404,),
        **arguments: Any,
    ) -> None:
        self.http_conn_id = checks.conn_id(task_id, "http_conn_id", http_conn_id)
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise checks.fail(task_id, "method", f"must be one of {', '.join(METHODS)}, not {method!r}")
        self.method = method.upper()
        if not isinstance(endpoint, str):
            raise checks.fail(task_id, "endpoint", f"must be a string, not {type(endpoint).__name__}")
        self.endpoint = endpoint
        self.request_params = checks.string_mapping(
            task_id, "request_params", request_params, str_values=False
        )
        self.headers = checks.string_mapping(task_id, "headers", headers, str_values=True)
        if response_check is not None and not callable(response_check):
            raise checks.fail(task_id, "response_check", "must be a function taking the response")
        self.response_check = response_check
        try:
            self.allowlist = frozenset(int(code) for code in response_error_codes_allowlist)
        except (TypeError, ValueError):
            raise checks.fail(
                task_id, "response_error_codes_allowlist", "must be HTTP status codes"
            ) from None
        for name in self.template_fields:
            checks.template(task_id, name, getattr(self, name))
        super().__init__(task_id, **arguments)

    def poke(self, ctx: Context) -> bool | PokeReturnValue:
        hook = HttpHook(self.http_conn_id)
        query = self.method in ("GET", "HEAD")
        response = hook.run(
            self.method,
            self.endpoint,
            params=self.request_params if query else None,
            json=None if query else self.request_params,
            headers=self.headers,
        )
        what = f"{self.method} {response.request.url}"
        print(f"Poking {what}: HTTP {response.status_code}", flush=True)
        if response.status_code in self.allowlist:
            return False
        if response.status_code >= 400:
            raise RuntimeError(f"{what}: HTTP {response.status_code}; body: {response.text[:500]!r}")
        if self.response_check is None:
            return True
        verdict = self.response_check(response)
        return verdict if isinstance(verdict, PokeReturnValue) else bool(verdict)
