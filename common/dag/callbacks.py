"""Calling a user's callback: ``fn(ctx)``, or ``fn(ctx, extra)`` when it takes two arguments.

Task callbacks get the exception as ``extra`` (None on success); DAG callbacks get the reason the
run ended. A callback that raises has its traceback printed to stderr (the try's or the callback
process's log) and never changes what happened.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from collections.abc import Callable
from typing import Any


def takes_extra(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a second positional argument (two named ones, or ``*args``)."""
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def call_callback(fn: Callable[..., Any] | None, ctx: Any, extra: Any, name: str) -> None:
    """Call ``fn`` if set; ``name`` says which callback it is in the message when it raises."""
    if fn is None:
        return
    try:
        if takes_extra(fn):
            fn(ctx, extra)
        else:
            fn(ctx)
    except Exception:
        print(f"{name} raised:\n{traceback.format_exc()}", end="", file=sys.stderr)
