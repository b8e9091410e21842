"""A whole DAG, or one task, run here in one process: no broker, no scheduler, no metastore.

``hareflow dags test`` and ``DAG.test()`` walk the run with the scheduler's own pure decisions
(``scheduler.decisions.evaluate_run``, hence the same trigger rules), and run every try through
the worker's own task body (``worker.child.run_task``: context from the task message, templates
rendered, callbacks, result encoding), so a DAG behaves here as it does on a worker. Upstream
return values flow to the tasks consuming them; retries run at once, without their delay. A sensor
in reschedule mode waits here, in this process, until its next poke is due, then pokes again as
the same try (its timeout spanning the reschedules, as on a worker).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from hareflow.common.dag import DAG, BaseTask, SerializedDag, resolve_params, serialize_dag
from hareflow.common.messages import TaskKey, TaskMessage
from hareflow.common.states import TaskState, WorkerOutcome, outcome_state
from hareflow.scheduler.decisions import TIView, evaluate_run
from hareflow.worker.child import run_task

DEFAULT_MAX_RESULT_BYTES = 1024 * 1024


@dataclass
class TryOutcome:
    """What one try did: its outcome, JSON result, error and rendered template fields."""

    outcome: str
    result_json: str | None
    error: str | None
    rendered_json: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # no_retry, skip_task_ids, skip_reason

    @property
    def result(self) -> Any:
        return None if self.result_json is None else json.loads(self.result_json)


@dataclass
class DagTestResult:
    """The end of a ``dags test`` run: the run's state and each task's final state and try."""

    state: str
    states: dict[str, str] = field(default_factory=dict)
    tries: dict[str, TryOutcome] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.state != "success"


class _Sink:
    """Stands in for the task process's pipe: log records go to ``out``, rendered fields are kept."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.rendered_json: str | None = None
        self.extras: dict[str, Any] = {}

    def send(self, record: tuple[Any, ...]) -> None:
        kind = record[0]
        if kind == "log":
            self.out.write(record[2])
            self.out.flush()
        elif kind == "rendered":
            self.rendered_json = record[2]
        elif kind == "extras":
            self.extras = dict(record[2])


def task_payload(
    dag: DAG,
    task: BaseTask,
    *,
    run_id: str,
    logical_date: datetime,
    conf: Mapping[str, Any],
    upstream_results: Mapping[str, Any],
    try_number: int = 1,
    data_interval: tuple[datetime | None, datetime | None] | None = None,
    map_index: int = -1,
    expand_args: Mapping[str, Any] | None = None,
    reschedules: int = 0,
    first_poke_at: float | None = None,
) -> dict[str, Any]:
    """The task message a scheduler would send for this try, as the dict a task process receives.

    The data interval is the run's when given, else the logical date alone (start = end).
    """
    start, end = data_interval if data_interval is not None else (logical_date, logical_date)
    message = TaskMessage(
        key=TaskKey(
            ti_id=0,
            dag_id=dag.dag_id,
            run_id=run_id,
            task_id=task.task_id,
            map_index=map_index,
            try_number=try_number,
        ),
        max_tries=task.max_tries,
        dag_file=dag.fileloc or "",
        queue=task.queue,
        execution_timeout=None,
        logical_date=logical_date.isoformat(),
        data_interval_start=start.isoformat() if start else None,
        data_interval_end=end.isoformat() if end else None,
        conf=dict(conf),
        params=resolve_params(dag.params, conf),
        upstream_results=dict(upstream_results),
        expand_args=dict(expand_args) if expand_args is not None else None,
        reschedules=reschedules,
        first_poke_at=first_poke_at,
    )
    return json.loads(message.encode())


def run_try(
    task: BaseTask, payload: dict[str, Any], *, max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES, out: TextIO
) -> TryOutcome:
    """Run one try of ``task`` through the worker's task body, its output going to ``out``.
    Connections and variables are read from the lookup chain in this process (environment,
    backends, the configured metastore), as the DAG (its allow-lists apply)."""
    sink = _Sink(out)
    resolver = _resolver_for(payload["key"]["dag_id"])
    outcome, result_json, error = run_task(payload, max_result_bytes, sink, loaded=task, resolver=resolver)  # type: ignore[arg-type]
    return TryOutcome(outcome, result_json, error, sink.rendered_json, sink.extras)


def _resolver_for(dag_id: str) -> Any:
    """A resolver per try, as on a worker (a try's lookups are cached for that try only)."""
    from hareflow.common.secrets.client import local_resolver

    return local_resolver(dag_id=dag_id)


@dataclass
class _TestRun:
    """One ``dags test`` run: what every try of it shares, and the results gathered so far."""

    dag: DAG
    run_id: str
    logical: datetime
    conf: Mapping[str, Any]
    max_result_bytes: int
    stream: TextIO
    say: Callable[[str], None]
    results: dict[str, Any] = field(default_factory=dict)
    tries: dict[str, TryOutcome] = field(default_factory=dict)

    def attempt(
        self,
        task: BaseTask,
        label: str,
        try_number: int,
        *,
        map_index: int = -1,
        expand_args: Mapping[str, Any] | None = None,
    ) -> tuple[TryOutcome, TaskState]:
        """Run one try of ``task`` (``label`` names it in the output); return it and its state."""
        self.say(f"--- {label} (try {try_number} of {task.max_tries})")
        payload = task_payload(
            self.dag,
            task,
            run_id=self.run_id,
            logical_date=self.logical,
            conf=self.conf,
            upstream_results={u: self.results.get(u) for u in task.input_task_ids},
            try_number=try_number,
            map_index=map_index,
            expand_args=expand_args,
        )
        outcome = run_try(task, payload, max_result_bytes=self.max_result_bytes, out=self.stream)
        while outcome.outcome == WorkerOutcome.UP_FOR_RESCHEDULE:
            # No scheduler here to hand the slot to: wait for the next poke in this process.
            wait = max(0.0, float(outcome.extras.get("reschedule_at") or 0) - time.time())
            self.say(f"--- {label}: up_for_reschedule, poking again in {wait:.1f}s")
            time.sleep(wait)
            payload = {
                **payload,
                "reschedules": int(payload.get("reschedules") or 0) + 1,
                "first_poke_at": outcome.extras.get("first_poke_at"),
            }
            outcome = run_try(task, payload, max_result_bytes=self.max_result_bytes, out=self.stream)
        no_retry = bool(outcome.extras.get("no_retry"))
        state = outcome_state(WorkerOutcome(outcome.outcome), try_number, task.max_tries, no_retry=no_retry)
        self.tries[label] = outcome
        if outcome.outcome == "success":
            self.say(f"--- {label}: success, returned {outcome.result_json or 'null'}")
        else:
            self.say(f"--- {label}: {state}: {outcome.error}")
        return outcome, state


def run_dag(
    dag: DAG,
    *,
    conf: Mapping[str, Any] | None = None,
    logical_date: datetime | None = None,
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    out: TextIO | None = None,
    echo: Callable[[str], None] | None = None,
) -> DagTestResult:
    """Run every task of ``dag`` in dependency order, here; print each task's log and result."""
    stream = out if out is not None else sys.stdout
    say = echo if echo is not None else (lambda text: print(text, file=stream, flush=True))
    logical = logical_date or datetime.now(UTC)
    run = _TestRun(dag, f"test__{logical.isoformat()}", logical, conf or {}, max_result_bytes, stream, say)
    sdag = SerializedDag.from_dict(serialize_dag(dag))
    states: dict[str, TIView] = {t.task_id: TIView(TaskState.NONE) for t in sdag.tasks}
    while True:
        decision = evaluate_run(sdag.tasks, states, logical)
        for task_id in decision.upstream_failed:
            states[task_id] = TIView(TaskState.UPSTREAM_FAILED)
            say(f"--- {task_id}: upstream_failed")
        for task_id in decision.skip:
            states[task_id] = TIView(TaskState.SKIPPED)
            say(f"--- {task_id}: skipped")
        if decision.run_state is not None:
            say(f"=== run {run.run_id} of {dag.dag_id}: {decision.run_state.value}")
            final = {task_id: ti.state for task_id, ti in states.items()}
            return DagTestResult(decision.run_state.value, final, run.tries)
        for task_id in decision.expand:
            states[task_id] = _run_mapped(run, sdag, task_id)
        ready = decision.schedule  # a retry is due at once: its next_retry_at is the run's date
        if not ready and not decision.upstream_failed and not decision.skip and not decision.expand:
            raise RuntimeError(f"dags test of {dag.dag_id} is stuck: {states}")  # never expected
        for task_id in ready:
            try_number = states[task_id].try_number + 1
            outcome, state = run.attempt(dag.get_task(task_id), task_id, try_number)
            states[task_id] = TIView(state, try_number, logical, logical if state == "up_for_retry" else None)
            if outcome.outcome != "success":
                continue
            run.results[task_id] = outcome.result
            for skipped in outcome.extras.get("skip_task_ids") or ():
                if skipped in states and states[skipped].state == TaskState.NONE:
                    states[skipped] = TIView(TaskState.SKIPPED)
                    say(f"--- {skipped}: skipped ({outcome.extras.get('skip_reason')})")


def _run_mapped(run: _TestRun, sdag: SerializedDag, task_id: str) -> TIView:
    """Expand a mapped task over its upstream values, as the scheduler does, and run each instance
    to its end (retries at once). Its output is the list of the instances' results; the task ends
    failed if an instance failed, skipped if the expansion is empty or every instance skipped."""
    from hareflow.common.dag.mapping import ExpansionError, all_elements, expansion_length, source_lists

    task = run.dag.get_task(task_id)
    spec = sdag.get_task(task_id).expand_spec
    assert spec is not None
    try:
        lists = source_lists(spec, run.results)
        expansion_length(spec, lists)  # validates what it maps over
        elements = all_elements(spec, lists)
    except ExpansionError as exc:
        run.say(f"--- {task_id}: failed: {exc}")
        return TIView(TaskState.FAILED, 1, run.logical)
    if not elements:
        run.results[task_id] = []
        run.say(f"--- {task_id}: skipped (it maps over nothing)")
        return TIView(TaskState.SKIPPED)
    outputs: list[Any] = []
    ends: list[str] = []
    for index, arguments in enumerate(elements):
        for try_number in range(1, task.max_tries + 1):
            outcome, state = run.attempt(
                task, f"{task_id}[{index}]", try_number, map_index=index, expand_args=arguments
            )
            if state != TaskState.UP_FOR_RETRY:
                break
        ends.append(state)
        outputs.append(outcome.result if outcome.outcome == "success" else None)
    run.results[task_id] = outputs
    if TaskState.FAILED in ends:
        final = TaskState.FAILED
    elif all(end == TaskState.SKIPPED for end in ends):
        final = TaskState.SKIPPED
    else:
        final = TaskState.SUCCESS
    run.say(f"--- {task_id}: {final.value} ({len(ends)} mapped instances)")
    return TIView(final, 1, run.logical)
