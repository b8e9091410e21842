"""Run a DAG's ``on_success_callback`` or ``on_failure_callback`` in a child process.

Usage: ``python -P -m hareflow.common.dag.callback_child FILE [DAGS_FOLDER]`` with one JSON request
on stdin::

    {"dag_id", "kind": "success"|"failure", "reason": "success"|"task_failure"|"timed_out",
     "run_id", "logical_date", "data_interval_start", "data_interval_end" (ISO 8601|null), "conf"}

The scheduler starts it (``hareflow.scheduler.dag_callbacks``) once a run has finished, so user code
never runs in the scheduler's own process. The callback gets a ``Context`` of the run (its
``task_id`` is empty) and, if it takes two arguments, the reason. What it prints goes to stderr;
exit status 0 when it ran (even if it raised: the traceback is printed), 1 when the DAG or its
callback could not be found, 2 for bad usage. Connections and variables resolve here from the
environment the scheduler gives it (its own settings), with the DAG's allow-lists; what the
callback prints is masked like a task's log.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Any

from hareflow.common.dag.callbacks import call_callback
from hareflow.common.dag.context import Context, resolve_params


def _date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def run_callback(path: str, request: dict[str, Any], dags_folder: str | None = None) -> int:
    """Load the DAG and call the requested callback; the exit status ``main`` returns."""
    from hareflow.common.dag.loader import load_dag_file

    result = load_dag_file(path, dags_folder=dags_folder)
    dag = next((d for d in result.dags if d.dag_id == request["dag_id"]), None)
    if dag is None:  # the file changed, or no longer defines the DAG
        errors = "; ".join(e.message for e in result.errors) or "not defined there any more"
        print(f"cannot load DAG {request.get('dag_id')!r} from {path}: {errors}", file=sys.stderr)
        return 1
    callback = getattr(dag, f"on_{request['kind']}_callback", None)
    if callback is None:
        print(f"DAG {dag.dag_id!r} has no on_{request['kind']}_callback any more", file=sys.stderr)
        return 1
    conf = request.get("conf") or {}
    ctx = Context(
        dag_id=dag.dag_id,
        task_id="",
        run_id=request["run_id"],
        logical_date=_date(request.get("logical_date")),
        data_interval_start=_date(request.get("data_interval_start")),
        data_interval_end=_date(request.get("data_interval_end")),
        params=resolve_params(dag.params, conf),
        conf=conf,
    )
    name = f"on_{request['kind']}_callback of DAG {dag.dag_id!r}"
    from hareflow.common.secrets.client import local_resolver, set_resolver

    set_resolver(local_resolver(dag_id=dag.dag_id))  # the DAG's allow-lists apply here too
    call_callback(callback, ctx, request.get("reason"), name)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print(
            "usage: python -P -m hareflow.common.dag.callback_child DAG_FILE [DAGS_FOLDER]", file=sys.stderr
        )
        return 2
    request = json.loads(sys.stdin.read())
    from hareflow.common.secrets.masking import MaskedStream

    # The callback's prints are its log, with the secrets it looked up masked.
    sys.stdout = sys.stderr = MaskedStream(sys.__stderr__)  # type: ignore[assignment]
    return run_callback(args[0], request, args[1] if len(args) == 2 else None)


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    os._exit(status)  # a thread the callback started must not keep this process alive
