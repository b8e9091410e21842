"""The ``hareflow`` command: one click group an operator can live in.

Thin and lazy: every module of this package imports only click and the standard library at import
time; each command imports its subsystem (SQLAlchemy, the broker client, the scheduler, the worker)
when it runs, so ``hareflow --help`` is quick and ``hareflow worker`` never loads Flask.
"""

from __future__ import annotations

import logging

import click

from hareflow.cli import backfill as _backfill  # noqa: F401 - adds the backfill commands to `dags`
from hareflow.cli import dag_reports as _dag_reports  # noqa: F401 - adds `dags versions` and `dags report`
from hareflow.cli.assets import assets
from hareflow.cli.common import CONTEXT_SETTINGS, UserError
from hareflow.cli.config import config, version
from hareflow.cli.connections import connections
from hareflow.cli.dags import dags
from hareflow.cli.db import db
from hareflow.cli.deadletters import deadletters
from hareflow.cli.pools import pools
from hareflow.cli.providers import providers
from hareflow.cli.runs import runs
from hareflow.cli.services import health, results, scheduler, standalone, web, worker
from hareflow.cli.tasks import tasks
from hareflow.cli.users import users
from hareflow.cli.variables import variables
from hareflow.cli.workers import queues, workers

__all__ = ["UserError", "main"]


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """hareflow: Python DAGs of tasks, run by workers over RabbitMQ, recorded in a metastore.

    Settings come from HAREFLOW_* environment variables (see `hareflow config show`). A mistake
    on the command line prints one line and exits 2. Shell completion for bash:
    eval "$(_HAREFLOW_COMPLETE=bash_source hareflow)"

    \b
    Example:
      hareflow standalone          # everything on one machine, SQLite, no broker
      hareflow dags trigger example_etl --wait
    """
    # Library warnings (a broker retrying, say) must not reach a command's output through
    # logging's last-resort handler; the long-running services set up real logging themselves.
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    # Every audit row a command writes says it came from the CLI on this host.
    from hareflow.common.audit import cli_origin, set_origin

    set_origin(cli_origin())
    click.get_current_context().call_on_close(lambda: set_origin(None))


for command in (
    standalone,
    scheduler,
    results,
    worker,
    web,
    db,
    dags,
    runs,
    tasks,
    users,
    pools,
    connections,
    variables,
    providers,
    assets,
    workers,
    queues,
    deadletters,
    config,
    version,
    health,
):
    main.add_command(command)
