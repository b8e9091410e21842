"""SQL databases: ``SqlHook``, ``SqlTask``, ``SqlCopyTask`` (see ``hareflow.common.providers.sql``)."""

from hareflow.common.providers.sql import SqlCopyTask, SqlHook, SqlTask, sqlalchemy_url

__all__ = ["SqlCopyTask", "SqlHook", "SqlTask", "sqlalchemy_url"]
