"""Browser tests: Debian's Chromium driven by Playwright for Python, against the API's real port.

Playwright's own browser download is never used (it cannot work here, and the project installs
``chromium`` with apt): every launch names ``/usr/bin/chromium``. The flags keep a headless
Chromium quiet on a machine without a network (no background requests, no sandbox as root).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect

from devenv.processes import free_port
from tests.api.conftest import (  # noqa: F401  (fixtures)
    TOKENS,
    ApiServer,
    admin,
    api_server,
    job_body,
    job_url,
    operator,
    viewer,
)
from tests.e2e.conftest import Shop, dev_server, mesh_metrics, shop, temporal, until  # noqa: F401  (fixtures and helpers)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
# A step that waits for Kubernetes (pods Ready) can take seconds; the page follows within one more.
expect.set_options(timeout=20_000)


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        await chromium.close()


class Served(Protocol):
    """Anything the browser can open: the API as a process, or an app on a thread."""

    url: str


async def sign_in(browser: Browser, server: Served, role: str, next_path: str = "/ui/jobs",
                  tokens: Mapping[str, tuple[str, str]] = TOKENS) -> Page:
    """A fresh browser context signed in with the role's token (from ``tokens``) through the sign-in form."""
    context = await browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(20_000)
    page = await context.new_page()
    await page.goto(next_path)
    await page.wait_for_url("**/ui/login**")
    await page.fill("#token", tokens[role][0])
    await page.click("#sign-in")
    await page.wait_for_url(f"**{next_path}")
    return page


@contextmanager
def serving(app: Any, name: str) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port in a thread; its base URL while the block runs."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
