"""What the provider tests share: connections defined in the environment, and a DAG run here."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hareflow.common.secrets.client import set_resolver
from sqlalchemy.engine import make_url

LOGICAL_DATE = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


class Connections:
    """Defines connections as ``HAREFLOW_CONN_<ID>`` variables, the first place a lookup looks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def define(self, conn_id: str, text: str) -> None:
        self._monkeypatch.setenv(f"HAREFLOW_CONN_{conn_id.upper()}", text)
        set_resolver(None)  # a resolver caches what it found: start afresh


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Connections]:
    # The local lookup chain ends at the metastore: keep it in this test's own home.
    monkeypatch.setenv("HAREFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HAREFLOW_DATABASE_URL", raising=False)
    set_resolver(None)
    yield Connections(monkeypatch)
    set_resolver(None)


def connection_uri(sqlalchemy_url: str) -> str:
    """A fixture's SQLAlchemy URL as a connection URI (the type is the dialect, no driver)."""
    url = make_url(sqlalchemy_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{url.database}"
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)


def run_here(dag: object, **options: object) -> tuple[object, str]:
    """Run ``dag`` as ``hareflow dags test`` does; return the outcome and everything it printed."""
    from hareflow.inprocess import run_dag

    out = io.StringIO()
    result = run_dag(dag, logical_date=LOGICAL_DATE, out=out, **options)  # type: ignore[arg-type]
    return result, out.getvalue()
