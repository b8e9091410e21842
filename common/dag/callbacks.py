"""Calling a user's callback: ``fn(ctx)``, or ``fn(ctx, extra)`` when it takes two arguments.

Task callbacks get the exception as ``extra`` (None on success); DAG callbacks get the reason the
run ended. A callback setting may also be a list of callables, called in order; each one that
raises has its traceback printed to stderr (the try's or the callback process's log), the next one
still runs, and none changes what happened. A callback raising :class:`CallbackFailed` (a notifier
that could not send) has its one-line message printed instead of a traceback.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from collections.abc import Callable
from typing import Any

Callbacks = Callable[..., Any] | list[Callable[..., Any]]


class CallbackFailed(Exception):  # noqa: N818 - it says what happened, like TaskFailed
    """Raised by a callback whose failure is fully said by its message (no traceback printed)."""


def takes_extra(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a second positional argument (two named ones, or ``*args``)."""
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def check_callbacks(value: Any, name: str, where: str) -> Callbacks | None:
    """The setting ``name`` of ``where`` as stored: None, one callable or a list of callables.

    An empty list is None. A callable that can tell its own definition mistakes (a notifier's
    ``definition_problems()``) is asked here, so they are found when the DAG file loads.
    """
    from hareflow.common.dag.errors import DagDefinitionError

    if value is None:
        return None
    items = list(value) if isinstance(value, list | tuple) else [value]
    for item in items:
        if not callable(item):
            raise DagDefinitionError.here(
                f"{name} of {where} must be callable, a list of callables or None, not {item!r}"
            )
        problems = getattr(item, "definition_problems", None)
        found = problems() if callable(problems) else None
        if found:
            raise DagDefinitionError.here(f"{name} of {where}: {type(item).__name__}: {'; '.join(found)}")
    if not isinstance(value, list | tuple):
        return value  # type: ignore[no-any-return]
    return items or None


def call_callback(fn: Callbacks | None, ctx: Any, extra: Any, name: str) -> None:
    """Call ``fn`` (each of them, for a list) if set; ``name`` says which callback it is in the
    message when one raises."""
    if fn is None:
        return
    if isinstance(fn, list | tuple):
        for index, one in enumerate(fn):
            call_callback(one, ctx, extra, f"{name}[{index}]" if len(fn) > 1 else name)
        return
    try:
        if takes_extra(fn):
            fn(ctx, extra)
        else:
            fn(ctx)
    except CallbackFailed as exc:
        print(f"{name} raised: {type(exc).__name__}: {exc}", file=sys.stderr)
    except Exception:
        print(f"{name} raised:\n{traceback.format_exc()}", end="", file=sys.stderr)
