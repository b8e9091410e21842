"""The control plane's side of task lookups: who may read what, answered from the lookup chain.

A task on a worker asks for a connection or a variable (or, for an ``ExternalTaskSensor``, the
state of another DAG's task or run: ``task_state``); its worker relays the request with the
asking try's key (taken from the task message it holds, not from the task). This server, run by
every scheduler and results consumer (any of them may answer), checks that the try is live —
the task instance exists, has that DAG and try number, and is queued or running — and that the
connection's ``allowed_dag_ids`` admit the DAG, then answers from environment → configured
secrets backends → metastore. A request for a try that is not live is refused: a stale or
forged request learns nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from hareflow.common.config import Settings
from hareflow.common.db.models import TaskInstance
from hareflow.common.messages import LookupReply, LookupRequest, MessageError, decode
from hareflow.common.runs import RunError, external_state
from hareflow.common.secrets.backends import SecretsChain, chain_from_settings
from hareflow.common.secrets.errors import AccessDenied, ConnectionNotFound, SecretsError
from hareflow.common.states import TaskState
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
_LIVE = (TaskState.QUEUED, TaskState.RUNNING)


class LookupServer:
    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], chain: SecretsChain | None = None
    ) -> None:
        self._sessions = sessions
        self._chain = chain or chain_from_settings(settings, sessions)

    def handle(self, body: bytes) -> bytes:
        """Answer one request body with a reply body. Never raises."""
        try:
            request = decode(body)
        except MessageError as exc:
            return _reply(False, error=f"bad lookup request: {exc}", code="error")
        if not isinstance(request, LookupRequest):
            return _reply(False, error=f"not a lookup request: {request.type}", code="error")
        try:
            return self._answer(request)
        except Exception as exc:  # a backend may raise anything; the task gets one clear line
            log.warning(
                "lookup of %s %r for %s failed: %s", request.kind, request.name, request.key.label(), exc
            )
            text = str(exc) if isinstance(exc, SecretsError) else f"{type(exc).__name__}: {exc}"
            return _reply(
                False, error=f"the {request.kind} {request.name!r} could not be read: {text}", code="error"
            )

    def _answer(self, request: LookupRequest) -> bytes:
        key = request.key
        with self._sessions() as session:
            ti = session.get(TaskInstance, key.ti_id)
            live = (
                ti is not None
                and ti.dag_id == key.dag_id
                and ti.task_id == key.task_id
                and ti.try_number == key.try_number
                and ti.state in _LIVE
            )
        if not live:
            log.warning(
                "refused a lookup of %s %r for %s: not a live try", request.kind, request.name, key.label()
            )
            return _reply(False, error=f"{key.label()} is not a running try: lookups refused", code="denied")
        if request.kind == "variable":
            return _reply(True, value=self._chain.variable(request.name))
        if request.kind == "task_state":
            return self._task_state(request)
        try:
            conn = self._chain.connection(request.name, dag_id=key.dag_id)
        except AccessDenied as exc:
            log.warning("refused connection %r to %s: allow-list", request.name, key.label())
            return _reply(False, error=str(exc), code="denied")
        except ConnectionNotFound as exc:
            return _reply(False, error=str(exc), code="not_found")
        return _reply(True, value=conn.to_dict(secrets=True))

    def _task_state(self, request: LookupRequest) -> bytes:
        """Another DAG's run or task state, for an ``ExternalTaskSensor``: states only (no
        secrets, no results), so any live try may ask, as in Airflow."""
        try:
            query = json.loads(request.name)
        except ValueError:
            return _reply(False, error="a task_state lookup's name is a JSON object", code="error")
        if not isinstance(query, dict):
            return _reply(False, error="a task_state lookup's name is a JSON object", code="error")
        with self._sessions() as session:
            try:
                return _reply(True, value=external_state(session, query))
            except RunError as exc:
                return _reply(False, error=str(exc), code="error")


def _reply(ok: bool, *, value: Any = None, error: str | None = None, code: str | None = None) -> bytes:
    return LookupReply(ok=ok, value=value, error=error, code=code).encode()
