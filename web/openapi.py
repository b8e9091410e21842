"""The OpenAPI 3 description of ``/api/v1``, written by hand (a test checks it covers every route)."""

from __future__ import annotations

from typing import Any

VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(
    name: str, where: str = "path", schema: dict[str, Any] | None = None, description: str = ""
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema or {"type": "string"},
    }
    if description:
        p["description"] = description
    return p


ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "404": {"$ref": "#/components/responses/NotFound"},
}
DAG = _param("dag_id")
RUN = _param("run_id", description="the run's id, URL-encoded (e.g. manual__2026-11-24T03:45:51+00:00)")
TASK = _param("task_id")
INT = {"type": "integer"}
MAP_INDEX = _param(
    "map_index", "query", INT, "one instance of a mapped task (default: the task's first instance)"
)
LIMIT = _param("limit", "query", INT, "page size")
OFFSET = _param("offset", "query", INT, "rows to skip")


def _op(
    summary: str,
    response: dict[str, Any],
    *,
    params: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    role: str = "viewer",
    status: str = "200",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs the {role} role.",
        "parameters": params or [],
        "responses": {status: response, **ERRORS},
    }
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


def _with_conflict(op: dict[str, Any]) -> dict[str, Any]:
    op["responses"]["409"] = {"$ref": "#/components/responses/Conflict"}
    return op


def _with_dry_run(op: dict[str, Any]) -> dict[str, Any]:
    op["responses"]["200"] = _json(
        _obj(dry_run={"type": "boolean"}, plan=_ref("BackfillPlan")), "The plan of a dry run; nothing changed"
    )
    return op


def _event_op(op: dict[str, Any]) -> dict[str, Any]:
    op["responses"]["200"] = _json(_ref("Run"), "The run this event's key already has (a repeat)")
    return op


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


CLEAR_BODY = _obj(
    task_ids={"type": "array", "items": {"type": "string"}},
    upstream={"type": "boolean"},
    downstream={"type": "boolean"},
    only_failed={"type": "boolean"},
    dry_run={"type": "boolean"},
)

SCHEMAS: dict[str, Any] = {
    "AssetEvent": _obj(
        id=INT,
        uri={"type": "string"},
        extra={"type": "object"},
        source_dag_id={"type": "string", "nullable": True},
        source_run_id={"type": "string", "nullable": True},
        source_task_id={"type": "string", "nullable": True},
        source_map_index=INT,
        source_try_number={"type": "integer", "nullable": True},
        created_by={"type": "string", "nullable": True, "description": "who posted it from outside"},
        timestamp={"type": "string", "format": "date-time"},
    ),
    "Asset": _obj(
        id=INT,
        uri={"type": "string"},
        name={"type": "string"},
        extra={"type": "object"},
        producers={"type": "array", "items": {"type": "string"}, "description": "dag_id.task_id"},
        consumers={"type": "array", "items": {"type": "string"}, "description": "DAG ids"},
        created_at={"type": "string", "format": "date-time"},
        latest_events={"type": "array", "items": {"$ref": "#/components/schemas/AssetEvent"}},
    ),
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": INT, "field": {"type": "string"}},
    },
    "RunSummary": _obj(
        run_id={"type": "string"},
        state={"type": "string"},
        run_type={"type": "string"},
        logical_date={"type": "string", "format": "date-time", "nullable": True},
        start_date={"type": "string", "nullable": True},
        end_date={"type": "string", "nullable": True},
    ),
    "Dag": _obj(
        dag_id={"type": "string"},
        owner={"type": "string"},
        tags={"type": "array", "items": {"type": "string"}},
        schedule={"type": "string", "nullable": True},
        is_paused={"type": "boolean"},
        description={"type": "string", "nullable": True},
        fileloc={"type": "string"},
        next_logical_date={"type": "string", "nullable": True},
        recent_states={"type": "object", "additionalProperties": INT},
        last_run={"allOf": [_ref("RunSummary")], "nullable": True},
    ),
    "DagDetail": _obj(
        dag_id={"type": "string"},
        params={"type": "object"},
        is_paused={"type": "boolean"},
        tasks={
            "type": "array",
            "items": {"type": "object"},
            "description": "serialized tasks, topological order",
        },
    ),
    "Run": _obj(
        dag_id={"type": "string"},
        run_id={"type": "string"},
        run_type={"type": "string"},
        state={"type": "string"},
        logical_date={"type": "string", "nullable": True},
        conf={"type": "object"},
        triggered_by={"type": "string", "nullable": True},
        queued_at={"type": "string"},
        start_date={"type": "string", "nullable": True},
        end_date={"type": "string", "nullable": True},
        duration={"type": "number", "nullable": True},
        dag_version={
            "type": "integer",
            "nullable": True,
            "description": "number of the DAG version the run was created with (null: unknown, a run"
            " older than DAG versions)",
        },
    ),
    "DagVersion": _obj(
        dag_id={"type": "string"},
        version_number={**INT, "description": "1, 2, 3... per DAG"},
        version_hash={
            "type": "string",
            "description": "SHA-256 of the serialized form's and the source's hashes",
        },
        fileloc={"type": "string"},
        created_at={
            "type": "string",
            "format": "date-time",
            "description": "when the version first appeared",
        },
        runs={**INT, "description": "runs that recorded this version"},
        is_latest={"type": "boolean", "description": "the DAG's current version"},
    ),
    "DagVersionDetail": _obj(
        dag_id={"type": "string"},
        version_number=INT,
        version_hash={"type": "string"},
        fileloc={"type": "string"},
        created_at={"type": "string", "format": "date-time"},
        is_latest={"type": "boolean"},
        serialized={"type": "object", "description": "the serialized DAG of this version"},
        source={"type": "string", "nullable": True, "description": "the DAG file's source of this version"},
    ),
    "TaskInstance": _obj(
        id=INT,
        dag_id={"type": "string"},
        run_id={"type": "string"},
        task_id={"type": "string"},
        map_index=INT,
        state={"type": "string"},
        try_number=INT,
        max_tries=INT,
        queue={"type": "string"},
        hostname={"type": "string", "nullable": True},
        worker={"type": "string", "nullable": True},
        start_date={"type": "string", "nullable": True},
        end_date={"type": "string", "nullable": True},
        duration={"type": "number", "nullable": True},
        next_retry_at={
            "type": "string",
            "nullable": True,
            "description": "up_for_retry: when the next try may start; up_for_reschedule: the next poke",
        },
        reschedules={**INT, "description": "a sensor in reschedule mode: times this try was rescheduled"},
        first_poke_at={"type": "string", "nullable": True, "description": "when this try's first poke ran"},
        error={"type": "string", "nullable": True},
    ),
    "GanttBar": _obj(
        task_id={"type": "string"},
        map_index={**INT, "description": "-1 unless the task is mapped"},
        state={"type": "string"},
        try_number={**INT, "description": "the current try (earlier ones are in earlier_tries)"},
        max_tries=INT,
        queued_at={"type": "string", "format": "date-time", "nullable": True},
        start_date={"type": "string", "format": "date-time", "nullable": True},
        end_date={"type": "string", "format": "date-time", "nullable": True},
        duration={"type": "number", "nullable": True},
        hostname={"type": "string", "nullable": True},
        next_retry_at={
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": "up_for_retry: when the next try may start",
        },
        earlier_tries={
            "type": "array",
            "description": "the tries before the current one, as they ended (those kept: since a retry or a "
            "clear started the next one)",
            "items": _obj(
                try_number=INT,
                state={"type": "string"},
                queued_at={"type": "string", "format": "date-time", "nullable": True},
                start_date={"type": "string", "format": "date-time", "nullable": True},
                end_date={"type": "string", "format": "date-time", "nullable": True},
                hostname={"type": "string", "nullable": True},
            ),
        },
    ),
    "Gantt": _obj(
        dag_id={"type": "string"},
        run_id={"type": "string"},
        run_state={"type": "string"},
        queued_at={"type": "string", "format": "date-time", "nullable": True},
        start_date={"type": "string", "format": "date-time", "nullable": True},
        end_date={"type": "string", "format": "date-time", "nullable": True},
        now={
            "type": "string",
            "format": "date-time",
            "description": "the server's clock: a bar still running ends here",
        },
        task_instances={
            "type": "array",
            "items": _ref("GanttBar"),
            "description": "topological order, a mapped task's instances by map index",
        },
        missing={
            "type": "array",
            "items": {"type": "string"},
            "description": "tasks of the DAG with no task instance in this run yet",
        },
    ),
    "Durations": _obj(
        dag_id={"type": "string"},
        limit=INT,
        runs={
            "type": "array",
            "description": "the latest runs, oldest first",
            "items": _obj(
                run_id={"type": "string"},
                state={"type": "string"},
                run_type={"type": "string"},
                logical_date={"type": "string", "format": "date-time", "nullable": True},
                queued_at={"type": "string", "format": "date-time", "nullable": True},
                start_date={"type": "string", "format": "date-time", "nullable": True},
                end_date={"type": "string", "format": "date-time", "nullable": True},
                duration={"type": "number", "nullable": True, "description": "running seconds"},
                queued={"type": "number", "nullable": True, "description": "seconds from queued to start"},
            ),
        },
        tasks={"type": "array", "items": {"type": "string"}, "description": "topological order"},
        task_durations={
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "number", "nullable": True}},
            "description": "per task, running seconds in each run (aligned with runs; null: did not"
            " finish); a mapped task from its first instance's start to its last one's end",
        },
        task_queued={
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "number", "nullable": True}},
            "description": "per task, seconds from queued to start in each run",
        },
    ),
    "LogChunks": _obj(
        try_number=INT,
        chunks={
            "type": "array",
            "items": _obj(
                seq=INT,
                text={"type": "string"},
                at={"type": "string", "nullable": True, "description": "when the worker sent it"},
            ),
        },
        offset={**INT, "description": "last seq returned: pass it back as ?offset= to get what follows"},
        more={"type": "boolean"},
        finished={"type": "boolean"},
        state={"type": "string"},
    ),
    "ClearResult": _obj(
        cleared={"type": "array", "items": {"type": "object"}},
        skipped={"type": "array", "items": {"type": "object"}},
        runs_requeued={"type": "array", "items": {"type": "string"}},
        dry_run={"type": "boolean"},
    ),
    "Backfill": _obj(
        id=INT,
        dag_id={"type": "string"},
        state={"type": "string"},
        from_date={"type": "string"},
        to_date={"type": "string"},
        progress={"type": "object"},
    ),
    "BackfillPlan": _obj(
        dag_id={"type": "string"},
        to_create={
            "type": "array",
            "items": _obj(
                logical_date={"type": "string"},
                data_interval_start={"type": "string"},
                data_interval_end={"type": "string"},
            ),
        },
        to_rerun={"type": "array", "items": {"type": "string"}},
        existing={"type": "array", "items": {"type": "string"}},
        total=INT,
    ),
    "DeadLetter": _obj(
        id=INT,
        state={"type": "string", "enum": ["dead", "requeued", "discarded"]},
        received_at={"type": "string", "format": "date-time"},
        queue={"type": "string", "description": "the queue it was dead-lettered from"},
        reason={"type": "string"},
        deliveries={**INT, "description": "times it had been delivered"},
        message_id={"type": "string", "nullable": True},
        message_type={
            "type": "string",
            "nullable": True,
            "description": "task, result...; null: unparseable",
        },
        dag_id={"type": "string", "nullable": True},
        run_id={"type": "string", "nullable": True},
        task_id={"type": "string", "nullable": True},
        map_index={**INT, "nullable": True},
        try_number={**INT, "nullable": True},
        body_size=INT,
        preview={"type": "string", "description": "the payload's start as text, control characters escaped"},
        state_by={"type": "string", "nullable": True},
        state_at={"type": "string", "format": "date-time", "nullable": True},
    ),
    "DeadLetterDetail": {
        "allOf": [
            {"$ref": "#/components/schemas/DeadLetter"},
            _obj(
                content_type={"type": "string", "nullable": True},
                headers={"type": "object"},
                truncated={"type": "boolean", "description": "only the body's first 1 MiB was kept"},
                body={"type": "string", "description": "the payload as text (JSON pretty-printed)"},
                body_base64={"type": "string", "description": "the payload exactly, base64"},
            ),
        ]
    },
    "Connection": _obj(
        conn_id={"type": "string"},
        conn_type={"type": "string"},
        description={"type": "string", "nullable": True},
        host={"type": "string", "nullable": True},
        port={**INT, "nullable": True},
        login={"type": "string", "nullable": True},
        schema={"type": "string", "nullable": True},
        extra={"type": "object", "description": "values under sensitive keys read ***"},
        allowed_dag_ids={
            "type": "array",
            "items": {"type": "string"},
            "nullable": True,
            "description": "DAGs whose tasks may read it; null: every DAG",
        },
        password_set={"type": "boolean", "description": "the password itself is never returned"},
        updated_at={"type": "string", "format": "date-time"},
    ),
    "ConnectionSummary": _obj(
        conn_id={"type": "string"},
        conn_type={"type": "string"},
        description={"type": "string", "nullable": True},
        host={"type": "string", "nullable": True},
        port={**INT, "nullable": True},
        login={"type": "string", "nullable": True},
        schema={"type": "string", "nullable": True},
        password_set={"type": "boolean"},
        extra_set={"type": "boolean"},
        allowed_dag_ids={"type": "array", "items": {"type": "string"}, "nullable": True},
        updated_at={"type": "string", "format": "date-time"},
    ),
    "ConnectionInput": {
        **_obj(
            conn_id={"type": "string", "description": "POST only: 1-250 of A-Z a-z 0-9 _ . -"},
            uri={"type": "string", "description": "type://login:password@host:port/schema?extra=..."},
            conn_type={"type": "string"},
            description={"type": "string", "nullable": True},
            host={"type": "string", "nullable": True},
            port={**INT, "nullable": True},
            login={"type": "string", "nullable": True},
            password={
                "type": "string",
                "nullable": True,
                "description": "PATCH: left out keeps the stored password, null clears it",
            },
            schema={"type": "string", "nullable": True},
            extra={
                "oneOf": [{"type": "object"}, {"type": "string"}],
                "description": "a JSON object (or its text); *** where a sensitive value was keeps it",
            },
            allowed_dag_ids={"type": "array", "items": {"type": "string"}, "nullable": True},
        ),
        "additionalProperties": False,
    },
    "ConnectionType": _obj(
        conn_type={"type": "string"},
        label={"type": "string"},
        fields={"type": "array", "items": {"type": "string"}},
        hints={"type": "object", "additionalProperties": {"type": "string"}},
        testable={"type": "boolean"},
    ),
    "ProbeResult": _obj(ok={"type": "boolean"}, message={"type": "string"}, seconds={"type": "number"}),
    "Variable": _obj(
        key={"type": "string"},
        value={"type": "string", "description": "*** when the key looks sensitive"},
        sensitive={"type": "boolean"},
        description={"type": "string", "nullable": True},
        updated_at={"type": "string", "format": "date-time"},
    ),
    "VariableInput": {
        **_obj(
            key={"type": "string", "description": "POST only"},
            value={"description": "text, or any JSON value (stored as its JSON text)"},
            description={"type": "string", "nullable": True},
        ),
        "additionalProperties": False,
    },
}


CONN = _param("conn_id")
VAR_KEY = _param("key")
CONFLICT = {"409": {"$ref": "#/components/responses/Conflict"}}
NO_KEY = {"503": {"$ref": "#/components/responses/NoFernetKey"}}


def _secret_op(summary: str, response: dict[str, Any], *, extra: dict[str, Any], **kw: Any) -> dict[str, Any]:
    op = _op(summary, response, role="op", **kw)
    op["responses"].update(extra)
    return op


def _integration_paths() -> dict[str, Any]:
    conn = _json(_ref("Connection"))
    var = _json(_ref("Variable"))
    deleted = _json(_obj(deleted={"type": "string"}))
    return {
        "/connection-types": {
            "get": _op(
                "Installed connection types: label, form fields and hints, whether they can be tested",
                _json(_obj(connection_types={"type": "array", "items": _ref("ConnectionType")})),
                role="op",
            )
        },
        "/connections": {
            "get": _op(
                "Stored connections (never a password: password_set says whether one is stored)",
                _json(_obj(connections={"type": "array", "items": _ref("ConnectionSummary")})),
                role="op",
            ),
            "post": _secret_op(
                "Create a connection from fields or a uri (409 if the id exists)",
                _json(_ref("Connection"), "Created"),
                body=_ref("ConnectionInput"),
                status="201",
                extra={**CONFLICT, **NO_KEY},
            ),
        },
        "/connections/{conn_id}": {
            "get": _secret_op("One connection, browser-safe", conn, params=[CONN], extra=NO_KEY),
            "patch": _secret_op(
                "Change fields; a password left out is kept, null clears it",
                conn,
                params=[CONN],
                body=_ref("ConnectionInput"),
                extra=NO_KEY,
            ),
            "delete": _op("Delete a connection", deleted, params=[CONN], role="op"),
        },
        "/connections/{conn_id}/test": {
            "post": _secret_op(
                "Reach the system the connection points at (a database: SELECT 1)",
                _json(_ref("ProbeResult")),
                params=[CONN],
                extra=NO_KEY,
            )
        },
        "/variables": {
            "get": _secret_op(
                "Variables (values of sensitive keys read ***)",
                _json(_obj(variables={"type": "array", "items": _ref("Variable")})),
                extra=NO_KEY,
            ),
            "post": _secret_op(
                "Create a variable (409 if the key exists)",
                _json(_ref("Variable"), "Created"),
                body=_ref("VariableInput"),
                status="201",
                extra={**CONFLICT, **NO_KEY},
            ),
        },
        "/variables/{key}": {
            "get": _secret_op("One variable", var, params=[VAR_KEY], extra=NO_KEY),
            "patch": _secret_op(
                "Change the value or the description (a field left out is kept)",
                var,
                params=[VAR_KEY],
                body=_ref("VariableInput"),
                extra=NO_KEY,
            ),
            "delete": _op("Delete a variable", deleted, params=[VAR_KEY], role="op"),
        },
    }


def _paths() -> dict[str, Any]:
    run_path = "/dags/{dag_id}/runs/{run_id}"
    ti_path = run_path + "/tasks/{task_id}"
    return {
        "/me": {
            "get": _op(
                "The calling user and role", _json(_obj(username={"type": "string"}, role={"type": "string"}))
            )
        },
        "/dags": {
            "get": _op(
                "List active DAGs with their recent runs",
                _json(_obj(dags={"type": "array", "items": _ref("Dag")}, total=INT, tags={"type": "array"})),
                params=[
                    _param("q", "query", description="search in id, owner, description"),
                    _param("tag", "query"),
                    _param("paused", "query", {"type": "boolean"}),
                    _param("dag_id", "query", description="repeatable: only these DAGs"),
                    LIMIT,
                    OFFSET,
                ],
            )
        },
        "/dags/{dag_id}": {
            "get": _op(
                "One DAG, with its serialized tasks and params", _json(_ref("DagDetail")), params=[DAG]
            ),
            "patch": _op(
                "Pause or unpause",
                _json(_ref("DagDetail")),
                params=[DAG],
                body=_obj(is_paused={"type": "boolean"}),
                role="op",
            ),
        },
        "/dags/{dag_id}/versions": {
            "get": _op(
                "The DAG's versions, newest first, with when each appeared and how many runs used it",
                _json(_obj(versions={"type": "array", "items": _ref("DagVersion")})),
                params=[DAG, LIMIT],
            )
        },
        "/dags/{dag_id}/versions/{number}": {
            "get": _op(
                "One version of the DAG: its serialized form and source as the DAG processor stored them",
                _json(_ref("DagVersionDetail")),
                params=[DAG, _param("number", schema=INT, description="the version number")],
            )
        },
        "/dags/{dag_id}/grid": {
            "get": _op(
                "Latest runs x tasks states (the grid view), filtered by run type and run state",
                _json({"type": "object"}),
                params=[
                    DAG,
                    _param("limit", "query", INT, "the latest N runs (1 to 365, default 25)"),
                    _param("run_type", "query", description="only runs of this type"),
                    _param("state", "query", description="only runs in this state"),
                    _param(
                        "compact",
                        "query",
                        {"type": "boolean"},
                        "cells (one letter per task and run, see state_codes) instead of states",
                    ),
                ],
            )
        },
        "/dags/{dag_id}/durations": {
            "get": _op(
                "Run and task durations over the latest runs (the Durations chart)",
                _json(_ref("Durations")),
                params=[
                    DAG,
                    _param("limit", "query", INT, "how many of the latest runs (1-365, default 25)"),
                ],
            )
        },
        "/dags/{dag_id}/clear": {
            "post": _op(
                "Clear task instances in every run of the DAG",
                _json(_ref("ClearResult")),
                params=[DAG],
                body=CLEAR_BODY,
                role="op",
            )
        },
        "/dags/{dag_id}/runs": {
            "get": _op(
                "Runs of a DAG, newest first",
                _json(_obj(runs={"type": "array", "items": _ref("Run")}, total=INT)),
                params=[DAG, _param("state", "query"), _param("run_type", "query"), LIMIT, OFFSET],
            ),
            "post": _with_conflict(
                _op(
                    "Trigger a run; conf keys naming a param keep its JSON type (else 400 names the field);"
                    " 409 if the DAG already has a run with that run id or logical date",
                    _json(_ref("Run"), "Created"),
                    params=[DAG],
                    role="op",
                    status="201",
                    body=_obj(
                        conf={"type": "object"},
                        run_id={"type": "string"},
                        logical_date={"type": "string", "format": "date-time"},
                    ),
                )
            ),
        },
        "/dags/{dag_id}/events": {
            "post": _with_conflict(
                _event_op(
                    _op(
                        "Webhook event for a DAG with a WebhookTrigger: the JSON body becomes the run's conf"
                        " (checked like a trigger's: 400 names the field). One run per event key (the"
                        " Idempotency-Key header, else the trigger's dedupe_key body field, else a hash of"
                        " the body): 201 with the new run, or 200 with the run the key already has"
                        " (duplicate: true); 409 if the DAG is paused",
                        _json(_ref("Run"), "Created"),
                        params=[
                            DAG,
                            {
                                "name": "Idempotency-Key",
                                "in": "header",
                                "required": False,
                                "schema": {"type": "string", "maxLength": 255},
                            },
                        ],
                        role="op",
                        status="201",
                        body={"type": "object", "additionalProperties": True},
                    )
                )
            ),
        },
        run_path: {"get": _op("One run, with its task states", _json(_ref("Run")), params=[DAG, RUN])},
        run_path + "/clear": {
            "post": _op(
                "Clear task instances of one run",
                _json(_ref("ClearResult")),
                params=[DAG, RUN],
                body=CLEAR_BODY,
                role="op",
            )
        },
        run_path + "/gantt": {
            "get": _op(
                "Queued and running spans of each task instance of a run (the Gantt chart)",
                _json(_ref("Gantt")),
                params=[DAG, RUN],
            )
        },
        run_path + "/tasks": {
            "get": _op(
                "Task instances of a run (topological order, a mapped task's instances by map index)",
                _json(_obj(task_instances={"type": "array", "items": _ref("TaskInstance")})),
                params=[DAG, RUN, _param("task_id", "query"), MAP_INDEX],
            )
        },
        ti_path: {
            "get": _op(
                "One task instance, with its tries, return value and rendered template fields (`rendered`)",
                _json(_ref("TaskInstance")),
                params=[DAG, RUN, TASK, MAP_INDEX],
            ),
            "patch": _op(
                "Mark success or failed",
                _json(_ref("TaskInstance")),
                params=[DAG, RUN, TASK, MAP_INDEX],
                body=_obj(state={"type": "string", "enum": ["success", "failed"]}),
                role="op",
            ),
        },
        ti_path + "/clear": {
            "post": _op(
                "Clear one task instance (and its upstream/downstream if asked)",
                _json(_ref("ClearResult")),
                params=[DAG, RUN, TASK, MAP_INDEX],
                body=CLEAR_BODY,
                role="op",
            )
        },
        ti_path + "/logs/{try_number}": {
            "get": _op(
                "Log chunks of one try; tail with ?offset=<last seq seen>",
                _json(_ref("LogChunks")),
                params=[
                    DAG,
                    RUN,
                    TASK,
                    _param("try_number", schema=INT),
                    _param("offset", "query", INT),
                    MAP_INDEX,
                ],
            )
        },
        ti_path + "/logs/{try_number}/download": {
            "get": _op(
                "The whole log of one try as a text file (attachment)",
                {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                params=[DAG, RUN, TASK, _param("try_number", schema=INT), MAP_INDEX],
            )
        },
        "/import-errors": {"get": _op("DAG files that failed to load", _json({"type": "object"}))},
        "/workers": {"get": _op("Workers and their heartbeats", _json({"type": "object"}))},
        "/queues": {"get": _op("Queue depths and consumers (from the executor)", _json({"type": "object"}))},
        "/health": {
            "get": _op(
                "Database, broker and scheduler health (503 when one is not ok)",
                _json(
                    _obj(
                        ok={"type": "boolean"},
                        database={"type": "object"},
                        broker={"type": "object"},
                        scheduler={"type": "object"},
                    )
                ),
            )
        },
        "/backfills": {
            "get": _op(
                "Backfills with their progress",
                _json(_obj(backfills={"type": "array", "items": _ref("Backfill")})),
                params=[_param("dag_id", "query"), _param("state", "query"), LIMIT],
            ),
            "post": _with_dry_run(
                _op(
                    "Backfill a DAG over a range of logical dates (as `hareflow dags backfill`); with "
                    "dry_run, only the plan: the intervals it would create, re-run and skip",
                    _json(
                        _obj(
                            dry_run={"type": "boolean"}, backfill=_ref("Backfill"), plan=_ref("BackfillPlan")
                        ),
                        "The backfill created and its plan",
                    ),
                    body=_obj(
                        dag_id={"type": "string"},
                        start={"type": "string", "format": "date-time"},
                        end={"type": "string", "format": "date-time"},
                        max_active_runs={**INT, "minimum": 1, "default": 1},
                        rerun_failed={"type": "boolean", "default": False},
                        dry_run={"type": "boolean", "default": False},
                    ),
                    role="op",
                    status="201",
                )
            ),
        },
        "/backfills/{backfill_id}/cancel": {
            "post": _op(
                "Cancel a backfill: drop its runs not started",
                _json({"type": "object"}),
                params=[_param("backfill_id", schema=INT)],
                role="op",
            )
        },
        "/openapi.json": {"get": _op("This document", _json({"type": "object"}))},
        **_dead_letter_paths(),
        **_integration_paths(),
        **_asset_paths(),
    }


def _dead_letter_paths() -> dict[str, Any]:
    dead_letter_id = _param("dead_letter_id", schema=INT)
    return {
        "/deadletters": {
            "get": _op(
                "Dead-lettered messages, newest first",
                _json(_obj(deadletters={"type": "array", "items": _ref("DeadLetter")})),
                params=[
                    _param("queue", "query", description="only those dead-lettered from this queue"),
                    _param(
                        "state",
                        "query",
                        {"type": "string", "enum": ["dead", "requeued", "discarded", "all"]},
                        "default dead: neither requeued nor discarded",
                    ),
                    LIMIT,
                    OFFSET,
                ],
            )
        },
        "/deadletters/{dead_letter_id}": {
            "get": _op(
                "One dead letter with its headers and whole payload",
                _json(_ref("DeadLetterDetail")),
                params=[dead_letter_id],
            )
        },
        "/deadletters/{dead_letter_id}/requeue": {
            "post": _with_conflict(
                _op(
                    "Publish it back to its queue (confirmed) with its original headers; 409 when "
                    "it must not be (already requeued or discarded, a task try that has ended: "
                    "clear the task instead, a body nothing can read), 503 when the broker is out of reach",
                    _json(_ref("DeadLetter")),
                    params=[dead_letter_id],
                    role="op",
                )
            )
        },
        "/deadletters/{dead_letter_id}/discard": {
            "post": _with_conflict(
                _op(
                    "Mark it discarded (it stays listed under that state); 409 if it is not dead",
                    _json(_ref("DeadLetter")),
                    params=[dead_letter_id],
                    role="op",
                )
            )
        },
    }


def _asset_paths() -> dict[str, Any]:
    asset_id = _param("asset_id", schema=INT)
    return {
        "/assets": {
            "get": _op(
                "Assets by URI: producers (dag.task), consumer DAGs and latest events",
                _json(_obj(assets={"type": "array", "items": _ref("Asset")})),
                params=[
                    _param("uri", "query", description="only the asset with this URI"),
                    _param("latest", "query", INT, "latest events per asset (default 5)"),
                ],
            )
        },
        "/assets/lineage": {
            "get": _op(
                "The lineage graph: producer DAG -> asset -> consumer DAG",
                _json(_obj(nodes={"type": "array", "items": {"type": "object"}}, edges={"type": "array"})),
            )
        },
        "/assets/{asset_id}/events": {
            "get": _op(
                "One asset and its events, newest first",
                _json(
                    _obj(
                        asset=_ref("Asset"),
                        events={"type": "array", "items": _ref("AssetEvent")},
                        total=INT,
                    )
                ),
                params=[asset_id, LIMIT, OFFSET],
            )
        },
        "/assets/events": {
            "post": _op(
                "Record an event of a known asset from outside (404 for a URI no asset has); "
                "DAGs scheduled on it react as to a producer's event",
                _json(_ref("AssetEvent"), "Created"),
                body={
                    **_obj(uri={"type": "string"}, extra={"type": "object"}),
                    "required": ["uri"],
                },
                role="op",
                status="201",
            )
        },
    }


def openapi_document() -> dict[str, Any]:
    def error(description: str) -> dict[str, Any]:
        return _json(_ref("Error"), description)

    return {
        "openapi": "3.0.3",
        "info": {
            "title": "hareflow API",
            "version": VERSION,
            "description": "Read and operate hareflow. Authenticate with a session cookie (plus the "
            "X-CSRF-Token header on writes) or 'Authorization: Bearer <token>' "
            "(`hareflow users token NAME`).",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "hareflow_session"},
            },
            "responses": {
                "BadRequest": error("A wrong input (the message says which and why)"),
                "Unauthorized": error("Not logged in and no valid token"),
                "Forbidden": error("The user's role does not allow this"),
                "NotFound": error("No such DAG, run, task, backfill, connection, variable or dead letter"),
                "Conflict": error("It exists already"),
                "NoFernetKey": error(
                    "No Fernet key is configured (the message says how: HAREFLOW_FERNET_KEY)"
                ),
            },
        },
    }
