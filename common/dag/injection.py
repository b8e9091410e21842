"""Context by parameter name: which parameters of a task function the run-time context fills.

A parameter named after a context value (``ds``, ``params``, ``ti``...; see ``CONTEXT_NAMES``)
that the call does not bind is filled from the context at run time, whether or not it has a
default, as in Airflow; an argument passed explicitly wins. ``**context`` (any ``**`` parameter)
receives every context value no named parameter took. A parameter with no default that is neither
bound by the call nor a context name is refused at parse time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hareflow.common.dag.context import CONTEXT_NAMES, Context, context_values
from hareflow.common.dag.errors import DagDefinitionError

CTX_PARAMETER = "ctx"
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def is_ctx(param: inspect.Parameter) -> bool:
    """Whether ``param`` receives the :class:`Context` object itself (a parameter named ``ctx``)."""
    return param.name == CTX_PARAMETER and param.kind not in _VARIADIC


def without_ctx(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` minus its ``ctx`` parameter: what a call in a DAG file binds against."""
    return signature.replace(parameters=[p for p in signature.parameters.values() if not is_ctx(p)])


def check_call(
    signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any], *, task_id: str, name: str
) -> inspect.BoundArguments:
    """Bind a call made in a DAG file; raise DagDefinitionError for an argument nothing will fill."""
    user = without_ctx(signature)
    try:
        bound = user.bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise DagDefinitionError.here(f"cannot call {name}() for task '{task_id}': {exc}") from None
    for param in user.parameters.values():
        if param.kind in _VARIADIC or param.name in bound.arguments or param.name in CONTEXT_NAMES:
            continue
        if param.default is inspect.Parameter.empty:
            valid = ", ".join(sorted(CONTEXT_NAMES | {CTX_PARAMETER}))
            raise DagDefinitionError.here(
                f"task '{task_id}': parameter '{param.name}' of {name}() gets no argument and is not "
                f"a context name; pass it in the call or use one of: {valid}"
            )
    return bound


def call_with_context(
    function: Callable[..., Any],
    signature: inspect.Signature,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    ctx: Context,
    task: Any = None,
) -> Any:
    """Call ``function`` with the call's arguments, ``ctx`` and the context values it asks for."""
    bound = without_ctx(signature).bind_partial(*args, **kwargs)
    context = context_values(ctx, task)
    named = {p.name for p in signature.parameters.values() if p.kind not in _VARIADIC}
    call_args: list[Any] = []
    call_kwargs: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            call_args.extend(bound.arguments.get(param.name, ()))
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = {k: v for k, v in context.items() if k not in named}
            call_kwargs.update({**extra, **bound.arguments.get(param.name, {})})
            continue
        if is_ctx(param):
            value: Any = ctx
        elif param.name in bound.arguments:
            value = bound.arguments[param.name]
        elif param.name in context:
            value = context[param.name]
        elif param.default is not inspect.Parameter.empty:
            value = param.default
        else:
            raise TypeError(f"{getattr(function, '__name__', 'task')}() gets no value for '{param.name}'")
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            call_kwargs[param.name] = value
        else:
            call_args.append(value)
    return function(*call_args, **call_kwargs)
