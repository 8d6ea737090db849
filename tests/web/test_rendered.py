"""The job page is rendered once per answer and reader, and never shown to the wrong reader.

In process, with the details and versions queries standing in for Temporal (as in
tests/api/test_analysis_details.py): what is checked is what the page's HTML says.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from starter import client as canary
from starter.api.app import create_app
from starter.api.rendered import RenderedPages
from tests.api.conftest import TOKENS, token_store
from tests.api.local import sign_in
from tests.starter.test_render_analysis import at_analysis_gate
from workflows.models import JobDetails, JobVersions

PAGE = "/ui/namespaces/shop/jobs/web"


class Renders:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"<p>render {self.count}</p>"


def test_a_page_is_rendered_again_only_for_a_new_answer() -> None:
    pages, render = RenderedPages(), Renders()
    answer, versions = object(), object()
    first = pages.html("page", (answer, versions), render)
    assert pages.html("page", (answer, versions), render) == first and render.count == 1
    # An equal but new answer (the next query's) is rendered afresh.
    assert pages.html("page", (object(), versions), render) == "<p>render 2</p>"
    assert pages.html("other reader", (answer, versions), render) == "<p>render 3</p>"


def test_the_oldest_pages_go_first_past_the_limit() -> None:
    pages, render = RenderedPages(limit=2), Renders()
    answer = object()
    for key in ("a", "b", "c"):
        pages.html(key, (answer,), render)
    assert pages.html("c", (answer,), render) == "<p>render 3</p>"
    assert pages.html("a", (answer,), render) == "<p>render 4</p>"


def signed_in_as(page: str) -> str:
    found = re.search(r'id="signed-in-as">signed in as <strong>([^<]+)</strong> \((\w+)\)', page)
    assert found, page[:500]
    return f"{found.group(1)} ({found.group(2)})"


async def test_readers_of_one_shared_answer_each_see_their_own_page(monkeypatch: pytest.MonkeyPatch) -> None:
    job = at_analysis_gate()
    calls: list[str] = []

    async def details(_client: Any, namespace: str, name: str) -> JobDetails:
        calls.append("details")
        return job

    async def versions(_client: Any, namespace: str, name: str) -> JobVersions:
        return JobVersions(stable=job.stable, canary=job.canary, history=[])

    async def connect() -> Any:
        return object()

    monkeypatch.setattr(canary, "details", details)
    monkeypatch.setattr(canary, "versions", versions)
    app = create_app(connect, token_store(), read_ttl=60)  # one answer for the whole test
    seen = []
    for role in ("viewer", "admin", "viewer"):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
            await sign_in(http, role)
            for path in (PAGE, f"{PAGE}/live"):
                page = await http.get(path)
                assert page.status_code == 200, page.text
            seen.append(signed_in_as((await http.get(PAGE)).text))
    assert seen == [f"{TOKENS['viewer'][1]} (viewer)", f"{TOKENS['admin'][1]} (admin)",
                    f"{TOKENS['viewer'][1]} (viewer)"]
    assert calls == ["details"]
