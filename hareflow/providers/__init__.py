"""Short import paths for the built-in providers' hooks: ``from hareflow.providers.sql import SqlHook``.

The task types are also in ``hareflow`` itself (``from hareflow import SqlTask, HttpTask``).
"""
