"""``KvHook``: a key-value service over HTTP, reached through a ``kv`` connection."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hareflow.common.providers.http import HttpHook


class KvHook(HttpHook):
    """Reads and writes keys; base URL, auth, timeouts and retries are ``HttpHook``'s."""

    conn_types = ("kv",)

    def get_value(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when there is none."""
        response = self.run("GET", f"/kv/{quote(key, safe='')}")
        if response.status_code == 404:
            return default
        response.raise_for_status()
        return response.json()["value"]

    def put_value(self, key: str, value: Any) -> None:
        """Store ``value`` (any JSON value) under ``key``."""
        self.run("PUT", f"/kv/{quote(key, safe='')}", json={"value": value}).raise_for_status()
