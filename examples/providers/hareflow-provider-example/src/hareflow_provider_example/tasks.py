"""``KvPutTask``: store a value in the kv service; the result is what the service then holds."""

from __future__ import annotations

from typing import Any, Unpack

from hareflow.common.dag.settings import TaskSettings

from hareflow import BaseTask, Context, DagDefinitionError
from hareflow_provider_example.hook import KvHook


class KvPutTask(BaseTask):
    """Puts ``value`` under ``key`` through connection ``conn_id``; both are templates."""

    template_fields = ("key", "value")

    def __init__(
        self, task_id: str, conn_id: str, *, key: str, value: Any, **settings: Unpack[TaskSettings]
    ) -> None:
        if not isinstance(key, str) or not key:
            raise DagDefinitionError.here(f"key of task '{task_id}' must be a non-empty string, not {key!r}")
        self.conn_id = conn_id
        self.key = key
        self.value = value
        super().__init__(task_id, **settings)

    def execute(self, ctx: Context) -> Any:
        hook = KvHook(self.conn_id)
        hook.put_value(self.key, self.value)
        stored = hook.get_value(self.key)
        print(f"stored {self.key!r} = {stored!r}")
        return {"key": self.key, "value": stored}
