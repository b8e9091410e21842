"""``hareflow dags versions`` (a DAG's recorded versions) and ``hareflow dags report`` (how long
each DAG file takes to parse)."""

from __future__ import annotations

from pathlib import Path

import click

from hareflow.cli.common import (
    UserError,
    get_settings,
    metastore,
    output_option,
    print_json,
    print_table,
    user_mistakes,
    when,
)
from hareflow.cli.dags import dag_id_argument, dags


@dags.command("versions")
@dag_id_argument
@output_option
def dags_versions(dag_id: str, output: str) -> None:
    """List the versions of DAG_ID, newest first: when each appeared and how many runs used it.

    A new version is recorded when the DAG's structure or its file's source changes; each run
    keeps the version it was created with (`hareflow runs show` names it).

    \b
    Example:
      hareflow dags versions daily_sales -o json
    """
    settings = get_settings()
    from hareflow.common.dag_versions import list_versions
    from hareflow.common.db import Dag
    from hareflow.common.operations import OperationError

    with metastore(settings) as sessions, sessions() as session, user_mistakes():
        dag = session.get(Dag, dag_id)
        if dag is None:
            raise OperationError(f"no DAG named {dag_id!r} (see `hareflow dags list`)")
        versions = list_versions(session, dag, limit=10_000)
    if output == "json":
        print_json([v.to_dict() for v in versions])
        return
    print_table(
        ["version", "hash", "created at", "runs", "latest", "file"],
        [
            [
                v.version_number,
                v.version_hash[:12],
                when(v.created_at),
                v.runs,
                "yes" if v.is_latest else "",
                v.fileloc,
            ]
            for v in versions
        ],
        empty=f"DAG {dag_id} has no recorded version yet: it gets one when the scheduler next parses it",
    )


@dags.command("report")
@click.option(
    "--folder",
    type=click.Path(path_type=Path),
    default=None,
    help="DAG folder to parse (default: the configured one, as the scheduler uses).",
)
@output_option
def dags_report(folder: Path | None, output: str) -> None:
    """Parse every DAG file of the DAG folder once and show how long each took, slowest first.

    Files are parsed exactly as the scheduler's DAG processor parses them (a child interpreter per
    file, the same timeout), one at a time. Nothing is stored.

    \b
    Example:
      hareflow dags report
      hareflow dags report --folder ./dags -o json
    """
    settings = get_settings()
    root = folder if folder is not None else settings.effective_dags_folder()
    if not root.is_dir():
        raise UserError(
            f"DAG folder {str(root)!r} does not exist or is not a folder "
            "(set HAREFLOW_DAGS_FOLDER, or pass --folder)"
        )
    from hareflow.scheduler.dag_report import report_folder

    timings = report_folder(root, settings.dag_file_processor_timeout)
    if output == "json":
        print_json([t.to_dict() for t in timings])
        return
    base = root.resolve()
    print_table(
        ["file", "duration", "import", "dags", "tasks", "dag ids", "errors"],
        [
            [
                _relative(t.file, base),
                f"{t.duration:.3f}s",
                "-" if t.import_duration is None else f"{t.import_duration:.3f}s",
                len(t.dag_ids),
                t.tasks,
                ",".join(t.dag_ids) or "-",
                (f"{len(t.errors)}: {t.errors[0]}" if t.errors else "-"),
            ]
            for t in timings
        ],
        empty=f"no DAG files in {base} (a DAG file is a .py file that mentions DAG or hareflow)",
    )
    total = sum(t.duration for t in timings)
    if timings:
        click.echo(f"{len(timings)} files, {sum(len(t.dag_ids) for t in timings)} DAGs, {total:.2f}s in all")


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return path
