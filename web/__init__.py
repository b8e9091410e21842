"""The web UI: a Flask application factory, server-rendered pages, a JSON API under ``/api/v1``
and a Socket.IO relay of state events.

The web server never imports user DAG code: it reads the serialized DAGs the scheduler stores.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask
from flask_socketio import SocketIO
from hareflow.common.broker import Executor
from hareflow.common.config import Settings
from sqlalchemy.orm import Session, sessionmaker

#: Flask-SocketIO's mode, pinned: plain threads (with simple-websocket for WebSocket), like the rest
#: of hareflow. Auto-detection would pick eventlet or gevent if either happened to be installed.
ASYNC_MODE = "threading"
#: Seconds between the server's pings, and how long it waits for the answer (Socket.IO: 25 and 20).
#: Their sum bounds how long a silently dead connection goes unnoticed (20 s). Within that sum, a
#: short interval and a long timeout leave the most room for a late ping or pong on a loaded
#: machine: a browser gives up after interval + timeout without a ping (15 s late here), the server
#: after ``timeout`` without the pong (15 s), and python-socketio's client after
#: max(interval, timeout) + 5 s without a ping (15 s late; with 10 and 10 it was 5 s, and that is
#: what dropped sockets under load). The price: a ping every 5 s per socket, a frame each way.
PING_INTERVAL = 5
PING_TIMEOUT = 15


def create_app(
    settings: Settings | None = None,
    *,
    sessions: sessionmaker[Session] | None = None,
    executor: Executor | None = None,
) -> Flask:
    """Build the web application.

    ``settings`` default to the environment's (read now, not at import). ``sessions`` default to a
    new engine on ``settings``' metastore; ``executor`` to one opened on first need when a broker
    is configured (``hareflow standalone`` passes its in-process executor instead).
    """
    from hareflow.common.config import load_settings
    from hareflow.web import api, auth, errors, live, metrics, pages, security, static_files
    from hareflow.web.filters import init_filters
    from hareflow.web.runtime import EXTENSION, WebRuntime, end_request_session

    settings = settings if settings is not None else load_settings()
    if sessions is None:
        from hareflow.common.db import create_engine_for, make_session_factory
        from sqlalchemy.engine import make_url

        url = settings.effective_database_url
        # On PostgreSQL the reads have a pool of their own (``WebRuntime.request_bind``, up to 20
        # connections): this one is left the writes, so the process keeps at most 30 in all.
        postgresql = make_url(url).get_backend_name() == "postgresql"
        small = {"pool_size": 5, "max_overflow": 5} if postgresql else {}
        sessions = make_session_factory(create_engine_for(url, **small))

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=security.ensure_secret_key(settings),
        SESSION_COOKIE_NAME="hareflow_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.web_session_hours),
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        JSON_SORT_KEYS=False,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.web_proxy_count > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        count = settings.web_proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)  # type: ignore[method-assign]
    web_runtime = WebRuntime(settings, sessions, executor)
    app.extensions[EXTENSION] = web_runtime
    app.teardown_appcontext(end_request_session)

    # One Socket.IO object per application: Flask-SocketIO keeps a single server per object, and
    # tests and benchmarks build several applications in one process.
    socketio = SocketIO()
    # A connection that dies without being closed (a cable pulled, a laptop asleep) is noticed
    # within ping_interval + ping_timeout; the page then reconnects and refetches its state.
    socketio.init_app(
        app,
        async_mode=ASYNC_MODE,
        manage_session=True,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
    )
    live.init_socketio(socketio, web_runtime)

    metrics.init_app(app)
    security.init_app(app)
    static_files.init_app(app)
    errors.init_app(app)
    init_filters(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    from hareflow.web.api.system import public_health

    app.add_url_rule("/health", "health", public_health)
    return app


def socketio_of(app: Flask) -> Any:
    """The application's Flask-SocketIO object (tests use its test client)."""
    return app.extensions["socketio"]
