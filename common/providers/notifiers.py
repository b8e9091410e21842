"""Notifiers: callbacks that tell people a task or a run ended, by email, webhook or Slack.

A notifier is a callable object, so it goes wherever a callback goes::

    on_failure_callback=EmailNotifier(to="ops@example.com")
    on_failure_callback=[EmailNotifier(to="ops@example.com"), SlackWebhookNotifier()]

on a task (run in the task's process, on the worker), in ``default_args``, or on the DAG (run in
the scheduler's callback child). ``call_callback`` hands it ``(context, extra)``: the exception of
a task's try, or the reason a DAG run ended.

Its ``template_fields`` are rendered with the project's Jinja environment (undefined names are
errors) from the try's context values (``ds``, ``params``, ``ti``...) plus ``dag_id``,
``task_id``, ``state``, ``exception``, ``error``, ``reason``, ``run_url`` and ``ti_url``. The links
are built from the ``base_url`` setting, read when the notifier runs; without it they are empty
strings and the default messages carry no link.

Connections are looked up when the notifier runs (``Connection.get``), where it runs. A notifier
that cannot send raises :class:`NotificationError`, whose one-line message (host:port, HTTP status,
never a password) ``call_callback`` prints to the log; the task's state is unchanged. Mistakes
visible in the DAG file (a bad address, a conn_id that is not an id, a template that does not
parse) are reported when the file loads, naming the task the notifier is attached to.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from hareflow.common.dag.callbacks import CallbackFailed
from hareflow.common.dag.templating import environment

if TYPE_CHECKING:
    from hareflow.common.secrets.connection import Connection

_ADDRESS_RE = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$|^[^@\s,;<>\"]+@localhost$")
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_TIMEOUT = 30.0  # seconds: an SMTP server or webhook that hangs must not hold a worker slot long
_METHODS = ("POST", "PUT", "PATCH")


class NotificationError(CallbackFailed):
    """A notifier could not render or send its message; the text says where and why."""


# -- what templates see -----------------------------------------------------------------------------


def _base_url() -> str:
    """The UI's address from the settings, read now (the notifier's process has no settings passed)."""
    from hareflow.common.config import ConfigError, load_settings

    try:
        return load_settings().base_url.strip().rstrip("/")
    except ConfigError:
        return ""  # a link is a nicety; a broken config must not stop the message


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The run's page in the UI, or "" without a base URL."""
    if not base_url:
        return ""
    return f"{base_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def ti_url(base_url: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The task instance's page in the UI, or "" without a base URL or a task."""
    if not base_url or not task_id:
        return ""
    url = f"{run_url(base_url, dag_id, run_id)}/tasks/{quote(task_id, safe='')}"
    return f"{url}?map_index={map_index}" if map_index >= 0 else url


def _state(ctx: Any, exception: BaseException | None, reason: str | None) -> str:
    """What ended: success, failed or up_for_retry (a task), success or failed (a DAG run)."""
    from hareflow.common.dag.exceptions import FailTask

    if not ctx.task_id:  # a DAG callback: the extra is the reason the run ended
        return "success" if reason in (None, "success") else "failed"
    if exception is None:
        return "success"
    if ctx.try_number < ctx.max_tries and not isinstance(exception, FailTask):
        return "up_for_retry"
    return "failed"


def notification_values(ctx: Any, extra: Any = None) -> dict[str, Any]:
    """Everything a notifier's templates (and ``notify``) see for this callback call."""
    from hareflow.common.dag.context import context_values

    exception = extra if isinstance(extra, BaseException) else None
    reason = extra if isinstance(extra, str) else None
    base = _base_url()
    values = context_values(ctx)
    values.update(
        ctx=ctx,
        dag_id=ctx.dag_id,
        task_id=ctx.task_id,
        map_index=ctx.map_index,
        try_number=ctx.try_number,
        state=_state(ctx, exception, reason),
        exception=exception,
        error=_one_line(exception) if exception is not None else "",
        reason=reason,
        base_url=base,
        run_url=run_url(base, ctx.dag_id, ctx.run_id),
        ti_url=ti_url(base, ctx.dag_id, ctx.run_id, ctx.task_id, ctx.map_index),
    )
    return values


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _what(values: Mapping[str, Any]) -> str:
    """``dag.task`` (``dag.task[2]`` when mapped), or ``DAG dag run <id>`` for a DAG callback."""
    if not values["task_id"]:
        return f"DAG {values['dag_id']} run {values['run_id']}"
    index = f"[{values['map_index']}]" if values["map_index"] >= 0 else ""
    return f"{values['dag_id']}.{values['task_id']}{index}"


_VERBS = {"success": "succeeded", "failed": "failed", "up_for_retry": "failed and will be retried"}


def default_subject(values: Mapping[str, Any]) -> str:
    """``[hareflow] dag.task failed`` and the like."""
    return f"[hareflow] {_what(values)} {_VERBS.get(values['state'], values['state'])}"


def default_text(values: Mapping[str, Any]) -> str:
    """A few plain lines: what ended, how, the error, the link (or how to get one)."""
    lines = [default_subject(values).removeprefix("[hareflow] ") + "."]
    lines.append(f"Run: {values['run_id']}")
    if values["logical_date"] is not None:
        lines.append(f"Logical date: {values['logical_date'].isoformat()}")
    if values["task_id"]:
        lines.append(f"Try: {values['try_number']} of {values['ctx'].max_tries}")
    if values["error"]:
        lines.append(f"Error: {values['error']}")
    if values["reason"] and values["reason"] != "success":
        lines.append(f"Reason: {values['reason']}")
    link = values["ti_url"] or values["run_url"]
    lines.append(f"Details: {link}" if link else "(set base_url in hareflow's settings for a link)")
    return "\n".join(lines) + "\n"


def default_summary(values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON a webhook gets by default."""
    logical = values["logical_date"]
    return {
        "dag_id": values["dag_id"],
        "run_id": values["run_id"],
        "task_id": values["task_id"] or None,
        "map_index": values["map_index"] if values["task_id"] else None,
        "try_number": values["try_number"] if values["task_id"] else None,
        "state": values["state"],
        "logical_date": logical.isoformat() if logical is not None else None,
        "error": values["error"] or None,
        "reason": values["reason"],
        "url": values["ti_url"] or values["run_url"] or None,
    }


# -- rendering and checks ---------------------------------------------------------------------------


def _render(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        try:
            return environment().from_string(value).render(variables)
        except jinja2.TemplateError as exc:
            raise NotificationError(f"{where}: cannot render template {value!r}: {exc}") from None
    if isinstance(value, list | tuple):
        return type(value)(_render(v, variables, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        return {k: _render(v, variables, f"{where}[{k!r}]") for k, v in value.items()}
    return value


def _syntax_problems(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        try:
            environment().parse(value)
        except jinja2.TemplateSyntaxError as exc:
            return [f"{where} is not a valid template: {exc.message}"]
        return []
    if isinstance(value, list | tuple):
        return [p for v in value for p in _syntax_problems(v, where)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _syntax_problems(v, where)]
    return []


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def _addresses(value: str | Sequence[str] | None) -> list[str]:
    """``"a@x, b@y"`` or ``["a@x", "b@y"]`` as a list."""
    if value is None:
        return []
    items = re.split(r"[,;]", value) if isinstance(value, str) else list(value)
    return [str(i).strip() for i in items if str(i).strip()]


def _address_problems(value: Any, name: str, *, required: bool) -> list[str]:
    if value is None:
        return [f"{name} is required"] if required else []
    if not isinstance(value, str) and not (
        isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    ):
        return [f"{name} must be an address, a comma-separated string or a list of them, not {value!r}"]
    found = _addresses(value)
    if required and not found:
        return [f"{name} names no address"]
    bad = [a for a in found if not _is_template(a) and not _ADDRESS_RE.match(a)]
    return [f"{name}: {a!r} is not an email address" for a in bad]


def _conn_id_problems(conn_id: Any) -> list[str]:
    if not isinstance(conn_id, str) or not _ID_RE.match(conn_id):
        return [f"conn_id {conn_id!r} is not a connection id (1-250 letters, digits, '_', '.' or '-')"]
    return []


def _connection(conn_id: str, types: tuple[str, ...], who: str) -> Connection:
    from hareflow.common.secrets.connection import Connection
    from hareflow.common.secrets.errors import SecretsError

    try:
        conn = Connection.get(conn_id)
    except SecretsError as exc:
        raise NotificationError(f"{who}: {exc}") from None
    except Exception as exc:  # a lookup backend's own failure (its database, its service)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise NotificationError(
            f"{who}: cannot look up connection {conn_id!r}: {type(exc).__name__}: {first}"
        ) from None
    if conn.conn_type not in types:
        raise NotificationError(
            f"{who}: connection {conn_id!r} has type {conn.conn_type!r}; it needs {' or '.join(types)}"
        )
    return conn


# -- the notifiers ----------------------------------------------------------------------------------


class BaseNotifier:
    """A callback object: renders its ``template_fields`` for this call, then ``notify``.

    Subclasses set ``template_fields`` and implement ``notify(context)``, where ``context`` is the
    dict templates see (:func:`notification_values`: the context values, ``ctx``, ``exception``,
    ``state``, ``run_url``...). Mistakes that the DAG file shows go in ``self.problems`` from the
    constructor: the task or DAG taking the notifier reports them when the file loads.
    """

    template_fields: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.problems: list[str] = []

    def definition_problems(self) -> list[str]:
        """What is wrong with this notifier's arguments, plus templates that do not parse."""
        found = list(self.problems)
        for name in self.template_fields:
            found += _syntax_problems(getattr(self, name, None), name)
        return found

    def __call__(self, context: Any, exception: Any = None) -> None:
        """Render, then notify; ``exception`` is the try's exception or the DAG run's reason."""
        problems = self.definition_problems()
        if problems:
            raise NotificationError(f"{type(self).__name__}: {'; '.join(problems)}")
        values = notification_values(context, exception)
        self.rendered(values).notify(values)

    def rendered(self, values: Mapping[str, Any]) -> BaseNotifier:
        """A copy with its template fields rendered (the DAG's own object stays as written)."""
        clone = copy.copy(self)
        for name in self.template_fields:
            where = f"{type(self).__name__}, field '{name}'"
            setattr(clone, name, _render(getattr(self, name), values, where))
        return clone

    def notify(self, context: dict[str, Any]) -> None:
        """Send the message; raise NotificationError with a clear one-line reason if it cannot."""
        raise NotImplementedError(f"{type(self).__name__} must implement notify(self, context)")


class EmailNotifier(BaseNotifier):
    """An email over SMTP (``smtplib``) through connection ``conn_id`` (type ``smtp``).

    The connection's host and port (default 25, 465 with ``ssl``), login and password (SMTP AUTH)
    and extra ``{"starttls": true, "ssl": true, "from": "alerts@example.com"}``. The sender is
    ``from_email``, else the extra's ``from``. Without a subject or body, a default one says what
    ended, the error and the link. With ``html_content`` the message is multipart text + HTML.
    """

    template_fields = ("to", "cc", "from_email", "subject", "html_content", "text_content")

    def __init__(
        self,
        to: str | Sequence[str],
        subject: str | None = None,
        html_content: str | None = None,
        text_content: str | None = None,
        conn_id: str = "smtp_default",
        cc: str | Sequence[str] | None = None,
        from_email: str | None = None,
    ) -> None:
        super().__init__()
        self.to, self.cc, self.from_email = to, cc, from_email
        self.subject, self.html_content, self.text_content = subject, html_content, text_content
        self.conn_id = conn_id
        self.problems += _address_problems(to, "to", required=True)
        self.problems += _address_problems(cc, "cc", required=False)
        if from_email is not None:
            self.problems += _address_problems(from_email, "from_email", required=True)
        for name in ("subject", "html_content", "text_content"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                self.problems.append(f"{name} must be a string or None, not {type(value).__name__}")
        self.problems += _conn_id_problems(conn_id)

    def message(self, context: Mapping[str, Any], sender: str) -> Any:
        """The ``EmailMessage`` to send (this object's fields already rendered)."""
        from email.message import EmailMessage

        msg = EmailMessage()
        msg["Subject"] = self.subject or default_subject(context)
        msg["From"] = sender
        msg["To"] = ", ".join(_addresses(self.to))
        if _addresses(self.cc):
            msg["Cc"] = ", ".join(_addresses(self.cc))
        text, html = self.text_content, self.html_content
        if text is None and html is None:
            text, html = default_text(context), _default_html(context)
        elif text is None:
            text = re.sub(r"<[^>]+>", "", html or "")  # a plain part for clients that want one
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        return msg

    def notify(self, context: dict[str, Any]) -> None:
        import smtplib

        conn = _connection(self.conn_id, ("smtp",), "EmailNotifier")
        extra = conn.extra
        sender = self.from_email or extra.get("from")
        if not sender:
            raise NotificationError(
                f"EmailNotifier: no sender: give from_email= or set 'from' in the extra of "
                f"connection {conn.conn_id!r}"
            )
        msg = self.message(context, str(sender))
        recipients = _addresses(self.to) + _addresses(self.cc)
        host, port = smtp_address(conn)
        where = f"SMTP {host}:{port} (connection {conn.conn_id!r})"
        try:
            with smtp_session(conn, _TIMEOUT) as smtp:
                smtp.send_message(msg, from_addr=str(sender), to_addrs=recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise NotificationError(
                f"EmailNotifier: {where} refused the login of {conn.login!r}: "
                f"{exc.smtp_code} {_smtp_text(exc)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise NotificationError(
                f"EmailNotifier: {where} answered {exc.smtp_code} {_smtp_text(exc)}"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotificationError(
                f"EmailNotifier: cannot send to {', '.join(recipients)} through {where}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        print(f"EmailNotifier: sent {msg['Subject']!r} to {', '.join(recipients)} through {where}")


def smtp_address(conn: Connection) -> tuple[str, int]:
    return conn.host or "localhost", conn.port or (465 if _flag(conn, "ssl") else 25)


def smtp_session(conn: Connection, timeout: float) -> Any:
    """An SMTP session on ``conn``, TLS and login done (``ssl``/``starttls`` from its extra): the
    one way both the notifier and ``connections test`` open one."""
    import smtplib

    host, port = smtp_address(conn)
    ssl = _flag(conn, "ssl")
    smtp = (smtplib.SMTP_SSL if ssl else smtplib.SMTP)(host, port, timeout=timeout)
    try:
        smtp.ehlo()
        if _flag(conn, "starttls") and not ssl:
            smtp.starttls()
        if conn.login:
            smtp.login(conn.login, conn.password or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


def _flag(conn: Connection, key: str) -> bool:
    """A yes/no of the connection's extra: JSON's true/false, or the text a URI's query gives."""
    value = conn.extra.get(key, False)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise NotificationError(
        f"connection {conn.conn_id!r}: extra {key!r} must be true or false, not {value!r}"
    )


def _smtp_text(exc: Any) -> str:
    error = exc.smtp_error
    return error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)


def _default_html(values: Mapping[str, Any]) -> str:
    from html import escape

    lines = default_text(values).rstrip("\n").split("\n")
    link = values["ti_url"] or values["run_url"]
    body = "".join(f"<p>{escape(line)}</p>" for line in lines[:-1])
    tail = (
        f'<p><a href="{escape(link, quote=True)}">View in hareflow</a></p>'
        if link
        else f"<p>{escape(lines[-1])}</p>"
    )
    return f"<html><body>{body}{tail}</body></html>\n"


def _connection_url(conn: Connection, path: str = "") -> str:
    """``scheme://host:port``, then the connection's own path (``schema`` when it is not the
    scheme, as a URI's path is), then ``extra["webhook_path"]``, then ``path``."""
    from hareflow.common.providers.builtin import http_base_url

    parts = [http_base_url(conn)]
    if conn.schema and conn.schema not in ("http", "https"):
        parts.append(conn.schema)
    for more in (conn.extra.get("webhook_path"), path):
        if more:
            parts.append(str(more))
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: what a message may show of a webhook (its path may be
    its secret, as a Slack webhook's is)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def _send_json(
    who: str,
    conn: Connection,
    url: str,
    shown: str,
    body: Any,
    *,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
) -> None:
    import httpx

    auth = (conn.login, conn.password or "") if conn.login else None
    all_headers = {**(conn.extra.get("headers") or {}), **(headers or {})}
    try:
        response = httpx.request(method, url, json=body, headers=all_headers, auth=auth, timeout=_TIMEOUT)
    except httpx.HTTPError as exc:
        raise NotificationError(
            f"{who}: {method} {shown} (connection {conn.conn_id!r}) failed: {type(exc).__name__}: {exc}"
        ) from None
    if response.status_code >= 400:
        text = response.text.strip().replace("\n", " ")[:200]
        raise NotificationError(
            f"{who}: {method} {shown} (connection {conn.conn_id!r}) answered HTTP "
            f"{response.status_code}{f': {text}' if text else ''}"
        )
    print(f"{who}: {method} {shown}: HTTP {response.status_code}")


class WebhookNotifier(BaseNotifier):
    """A JSON request (``httpx``, 30 s timeout) to connection ``conn_id`` (type http or https)
    plus ``path``. ``json`` (templated; strings inside it are rendered) defaults to a summary:
    dag_id, run_id, task_id, state, logical_date, error, url. The connection's login/password are
    sent as basic auth, its extra ``headers`` with ``headers``."""

    template_fields = ("path", "json", "headers")

    def __init__(
        self,
        conn_id: str,
        path: str = "",
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> None:
        super().__init__()
        self.conn_id, self.path, self.json = conn_id, path, json
        self.headers = dict(headers) if isinstance(headers, Mapping) else headers
        self.method = method.upper() if isinstance(method, str) else method
        self.problems += _conn_id_problems(conn_id)
        if not isinstance(path, str):
            self.problems.append(f"path must be a string, not {type(path).__name__}")
        if headers is not None and not (
            isinstance(headers, Mapping) and all(isinstance(v, str) for v in headers.values())
        ):
            self.problems.append("headers must be a dict of strings")
        if self.method not in _METHODS:
            self.problems.append(f"method {method!r} is not one of {', '.join(_METHODS)}")

    def notify(self, context: dict[str, Any]) -> None:
        conn = _connection(self.conn_id, ("http", "https"), "WebhookNotifier")
        url = _connection_url(conn, self.path)
        body = default_summary(context) if self.json is None else self.json
        _send_json("WebhookNotifier", conn, url, url, body, method=self.method, headers=self.headers)


class SlackWebhookNotifier(BaseNotifier):
    """A message to a Slack incoming webhook: ``{"text": ...}`` (and ``blocks`` when given).

    The connection (type https or http) holds the webhook's URL: written as a URI,
    ``https://hooks.slack.com/services/T000/B000/XXXX``, its path lands in ``schema``, which is
    appended to the host; or put the path in ``extra["webhook_path"]``. ``text`` defaults to one
    line saying what ended, the error and the link. Messages never show the URL's path, the
    webhook's secret.
    """

    template_fields = ("text", "blocks")

    def __init__(
        self, conn_id: str = "slack_default", text: str | None = None, blocks: list[Any] | None = None
    ) -> None:
        super().__init__()
        self.conn_id, self.text, self.blocks = conn_id, text, blocks
        self.problems += _conn_id_problems(conn_id)
        if text is not None and not isinstance(text, str):
            self.problems.append(f"text must be a string or None, not {type(text).__name__}")
        if blocks is not None and not isinstance(blocks, list):
            self.problems.append(f"blocks must be a list (Slack's Block Kit) or None, not {blocks!r}")

    def notify(self, context: dict[str, Any]) -> None:
        conn = _connection(self.conn_id, ("https", "http"), "SlackWebhookNotifier")
        url = _connection_url(conn)
        body: dict[str, Any] = {"text": self.text if self.text is not None else _slack_text(context)}
        if self.blocks is not None:
            body["blocks"] = self.blocks
        _send_json("SlackWebhookNotifier", conn, url, _origin(url) + "/…", body)


def _slack_text(values: Mapping[str, Any]) -> str:
    text = default_subject(values)
    if values["error"]:
        text += f": {values['error']}"
    elif values["reason"] and values["reason"] != "success":
        text += f" ({values['reason']})"
    link = values["ti_url"] or values["run_url"]
    return f"{text} <{link}|View in hareflow>" if link else text
