"""Live updates: state events from the broker, relayed to browsers over Socket.IO.

Each web process subscribes once (``Executor.subscribe_events`` gives it a private, exclusive
queue bound to the events fanout, so every web process sees every event) and relays each event to
the room of its DAG, ``dag:<dag_id>``; run and DAG events also go to ``dags`` (the DAG list), and
asset events (kind ``asset``: an asset has a new event) go to ``assets`` only (the Assets pages);
``workers`` (the workers and queues pages) gets one task event per batch, enough to refetch counts;
dead-letter events (kind ``deadletter``: one was recorded, requeued or discarded) go to
``deadletters`` only (the Dead letters page). A
page joins only the rooms of what it shows. Events are small (what changed, not the new data): a
page fetches the details it needs from the API, and after a reconnect it refetches everything, so
an event missed while disconnected never leaves stale state on screen.

The broker thread only puts events on a queue; one relay thread batches them (up to 50 ms) and
emits, so a burst of a thousand task changes is a few messages per room, not a thousand.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import defaultdict
from typing import Any

from flask import request
from flask_socketio import SocketIO, emit, join_room, leave_room
from hareflow.common import metrics
from hareflow.common.messages import STOP_EVENT, StateEvent
from hareflow.web.runtime import WebRuntime, runtime

log = logging.getLogger(__name__)

ROOM = re.compile(r"^(dags|assets|workers|deadletters|dag:[A-Za-z0-9_.\-]{1,250})$")
BATCH_WINDOW = 0.05
MAX_BATCH = 2000
#: Socket.IO sessions of this process that were accepted and are still connected. A set rather than
#: a counter, so a disconnect of a connection that was never accepted cannot make it drift.
_connected: set[str] = set()


class EventRelay:
    def __init__(self, runtime: WebRuntime, socketio: SocketIO) -> None:
        self._runtime = runtime
        self._socketio = socketio
        self._queue: queue.SimpleQueue[StateEvent] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._subscribed = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.relayed = 0

    @property
    def live(self) -> bool:
        """Whether events arrive (False for a lone web process on the local executor: pages poll)."""
        return self._subscribed

    def ensure_started(self) -> None:
        """Subscribe and start the relay thread, once (called on the first socket connection)."""
        with self._lock:
            if not self._subscribed:
                executor = self._runtime.executor()
                if executor is not None:
                    try:
                        executor.subscribe_events(self._on_event)
                        self._subscribed = True
                    except Exception as exc:  # noqa: BLE001 - pages fall back to polling
                        log.warning("cannot subscribe to state events: %s", exc)
            if self._thread is None and self._subscribed:
                self._thread = threading.Thread(target=self._pump, name="hareflow-web-relay", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _on_event(self, event: StateEvent) -> None:
        self._queue.put(event)  # runs on the broker's thread: never block it

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + BATCH_WINDOW
            while len(batch) < MAX_BATCH:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            try:
                self.emit(batch)
            except Exception:  # noqa: BLE001 - one bad batch must not end live updates
                log.exception("could not relay %d event(s)", len(batch))

    def emit(self, batch: list[StateEvent]) -> None:
        rooms: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in batch:
            if e.kind == STOP_EVENT:  # for the worker running the try; the task event shows the change
                continue
            item = {
                "kind": e.kind,
                "dag_id": e.dag_id,
                "run_id": e.run_id,
                "task_id": e.task_id,
                "map_index": e.map_index,
                "try_number": e.try_number,
                "ti_id": e.ti_id,
                "state": e.state,
                "at": e.at,
            }
            if e.kind == "asset":  # a new asset event: the Assets pages refetch
                rooms["assets"].append(item)
                continue
            if e.kind == "deadletter":  # recorded, requeued or discarded: the Dead letters pages redraw
                rooms["deadletters"].append(item)
                continue
            rooms[f"dag:{e.dag_id}"].append(item)
            if e.kind in ("run", "dag"):
                rooms["dags"].append(item)
            elif e.kind == "task" and "workers" not in rooms:
                rooms["workers"].append(item)  # the workers and queues pages only refetch counts
        for room, items in rooms.items():
            self._socketio.emit("events", items, to=room)
        self.relayed += len(batch)
        metrics.WEB_EVENTS_RELAYED.inc(len(batch))


# -- Socket.IO handlers -----------------------------------------------------------------------------


def _socket_user(auth: object) -> Any:
    """The user behind a socket: the session cookie, or ``{"token": ...}`` from a script."""
    from hareflow.web.security import user_for_token, user_from_session

    with runtime().sessions() as db, db.begin():
        if isinstance(auth, dict) and isinstance(auth.get("token"), str):
            return user_for_token(db, auth["token"])
        return user_from_session(db)


def on_connect(auth: object = None) -> None:
    user = _socket_user(auth)
    if user is None:
        raise ConnectionRefusedError("log in first")
    relay = runtime().relay
    assert relay is not None
    relay.ensure_started()
    emit("hello", {"live": relay.live})
    _connected.add(request.sid)  # type: ignore[attr-defined]


def on_disconnect(*_reason: object) -> None:
    _connected.discard(request.sid)  # type: ignore[attr-defined]


def on_join(data: object) -> dict[str, Any]:
    rooms = data.get("rooms") if isinstance(data, dict) else None
    if not isinstance(rooms, list) or not all(isinstance(r, str) and ROOM.match(r) for r in rooms):
        return {
            "ok": False,
            "error": "rooms must be a list of 'dags', 'assets', 'workers', 'deadletters' or 'dag:<dag_id>'",
        }
    for room in rooms:
        join_room(room)
    return {"ok": True, "rooms": rooms}


def on_leave(data: object) -> dict[str, Any]:
    rooms = data.get("rooms") if isinstance(data, dict) else None
    if not isinstance(rooms, list):
        return {"ok": False}
    for room in rooms:
        if isinstance(room, str):
            leave_room(room)
    return {"ok": True}


def init_socketio(socketio: SocketIO, web_runtime: WebRuntime) -> None:
    web_runtime.relay = EventRelay(web_runtime, socketio)
    socketio.on_event("connect", on_connect)
    socketio.on_event("disconnect", on_disconnect)
    metrics.WEB_SOCKETIO_CLIENTS.set_function(lambda: len(_connected))
    socketio.on_event("join", on_join)
    socketio.on_event("leave", on_leave)
