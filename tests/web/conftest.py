"""Browser tests: Debian's Chromium driven by Playwright for Python, against the API's real port.

Playwright's own browser download is never used (it cannot work here, and the project installs
``chromium`` with apt): every launch names ``/usr/bin/chromium``. The flags keep a headless
Chromium quiet on a machine without a network (no background requests, no sandbox as root).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

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


async def sign_in(browser: Browser, server: ApiServer, role: str, next_path: str = "/ui/jobs") -> Page:
    """A fresh browser context signed in with the role's token through the sign-in form."""
    context = await browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(20_000)
    page = await context.new_page()
    await page.goto(next_path)
    await page.wait_for_url("**/ui/login**")
    await page.fill("#token", TOKENS[role][0])
    await page.click("#sign-in")
    await page.wait_for_url(f"**{next_path}")
    return page
