"""In Chromium, without Temporal: the docs render with the network cut off, nothing on the page
breaks the Content-Security-Policy, and another site cannot frame the page."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Route, expect

from tests.api.conftest import TOKENS
from tests.api.local import local_app
from tests.web.conftest import ARTIFACTS, CHROMIUM_FLAGS, browser, serving  # noqa: F401  (fixture)

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def local_server() -> Iterator[str]:
    """The app on a free port, with no Temporal behind it (the docs and sign-in need none)."""
    with serving(local_app(), "canary-api-local") as url:
        yield url


async def offline_page(browser: Browser, base_url: str) -> tuple[Page, list[str], list[str]]:  # noqa: F811
    """A page whose every request off this machine fails, as on a machine without internet.

    Returns the page, the foreign URLs it tried, and what the console said about the CSP.
    """
    context = await browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 1000})
    blocked: list[str] = []
    violations: list[str] = []

    async def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort("internetdisconnected")

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    await context.route("**/*", only_local)
    page = await context.new_page()
    page.on("console", on_console)
    return page, blocked, violations


async def test_docs_render_offline_under_the_csp(browser: Browser, local_server: str) -> None:  # noqa: F811
    page, blocked, violations = await offline_page(browser, local_server)
    await page.goto("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("canary-delivery API")
    operations = page.locator(".opblock")
    await expect(operations.first).to_be_visible()
    assert await operations.count() >= 10
    # The operations open and show their schema, so the bundle works, not just its first paint.
    await page.locator(".opblock-summary-path", has_text="/api/v1/whoami").first.click()
    await expect(page.locator(".opblock-body").first).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "docs-offline.png"), full_page=False)
    assert blocked == [] and violations == []
    await page.context.close()


async def test_sign_in_and_the_job_list_work_under_the_csp(browser: Browser, local_server: str) -> None:  # noqa: F811
    page, blocked, violations = await offline_page(browser, local_server)
    await page.goto("/ui/jobs")
    await page.wait_for_url("**/ui/login**")
    await page.fill("#token", TOKENS["viewer"][0])
    await page.click("#sign-in")
    await page.wait_for_url("**/ui/jobs")
    await expect(page.locator("#signed-in-as")).to_contain_text("victor-viewer")
    cookies = await page.context.cookies()
    [session] = [c for c in cookies if c["name"] == "canary_session"]
    assert session["value"] != TOKENS["viewer"][0] and session["httpOnly"] and session["sameSite"] == "Strict"
    await page.click("text=Sign out")
    await page.wait_for_url("**/ui/login")
    # The old cookie is dead on the server, not only forgotten by the browser.
    await page.context.add_cookies([{**session}])
    await page.goto("/ui/jobs")
    await page.wait_for_url("**/ui/login**")
    assert blocked == [] and violations == []
    await page.context.close()


async def test_another_site_cannot_frame_the_page(browser: Browser, local_server: str) -> None:  # noqa: F811
    context = await browser.new_context()
    evil = "http://evil.example/"

    async def attacker(route: Route) -> None:
        await route.fulfill(content_type="text/html",
                            body=f'<h1>win a prize</h1><iframe id="victim" src="{local_server}/ui/login"></iframe>')

    await context.route(evil, attacker)
    page = await context.new_page()
    await page.goto(evil)
    await page.wait_for_timeout(1000)
    framed = [frame for frame in page.frames if frame != page.main_frame]
    assert framed, "the attacker's iframe is missing"
    for frame in framed:
        assert await frame.locator("#token").count() == 0  # the sign-in form never loaded in the frame
    await context.close()
