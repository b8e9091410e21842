"""Jinja filters for dates, durations and states.

Times are stored in UTC and rendered as ``<time>`` elements labelled with their zone ("UTC");
the page's script shows them in the zone the user picked in the header (UTC, the browser's, or
the DAG's), so the server needs no per-user setting. ``dt(tz, pin=True)`` renders a time in a
given zone for good (the DAG list's next run, in the DAG's zone, UTC on hover)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from hareflow.web.markdown import render_markdown
from markupsafe import Markup, escape

STATE_CLASSES = frozenset(
    {
        "none",
        "scheduled",
        "queued",
        "running",
        "success",
        "failed",
        "up_for_retry",
        "up_for_reschedule",
        "upstream_failed",
        "skipped",
        "removed",
        "cancelled",
        "lost",
        "active",
        "stopping",
        "stopped",
    }
)


def _parse(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def fmt_datetime(value: datetime | str | None) -> str:
    parsed = _parse(value)
    return "" if parsed is None else parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_time(value: datetime | str | None, tz: str | None = None, *, pin: bool = False) -> Markup:
    """A ``<time>`` element: UTC text labelled ``UTC`` (the page script re-renders it in the
    user's zone; ``tz`` is the zone "the DAG's" means for it), or with ``pin``, the text in ``tz``
    with the UTC time as its title, left alone by the script."""
    parsed = _parse(value)
    if parsed is None:
        return Markup("")
    utc = parsed.astimezone(UTC)
    iso = utc.isoformat()
    text = utc.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    zone_attr = Markup(' data-tz="%s"') % tz if tz else Markup("")
    if pin and tz and tz != "UTC":
        local = _in_zone(utc, tz)
        if local is not None:
            shown = local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or tz)
            return Markup('<time datetime="%s" data-pinned title="%s"%s>%s</time>') % (
                iso,
                text,
                zone_attr,
                shown,
            )
    return Markup('<time datetime="%s" data-ts%s>%s</time>') % (iso, zone_attr, escape(text))


def _in_zone(value: datetime, tz: str) -> datetime | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return value.astimezone(ZoneInfo(tz))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def fmt_datetime_text(value: datetime | str | None) -> str:
    """For attributes and ``<option>`` text, where an element cannot go: UTC, labelled."""
    text = fmt_datetime(value)
    return text + " UTC" if text else ""


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def fmt_ago(value: datetime | str | None) -> str:
    parsed = _parse(value)
    if parsed is None:
        return ""
    seconds = (datetime.now(UTC) - parsed).total_seconds()
    if seconds < 0:
        return "in " + fmt_duration(-seconds)
    return fmt_duration(seconds) + " ago"


def pretty_json(value: Any) -> str:
    """Indented JSON as text (autoescaped like any other text when rendered)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _json_type(value: Any) -> str:
    from hareflow.common.runs import json_type

    return json_type(value)


def state_class(state: Any) -> str:
    """A CSS class for a state; unknown values get a neutral class (never raw text in a class)."""
    return "s-" + (state if state in STATE_CLASSES else "none")


def init_filters(app: Flask) -> None:
    app.jinja_env.filters.update(
        dt=fmt_time,
        dt_text=fmt_datetime_text,
        duration=fmt_duration,
        ago=fmt_ago,
        state=state_class,
        pretty=pretty_json,
        json_type=_json_type,
        markdown=render_markdown,
    )
    app.jinja_env.globals.update(page_url=page_url)


def page_url(offset: int) -> str:
    """This page's URL with its query string, at another ``offset`` (for pagers)."""
    from flask import request, url_for

    args = request.args.to_dict()
    args["offset"] = str(offset)
    return url_for(request.endpoint or "pages.dag_list", **(request.view_args or {}), **args)
