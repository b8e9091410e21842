"""Wiring for the long-running scheduler and results-consumer processes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from hareflow.common.broker import Executor, make_executor
from hareflow.common.config import Settings
from hareflow.common.db import create_engine_for, make_session_factory
from hareflow.common.db.migrate import status
from hareflow.common.health import HealthReporter, progress_probe
from hareflow.common.messages import StateEvent
from hareflow.common.metrics import start_exporter
from hareflow.scheduler.dag_processor import DagProcessor
from hareflow.scheduler.dead_letters import DeadLetterRecorder
from hareflow.scheduler.event_triggers import TriggerConsumer
from hareflow.scheduler.lookups import LookupServer
from hareflow.scheduler.loop import Scheduler
from hareflow.scheduler.results import ResultsConsumer
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


class SchemaNotCurrent(RuntimeError):
    pass


def open_metastore(settings: Settings) -> sessionmaker[Session]:
    """Connect and check the schema is at head (a clear error if not)."""
    engine = create_engine_for(settings.effective_database_url)
    st = status(engine)
    if not st.is_current:
        raise SchemaNotCurrent(
            f"the metastore schema is at {st.current or 'nothing'}, not {st.head}: run `hareflow db migrate`"
        )
    return make_session_factory(engine)


def _thread(target: object, name: str, *args: object) -> threading.Thread:
    t = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
    t.start()
    return t


def run_scheduler(
    settings: Settings,
    stop: threading.Event,
    *,
    executor: Executor | None = None,
    sessions: sessionmaker[Session] | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Run DAG processing, the scheduler loop and (by default) the results consumer until ``stop``."""
    sessions = sessions or open_metastore(settings)
    own_executor = executor is None
    executor = executor or make_executor(settings, connection_name="hareflow-scheduler")
    if own_executor:
        executor.start()
    scheduler = Scheduler(settings=settings, session_factory=sessions, executor=executor)

    def on_results(events: Sequence[StateEvent]) -> None:  # also published: their copies come back
        scheduler.on_events(events)

    def on_runs(events: Sequence[StateEvent]) -> None:  # event runs were created: start them now
        scheduler.on_events(events, echoed=False)
        executor.publish_events(events)  # the other schedulers and the web servers

    triggers = TriggerConsumer(
        settings=settings, session_factory=sessions, executor=executor, on_created=on_runs
    )

    def on_dags(events: Sequence[StateEvent]) -> None:  # only handed over here
        scheduler.on_events(events, echoed=False)
        triggers.dags_changed()

    def on_broadcast(event: StateEvent) -> None:
        scheduler.on_broadcast([event])
        triggers.on_event(event)  # a DAG paused or unpaused in the web or CLI

    executor.subscribe_events(on_broadcast)
    executor.serve_lookups(LookupServer(settings, sessions).handle)
    threads = []
    # A pass normally ends within the idle wait; a minute without one means it is stuck (or the
    # metastore has been down that long).
    pass_limit = max(60.0, 3 * settings.scheduler_idle_wait)
    reporters = [
        HealthReporter(
            settings.home,
            "scheduler",
            progress_probe(lambda: scheduler.last_pass, pass_limit, "scheduler pass"),
        )
    ]
    if settings.run_results_consumer:
        consumer = ResultsConsumer(
            executor=executor, session_factory=sessions, settings=settings, on_change=on_results
        )
        consumer.start()
        threads.append(_thread(consumer.run, "hareflow-results", stop))
        threads.append(_thread(_start_recorder(executor, sessions).run, "hareflow-dead-letters", stop))
        reporters.append(_results_health(settings, consumer))
    processor = DagProcessor(settings=settings, session_factory=sessions, on_change=on_dags)
    log.info("DAG folder: %s", processor.folder)
    # Parsing never holds up scheduling: the first scan runs in the processor's thread too, and each
    # file's DAGs are stored (and scheduled) as soon as that file is parsed.
    threads.append(_thread(processor.run, "hareflow-dag-processor", stop))
    threads.append(_thread(triggers.run, "hareflow-event-triggers", stop))
    for reporter in reporters:
        reporter.start()
    exporter = start_exporter(settings)
    if ready is not None:
        ready.set()
    try:
        scheduler.run(stop)
    finally:
        stop.set()
        exporter.close()
        for reporter in reporters:
            reporter.stop()
        for t in threads:
            t.join(timeout=10)
        if own_executor:
            executor.close()


def run_results(settings: Settings, stop: threading.Event) -> None:
    """Run only the results consumer (scale it out beside schedulers started with it off)."""
    sessions = open_metastore(settings)
    executor = make_executor(settings, connection_name="hareflow-results")
    executor.start()
    consumer = ResultsConsumer(executor=executor, session_factory=sessions, settings=settings)
    consumer.start()
    recorder = _thread(_start_recorder(executor, sessions).run, "hareflow-dead-letters", stop)
    executor.serve_lookups(LookupServer(settings, sessions).handle)  # any control-plane process may answer
    reporter = _results_health(settings, consumer).start()
    exporter = start_exporter(settings)
    try:
        consumer.run(stop)
    finally:
        stop.set()
        recorder.join(timeout=10)
        exporter.close()
        reporter.stop()
        executor.close()


def _start_recorder(executor: Executor, sessions: sessionmaker[Session]) -> DeadLetterRecorder:
    """Dead letters are recorded wherever results are: every results consumer records them too."""
    recorder = DeadLetterRecorder(executor=executor, session_factory=sessions)
    recorder.start()
    return recorder


def _results_health(settings: Settings, consumer: ResultsConsumer) -> HealthReporter:
    # A cycle ends every half second when idle; a minute without one: stuck or the metastore is down.
    return HealthReporter(
        settings.home, "results", progress_probe(lambda: consumer.last_cycle, 60.0, "results cycle")
    )
