"""Jinja2 templates in task fields, rendered on the worker just before a try runs.

A task type lists the attributes to render in its ``template_fields`` class attribute (Airflow's
spelling); ``BashTask`` lists ``bash_command`` and ``env``. Strings are rendered, and so are the
strings nested in lists, tuples and dicts (dict values, not keys). Variables are the context
values (``ds``, ``params``, ``ti``...; see ``context_values``) plus ``macros``.

An undefined variable is an error naming the task, the field and the template (``StrictUndefined``):
a template is never left silently unrendered. The environment is a plain ``jinja2.Environment``,
not a sandbox: templates come from the DAG file, whose author already runs arbitrary Python on the
worker, and rendered values are never rendered again, so values from a trigger's conf stay data. A
sandbox would refuse nothing that matters here and cost every render.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from typing import Any

import jinja2
from hareflow.common.dag.context import Context, context_values


class TemplateRenderError(Exception):
    """A template field of a task could not be rendered (undefined variable, syntax error...)."""


@functools.cache
def environment() -> jinja2.Environment:
    """The one Jinja2 environment: strict about undefined names, no HTML escaping, newlines kept."""
    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _render(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        if "{" not in value and "\r" not in value:
            # No delimiter, no newline Jinja would normalise: the template renders to itself. The
            # common case for task arguments (paths, names), and it costs no template compilation.
            return value
        try:
            return environment().from_string(value).render(variables)
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(f"{where}: cannot render template {value!r}: {exc}") from None
    if isinstance(value, list):
        return [_render(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_render(v, variables, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        return {k: _render(v, variables, f"{where}[{k!r}]") for k, v in value.items()}
    return value


def template_fields_of(task: Any) -> tuple[str, ...]:
    """The task's ``template_fields`` as a tuple (a single string counts as one field)."""
    fields = getattr(task, "template_fields", ()) or ()
    return (fields,) if isinstance(fields, str) else tuple(fields)


def render_fields(task: Any, ctx: Context) -> dict[str, Any]:
    """Render every template field of ``task`` for this try; return ``{field: rendered value}``."""
    variables = context_values(ctx, task)
    rendered: dict[str, Any] = {}
    for name in template_fields_of(task):
        where = f"task '{ctx.task_id}', field '{name}'"
        if not hasattr(task, name):
            raise TemplateRenderError(f"{where}: in template_fields, but the task has no such attribute")
        rendered[name] = _render(getattr(task, name), variables, where)
    return rendered


def rendered_task(task: Any, ctx: Context) -> tuple[Any, dict[str, Any]]:
    """A copy of ``task`` with its template fields rendered, and the rendered values.

    The copy leaves the DAG's own task object as its file defined it, which matters when one
    process runs many tries (``dags test``); a task without template fields is returned as is.
    """
    if not template_fields_of(task):
        return task, {}
    rendered = render_fields(task, ctx)
    clone = copy.copy(task)
    for name, value in rendered.items():
        setattr(clone, name, value)
    return clone, rendered


def rendered_json(rendered: Mapping[str, Any]) -> str | None:
    """The rendered values as stored and shown (JSON; anything not JSON-native as its ``str``)."""
    if not rendered:
        return None
    return json.dumps(dict(rendered), default=_describe, ensure_ascii=False)


def _describe(value: Any) -> str:
    """A value JSON cannot hold, as the Rendered section shows it: a task argument that is another
    task reads ``<output of extract>`` (its value is substituted after rendering, never rendered)."""
    from hareflow.common.dag.task import BaseTask

    if isinstance(value, BaseTask):
        return f"<output of {value.task_id}>"
    return str(value)


def check_template_syntax(value: Any, where: str) -> None:
    """Raise DagDefinitionError (at the user's statement) if a string in ``value`` is not valid
    Jinja2: a template that cannot even be parsed is a mistake in the DAG file, found at parse time."""
    from hareflow.common.dag.errors import DagDefinitionError

    if isinstance(value, str):
        try:
            environment().parse(value)
        except jinja2.TemplateSyntaxError as exc:
            raise DagDefinitionError.here(f"{where} is not a valid template: {exc.message}") from None
    elif isinstance(value, list | tuple):
        for item in value:
            check_template_syntax(item, where)
    elif isinstance(value, dict):
        for item in value.values():
            check_template_syntax(item, where)
