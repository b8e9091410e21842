"""``doc_md`` rendered as sanitized Markdown on the DAG details and task instance pages: formatting
is kept, script, event handlers, ``javascript:`` links and raw HTML never reach the page."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hareflow.common.config import Settings
from hareflow.scheduler.dag_processor import DagProcessor
from hareflow.web.markdown import render_markdown
from sqlalchemy.orm import Session, sessionmaker

from tests.web.conftest import T0, Client, unique

HOSTILE = (
    "# Nightly sales\n\nLoads **orders** into the `warehouse`.\n\n"
    "* [runbook](https://runbooks.example/sales)\n* [click me](javascript:alert('link'))\n\n"
    "<script>alert('script')</script>\n\n<img src=x onerror=\"alert('img')\">\n\n"
    '<a href="https://evil.example" onclick="alert(1)">raw link</a>\n\n'
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)\n\n"
    "| table | ok |\n|---|---|\n| 1 | 2 |\n"
)


class _Elements(HTMLParser):
    """Every element of an HTML fragment: (tag, attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def _assert_neutralised(html: str) -> None:
    """No element that runs or loads anything: no script, img, iframe, svg or raw HTML element,
    no event handler or style attribute, and links only to http(s) or mailto."""
    parser = _Elements()
    parser.feed(html)
    for tag, attrs in parser.found:
        assert tag in render_markdown_tags(), (tag, attrs)
        assert not any(name.startswith("on") or name == "style" for name in attrs), (tag, attrs)
        if tag == "a":
            assert (attrs.get("href") or "").startswith(("https://", "http://", "mailto:")), attrs
    assert "<script" not in html.lower()


def _links(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Elements()
    parser.feed(html)
    return [(tag, attrs) for tag, attrs in parser.found if tag == "a"]


def render_markdown_tags() -> frozenset[str]:
    from hareflow.web.markdown import TAGS

    return TAGS


def test_markdown_is_rendered_and_hostile_html_is_neutralised() -> None:
    html = str(render_markdown(HOSTILE))

    assert "<h1>Nightly sales</h1>" in html and "<strong>orders</strong>" in html
    assert "<code>warehouse</code>" in html and "<table>" in html
    assert '<a href="https://runbooks.example/sales" rel="noopener noreferrer nofollow">runbook</a>' in html
    assert "&lt;script&gt;" in html  # raw HTML is shown as text, not run
    assert "evil.example" not in html.split("&lt;a href")[0]  # the raw link is text, not a link
    _assert_neutralised(html)
    assert [tag for tag, _ in _links(html)] == ["a"]  # the runbook; not the javascript: or data: ones
    assert str(render_markdown(None)) == "" and str(render_markdown("  ")) == ""


@pytest.mark.parametrize(
    "text",
    [
        '<a href="javascript:alert(1)">x</a>',
        "[x](JaVaScRiPt:alert(1))",
        "[x](vbscript:msgbox(1))",
        "<svg onload=alert(1)>",
        "<iframe src=https://evil.example></iframe>",
        '<div style="background:url(javascript:alert(1))">x</div>',
    ],
)
def test_each_way_of_smuggling_script_in_is_neutralised(text: str) -> None:
    html = str(render_markdown(text))
    _assert_neutralised(html)
    assert "<a " not in html and "<svg" not in html and "<iframe" not in html and "<div" not in html


SOURCE = """
from hareflow import DAG, BashTask
with DAG("{dag_id}", doc_md={doc!r}):
    BashTask("report", "echo hi", doc_md="Sends the **report** to <b>finance</b>.", doc="Plain words.")
"""


@pytest.fixture
def client(viewer: Client) -> Client:
    return viewer


@pytest.fixture
def documented(web_settings: Settings, web_sessions: sessionmaker[Session], tmp_path: Path) -> str:
    dag_id = unique("ver_doc")
    (tmp_path / f"{dag_id}.py").write_text(SOURCE.format(dag_id=dag_id, doc=HOSTILE))
    DagProcessor(settings=web_settings, session_factory=web_sessions, folder=tmp_path).run_once(T0)
    return dag_id


def test_the_dag_details_page_renders_the_dags_doc_md(client: Client, documented: str) -> None:
    html = client.get(f"/dags/{documented}/details").text

    doc = html.split('id="dag-doc">')[1].split("</div>")[0]
    assert "<h1>Nightly sales</h1>" in doc and "<strong>orders</strong>" in doc
    _assert_neutralised(doc)


def test_the_task_instance_page_renders_the_tasks_doc_md_and_plain_doc(
    client: Client, documented: str, run_factory: Any
) -> None:
    run_id = run_factory(documented, tis={"report": "success"})

    html = client.get(f"/dags/{documented}/runs/{quote(run_id, safe='')}/tasks/report").text

    doc = html.split('id="task-doc">')[1].split("</div>")[0]
    assert "<strong>report</strong>" in doc and "&lt;b&gt;finance&lt;/b&gt;" in doc
    assert '<pre class="doc" id="task-doc-text">Plain words.</pre>' in html
