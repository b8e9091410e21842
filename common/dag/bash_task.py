"""``BashTask``: runs a shell command, streaming its output to ``sys.stdout`` as it comes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any, Unpack

from hareflow.common.dag.context import Context
from hareflow.common.dag.dag import DAG
from hareflow.common.dag.errors import DagDefinitionError, TaskFailed
from hareflow.common.dag.settings import TaskSettings
from hareflow.common.dag.task import BaseTask
from hareflow.common.dag.templating import check_template_syntax


class BashTask(BaseTask):
    """Runs ``bash -c bash_command``; the result is the last non-empty line printed on stdout.

    ``env`` is added to the inherited environment, together with HAREFLOW_DAG_ID, HAREFLOW_TASK_ID,
    HAREFLOW_RUN_ID, HAREFLOW_TRY_NUMBER and HAREFLOW_LOGICAL_DATE. A non-zero exit fails the try.
    ``bash_command`` and ``env`` are Jinja2 templates (``echo {{ ds }}``), rendered on the worker.
    """

    template_fields = ("bash_command", "env")

    def __init__(
        self,
        task_id: str,
        bash_command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        dag: DAG | None = None,
        **settings: Unpack[TaskSettings],
    ) -> None:
        if not isinstance(bash_command, str) or not bash_command.strip():
            raise DagDefinitionError.here(f"bash_command of task '{task_id}' must be a non-empty string")
        if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise DagDefinitionError.here(f"env of task '{task_id}' must map strings to strings")
        check_template_syntax(bash_command, f"bash_command of task '{task_id}'")
        check_template_syntax(env, f"env of task '{task_id}'")
        self.bash_command = bash_command
        self.env: dict[str, str] | None = dict(env) if env is not None else None
        self.cwd = os.fspath(cwd) if cwd is not None else None
        super().__init__(task_id, dag=dag, **settings)

    def serialize_extra(self) -> dict[str, Any]:
        return {"bash_command": self.bash_command}

    def build_env(self, ctx: Context) -> dict[str, str]:
        """The child's environment: inherited, plus ``env``, plus the HAREFLOW_* run variables."""
        environment = {**os.environ, **(self.env or {})}
        environment.update(
            HAREFLOW_DAG_ID=ctx.dag_id,
            HAREFLOW_TASK_ID=ctx.task_id,
            HAREFLOW_RUN_ID=ctx.run_id,
            HAREFLOW_TRY_NUMBER=str(ctx.try_number),
            HAREFLOW_LOGICAL_DATE=ctx.logical_date.isoformat() if ctx.logical_date else "",
        )
        return environment

    def execute(self, ctx: Context) -> str | None:
        """Run the command to completion; raise TaskFailed on a non-zero exit code."""
        out = sys.stdout
        lock = threading.Lock()
        last_line: list[str] = []

        def pump(stream: IO[str], remember: bool) -> None:
            for line in stream:
                with lock:
                    out.write(line if line.endswith("\n") else line + "\n")
                    out.flush()
                if remember and line.strip():
                    last_line[:] = [line.rstrip("\r\n")]

        # bash stays in our process group: a worker runs each task in a child that leads its own
        # group, so a timeout kill of that group ends bash and everything bash started.
        proc = subprocess.Popen(
            ["bash", "-c", self.bash_command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=self.build_env(ctx),
            text=True,
            errors="replace",
            bufsize=1,
        )
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            threading.Thread(target=pump, args=(proc.stdout, True), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, False), daemon=True),
        ]
        for thread in pumps:
            thread.start()
        try:
            rc = proc.wait()
            for thread in pumps:
                thread.join()
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        if rc != 0:
            raise TaskFailed(f"bash exited with code {rc}")
        return last_line[0] if last_line else None
