"""An in-process server for tests, benchmarks and embedding: Werkzeug's threaded server, in a thread.

It is a development server: `hareflow web` and `hareflow standalone` serve with gunicorn instead
(``hareflow.web.production``). Tests use this one because it runs inside the test's process (the
application, its sessions and an in-process executor are shared with the test) and starts in
milliseconds. Flask-SocketIO's ``threading`` mode works on both (WebSocket through simple-websocket).
"""

from __future__ import annotations

import logging
import threading

from hareflow.common.broker import Executor
from hareflow.common.config import Settings
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)


def make_web_server(
    settings: Settings,
    *,
    sessions: sessionmaker[Session] | None = None,
    executor: Executor | None = None,
    host: str | None = None,
    port: int | None = None,
) -> BaseWSGIServer:
    """Build the application and a server bound to ``host:port`` (default: the settings'); port 0
    picks a free port (``server.server_port`` tells which)."""
    from hareflow.web import create_app

    app = create_app(settings, sessions=sessions, executor=executor)
    server = make_server(
        host if host is not None else settings.web_host,
        port if port is not None else settings.web_port,
        app,
        threaded=True,
    )
    server.daemon_threads = True  # type: ignore[attr-defined]
    server.app = app  # type: ignore[attr-defined]
    return server


def run_web(
    settings: Settings,
    stop: threading.Event,
    *,
    sessions: sessionmaker[Session] | None = None,
    executor: Executor | None = None,
) -> None:
    """Serve the UI on ``settings.web_host:web_port`` until ``stop`` is set.

    ``executor``: the in-process executor of ``hareflow standalone`` (its events feed the pages);
    without it, a broker-backed web process opens its own connection on first need.
    """
    server = make_web_server(settings, sessions=sessions, executor=executor)
    serve_until(server, stop)


def serve_until(server: BaseWSGIServer, stop: threading.Event) -> None:
    host, port = server.server_address[:2]
    log.info("web UI on http://%s:%s/", host, port)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="hareflow-web", daemon=True
    )
    thread.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        from hareflow.web.runtime import EXTENSION

        app = getattr(server, "app", None)
        if app is not None:
            app.extensions[EXTENSION].close()
        log.info("web UI stopped")
