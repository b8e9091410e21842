"""Serve the web application with gunicorn: the server of `hareflow web` and `hareflow standalone`.

One gunicorn worker process with the ``gthread`` worker class: a pool of ``web_threads`` threads,
kept-alive connections parked on the worker's poller rather than on a thread, and WebSocket through
simple-websocket (Flask-SocketIO's ``threading`` mode, which holds one thread per open socket). One
process, because Flask-SocketIO keeps its clients' state in the process: several would need sticky
sessions and a message queue between them (see docs/deployment.md). gevent and eventlet are not
used: eventlet is deprecated, and gevent's monkey-patching would have to reach pika's and aio-pika's
threads and sockets, and every task process the local executor forks.

The caller binds the listening socket (`bind_listener`), so a taken port is reported before anything
else happens, and hands it to gunicorn as ``fd://``. Everything the application needs runs in the
worker process, after the fork: ``app_factory`` builds it there (threads and connections do not
survive a fork), and ``on_exit`` stops what the factory started.

Signals: SIGINT, SIGTERM or SIGQUIT to the main process (or Ctrl-C, which reaches both) stops the
worker at once (open pages reconnect when the server is back) and then runs ``on_exit``; a second
Ctrl-C sets the event ``on_exit`` receives, so it can stop without waiting for running tasks.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import ThreadWorker
from hareflow.common.config import Settings

log = logging.getLogger(__name__)

#: Seconds the main process waits for its worker to stop (then it kills it): room for ``on_exit``.
STOP_TIMEOUT = 90
#: Seconds a kept-alive connection may stay idle between two requests. An idle connection waits on
#: the worker's poller, not on a thread: keeping it costs a file descriptor.
KEEPALIVE = 30


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (port 0: any free port); OSError when it is taken."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


class HareflowWorker(ThreadWorker):
    """gunicorn's threaded worker, stopping at once on SIGTERM as on SIGINT and SIGQUIT.

    A graceful SIGTERM would wait for every open connection, and WebSockets stay open: the wait
    would use up the time ``on_exit`` needs to stop the embedded scheduler and worker cleanly."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.handle_quit(sig, frame)

    def handle_quit(self, sig: int, frame: Any) -> None:
        # gunicorn's own handler shuts the thread pool down right here, in the signal handler: if
        # the signal lands while the main thread is inside ``tpool.submit`` (which holds the pool's
        # lock), that deadlocks and Ctrl-C never ends the process. Shut it down from a thread of its
        # own instead: it takes the lock once the interrupted submit lets go of it.
        threading.Thread(target=self.tpool.shutdown, kwargs={"wait": False}, daemon=True).start()
        Worker.handle_quit(self, sig, frame)


class _Application(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], app_factory: Callable[[], Flask]) -> None:
        self._options = options
        self._factory = app_factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # settings newer gunicorns add are skipped by older ones
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._factory()


def serve(
    settings: Settings,
    listener: socket.socket,
    app_factory: Callable[[], Flask],
    *,
    access_log: bool = False,
    on_ready: Callable[[], None] | None = None,
    on_exit: Callable[[threading.Event], None] | None = None,
) -> int:
    """Serve the application ``app_factory`` builds (in the worker process) on ``listener`` until
    a signal stops the server; return the exit status for the command.

    ``on_ready`` runs in the worker once the application is built, ``on_exit`` when it stops;
    ``access_log`` writes one line per request to stdout."""
    main_pid = os.getpid()
    immediate = threading.Event()
    debug = settings.log_level.upper() == "DEBUG"

    def post_worker_init(_worker: Any) -> None:
        if on_ready is not None:
            on_ready()

    def worker_int(_worker: Any) -> None:
        # From now on a Ctrl-C (SIGINT) means "stop now"; the main process's relayed SIGQUIT or
        # SIGTERM repeats the first request and changes nothing.
        signal.signal(signal.SIGINT, lambda *_: immediate.set())
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def worker_exit(_arbiter: Any, worker: Any) -> None:
        try:
            _close_runtime(getattr(worker, "wsgi", None))
            if on_exit is not None:
                on_exit(immediate)
        finally:
            if worker.booted:
                # Leave without waiting for the request threads (an open WebSocket's thread would
                # hold the exit until the client goes away) and without running the main process's
                # code that follows ``run()``, which the fork's stack still holds.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)

    # gunicorn takes the descriptor over (and closes it when it stops).
    fd = listener.detach()
    options: dict[str, Any] = {
        "bind": [f"fd://{fd}"],
        "workers": 1,
        "worker_class": HareflowWorker,
        "threads": settings.web_threads,
        # Every thread may hold a WebSocket; the rest of the connections wait on the poller.
        "worker_connections": max(1000, settings.web_threads * 4),
        "keepalive": KEEPALIVE,
        "graceful_timeout": STOP_TIMEOUT,
        # The worker reports to the main process from its own loop, whatever the threads do; a
        # worker silent this long is stuck and is replaced.
        "timeout": 120,
        "proc_name": "hareflow-web",
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        # gunicorn's start-up lines (version, worker class, pid) are noise at INFO.
        "loglevel": "debug" if debug else "warning",
        "control_socket_disable": True,
        "post_worker_init": post_worker_init,
        "worker_int": worker_int,
        "worker_exit": worker_exit,
    }
    try:
        _Application(options, app_factory).run()
    except SystemExit as exc:
        if os.getpid() != main_pid:  # a worker that failed to boot: let gunicorn's status through
            raise
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def _close_runtime(app: object) -> None:
    """Close what the application opened itself (its broker connection and event relay)."""
    from hareflow.web.runtime import EXTENSION

    extensions = getattr(app, "extensions", None)
    if isinstance(extensions, dict) and EXTENSION in extensions:
        try:
            extensions[EXTENSION].close()
        except Exception:  # noqa: BLE001 - stopping anyway
            log.debug("could not close the web runtime", exc_info=True)
