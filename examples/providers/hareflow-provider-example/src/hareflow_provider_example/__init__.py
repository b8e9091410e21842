"""An example hareflow provider: the ``kv`` connection type, ``KvHook`` and ``KvPutTask``.

hareflow finds it through the ``hareflow.providers`` entry point in ``pyproject.toml``, which names
``provider_info``. DAG files import the task type like any class: ``from hareflow_provider_example
import KvPutTask``.
"""

from __future__ import annotations

from hareflow.common.providers import ConnectionType, ProviderInfo
from hareflow.common.secrets import Connection

from hareflow_provider_example.hook import KvHook
from hareflow_provider_example.tasks import KvPutTask

__all__ = ["KvHook", "KvPutTask", "provider_info"]
__version__ = "0.1.0"


def _test_kv(conn: Connection) -> str:
    """``hareflow connections test``: the service answers ``GET /health``."""
    response = KvHook.from_connection(conn, retries=0).run("GET", "/health")
    if response.status_code != 200:
        raise RuntimeError(f"GET {response.request.url}: HTTP {response.status_code}")
    return f"GET {response.request.url}: HTTP 200"


def provider_info() -> ProviderInfo:
    """What this package offers hareflow (read by ``hareflow providers list`` and the UI)."""
    return ProviderInfo(
        name="example",
        version=__version__,
        description="example provider: a key-value service over HTTP",
        connection_types=(
            ConnectionType(
                "kv",
                "Key-value store (example)",
                fields=("host", "port", "login", "password", "extra"),
                hints={"host": "host of the kv service", "extra": '{"timeout": 5}'},
                hook="hareflow_provider_example.hook:KvHook",
                test=_test_kv,
            ),
        ),
        hooks=("hareflow_provider_example.hook:KvHook",),
        task_types=("hareflow_provider_example.tasks:KvPutTask",),
    )
