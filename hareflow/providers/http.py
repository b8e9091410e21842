"""HTTP: ``HttpHook``, ``HttpTask`` (see ``hareflow.common.providers.http``)."""

from hareflow.common.providers.errors import HttpRequestFailed
from hareflow.common.providers.http import HttpHook, HttpTask, http_base_url

__all__ = ["HttpHook", "HttpRequestFailed", "HttpTask", "http_base_url"]
