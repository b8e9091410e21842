"""DAG and task documentation (``doc_md``): Markdown rendered to sanitized HTML.

A DAG's author is not trusted with the viewer's browser: raw HTML in the text is shown as text
(markdown-it-py with ``html`` off), links may only be http(s), mailto or relative (markdown-it-py
already refuses ``javascript:``, ``vbscript:``, ``file:`` and ``data:``), and the HTML produced is
passed through nh3 (the Ammonia sanitizer) with an allow-list of tags, so a parser bug cannot
become script either. Images are dropped: the page's content security policy would block a remote
one anyway, and a DAG file must not make the UI fetch anything.
"""

from __future__ import annotations

import functools

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

#: The tags Markdown produces (CommonMark plus tables and strikethrough), and nothing else.
TAGS = frozenset(
    {
        "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
        "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
#: No ``style``: the content security policy refuses inline styles (a table's column alignment
#: is lost, nothing else).
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
#: Longest text rendered: a DAG's documentation is a page, not a book.
MAX_CHARS = 200_000


@functools.cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
        ["table", "strikethrough"]
    )


def render_markdown(text: str | None) -> Markup:
    """``text`` as safe HTML (an empty Markup for None or blank text)."""
    if not text or not text.strip():
        return Markup("")
    html = _parser().render(text[:MAX_CHARS])
    cleaned = nh3.clean(
        html,
        tags=set(TAGS),
        attributes={k: set(v) for k, v in ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(cleaned)  # noqa: S704 - sanitized just above
