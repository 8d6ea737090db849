"""The job pages in real headless Chromium: watch a release, operate it, roll back, be refused.

Nothing here reloads the page after it opened: whatever changes, the page shows by itself.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tests.web.conftest import ARTIFACTS, ApiServer, Shop, job_body, job_url, sign_in

pytestmark = pytest.mark.cluster
STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "45s"}}]


def details_path(shop: Shop) -> str:
    return f"/ui/namespaces/{shop.namespace}/jobs/web"


async def confirm(page: Page) -> None:
    dialog = page.locator("#confirm-dialog")
    await expect(dialog).to_be_visible()
    await page.click("#confirm-ok")
    await expect(dialog).to_be_hidden()


def step(page: Page, index: int) -> Locator:
    return page.locator(f"#steps li[data-index='{index}']")


async def test_watch_a_release_continue_roll_back_and_steer_it(
        shop: Shop, admin: httpx.AsyncClient, browser: Browser, api_server: ApiServer) -> None:
    shop.create_workload()
    assert (await admin.put(job_url(shop), json=job_body(shop, steps=STEPS))).status_code == 201
    page = await sign_in(browser, api_server, "admin", details_path(shop))

    # Basic information
    await expect(page.locator("#job-name")).to_have_text("web")
    await expect(page.locator("#job-status")).to_have_text("healthy")
    await expect(page.locator("#job-mode")).to_have_text("canary")
    await expect(page.locator("#job-object")).to_contain_text(f"Deployment {shop.namespace}/web (4 replicas)")
    await expect(page.locator("#no-release")).to_be_visible()

    # A release starts outside the page (kubectl set image) and the page follows it.
    shop.set_image("registry.local/web:2")
    await expect(page.locator("#job-status")).to_have_text("paused")
    await expect(step(page, 0)).to_have_attribute("data-state", "succeeded")
    await expect(step(page, 1)).to_have_attribute("data-state", "paused")
    await expect(step(page, 1)).to_have_attribute("aria-current", "step")
    await expect(page.locator("#weight")).to_have_text("25%")
    await expect(page.locator("#current-step")).to_have_text("2 of 4: pause until continued (paused)")
    await expect(page.locator("#main-canary")).to_contain_text("app=registry.local/web:2")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "job-details-mid-release.png"), full_page=True)

    # Continue: the next step starts, then the timed pause counts down.
    await page.click("#action-continue")
    await confirm(page)
    # The banner tells where the job rests once the operation took effect, not the state before it.
    await expect(page.locator("#outcome")).to_have_text(
        "continue: continuing from step 2; now paused at step 4 (pause 45s)")
    await expect(step(page, 2)).to_have_attribute("data-state", "succeeded")
    await expect(step(page, 3)).to_have_attribute("data-state", "paused")
    await expect(page.locator("#weight")).to_have_text("50%")
    countdown = page.locator("#countdown")
    await expect(countdown).to_have_text(re.compile(r"^\d+s$"))
    first = int((await countdown.text_content() or "0s").rstrip("s"))
    await asyncio.sleep(2.2)
    later = int((await countdown.text_content() or "0s").rstrip("s"))
    assert 0 < later < first <= 45
    await page.screenshot(path=str(ARTIFACTS / "job-details-timed-pause.png"), full_page=True)

    # Promote ends the release; the events say who did it.
    await page.click("#action-promote")
    await confirm(page)
    await expect(page.locator("#outcome")).to_contain_text("promote: promoting now")
    await expect(page.locator("#job-status")).to_have_text("healthy", timeout=30_000)
    await expect(page.locator("#main-stable")).to_contain_text("app=registry.local/web:2")
    await expect(page.locator("#events tr[data-kind='promote-requested'] .actor")).to_have_text("alice-admin")

    # Roll back from the Historical versions tab: a new release of revision 1 begins.
    await page.click("#tab-history")
    await expect(page.locator("#panel-history")).to_be_visible()
    await expect(page.locator("#history tr[data-revision='2']")).to_contain_text("stable")
    await page.click("#history [data-rollback='1']")
    await expect(page.locator("#confirm-title")).to_have_text("Roll back to revision 1")
    await confirm(page)
    await expect(page.locator("#outcome")).to_contain_text("rollback: rollback accepted")
    await expect(page.locator("#job-status")).to_have_text("paused")
    await expect(page.locator("#panel-history")).to_be_visible()  # the tab survives the live refresh
    await page.click("#tab-main")
    await expect(page.locator("#main-canary")).to_contain_text("app=registry.local/web:1")
    await expect(page.locator("#main-canary")).to_contain_text("rollback")

    # Update delivery job: edit the steps in the dialog.
    await page.click("#action-update-rules")
    rows = page.locator("#rules-steps li")
    await expect(rows).to_have_count(4)
    await rows.nth(3).locator(".step-remove").click()
    await rows.nth(2).locator(".step-value").fill("75")
    await page.click("#rules-ok")
    await expect(page.locator("#outcome")).to_contain_text("update-rules: delivery rules updated")
    await expect(page.locator("#steps li")).to_have_count(3)
    await expect(step(page, 2)).to_contain_text("setWeight 75%")

    # Update version: a new image, in its dialog; the release of it replaces the running one.
    await page.click("#action-update-version")
    await page.fill("#version-image", "registry.local/web:3")
    await expect(page.locator("#version-container")).to_have_value("app")
    await page.click("#version-ok")
    await expect(page.locator("#outcome")).to_contain_text("update-version: update-version accepted")
    await expect(page.locator("#main-canary")).to_contain_text("app=registry.local/web:3")
    await expect(page.locator("#job-status")).to_have_text("paused")

    # Terminate, with a reason: back to stable; the reason is in the history.
    await page.click("#action-terminate")
    await page.fill("#confirm-reason", "error rate too high")
    await confirm(page)
    await expect(page.locator("#outcome")).to_contain_text("terminate: terminating")
    await expect(page.locator("#job-status")).to_have_text("terminated")
    await expect(page.locator("#events")).to_contain_text("error rate too high")
    await page.context.close()


async def test_a_viewer_sees_jobs_but_operations_are_refused(
        shop: Shop, admin: httpx.AsyncClient, browser: Browser, api_server: ApiServer) -> None:
    shop.create_workload()
    assert (await admin.put(job_url(shop), json=job_body(shop))).status_code == 201

    # A wrong token does not sign in.
    context = await browser.new_context(base_url=api_server.url)
    page = await context.new_page()
    await page.goto("/ui/jobs")
    await page.fill("#token", "not-a-token")
    await page.click("#sign-in")
    await expect(page.locator(".error")).to_have_text("unknown token")
    await context.close()

    page = await sign_in(browser, api_server, "viewer", f"/ui/jobs?namespace={shop.namespace}")
    await expect(page.locator("#signed-in-as")).to_contain_text("victor-viewer (viewer)")
    row = page.locator(f"#jobs tr[data-job='{shop.namespace}/web']")
    for _ in range(50):  # Temporal's visibility is eventually consistent: the list may need a moment
        if await row.count():
            break
        await asyncio.sleep(0.2)
        await page.reload()
    await expect(row).to_contain_text("healthy")
    await row.locator("a").click()
    await page.wait_for_url(f"**{details_path(shop)}")
    await expect(page.locator("#job-status")).to_have_text("healthy")

    shop.set_image("registry.local/web:2")
    await expect(page.locator("#job-status")).to_have_text("paused")
    # The buttons say what the API would answer, before any click: disabled, the reason as tooltip.
    for operation in ("continue", "promote"):
        button = page.locator(f"#action-{operation}")
        await expect(button).to_be_disabled()
        await expect(button).to_have_attribute(
            "title", f"victor-viewer has role viewer; {operation} needs role operator")
        await button.click(force=True)
        await expect(page.locator("#confirm-dialog")).to_be_hidden()
    # Nothing the viewer tried reached the job: the release still waits at its pause.
    await asyncio.sleep(1.5)
    await expect(page.locator("#job-status")).to_have_text("paused")
    await expect(step(page, 1)).to_have_attribute("data-state", "paused")
    await page.context.close()


async def test_editing_steps_keeps_the_ones_the_dialog_cannot_edit(
        shop: Shop, admin: httpx.AsyncClient, browser: Browser, api_server: ApiServer) -> None:
    """An analysis step has no field in the dialog: saving other edits must not change or drop it."""
    analysis = {"analysis": {"templates": [{"templateName": "always"}]}}
    metric = {"name": "ok", "interval": "10s", "count": 1, "successCondition": "result == 1",
              "provider": {"web": {"url": "http://127.0.0.1:9/x", "jsonPath": "$.ok"}}}
    template = {"name": "always", "metrics": [metric]}
    body = job_body(shop, steps=[{"setWeight": 20}, analysis, {"pause": {}}])
    body["analysis"] = {"templates": [template]}
    shop.create_workload()
    response = await admin.put(job_url(shop), json=body)
    assert response.status_code == 201, response.text
    page = await sign_in(browser, api_server, "admin", details_path(shop))
    await expect(page.locator("#job-status")).to_have_text("healthy")

    await page.click("#action-update-rules")
    rows = page.locator("#rules-steps li")
    await expect(rows).to_have_count(3)
    await expect(rows.nth(1).locator(".step-kind")).to_be_disabled()
    await rows.nth(0).locator(".step-value").fill("30")
    await page.click("#rules-ok")
    await expect(page.locator("#outcome")).to_contain_text("update-rules: delivery rules updated")

    rules = (await admin.get(job_url(shop))).json()["rules"]
    assert rules["steps"][0] == {"setWeight": 30}
    assert rules["steps"][1]["analysis"]["templates"] == [{"templateName": "always"}]
    assert list(rules["steps"][2]) == ["pause"] and rules["steps"][2]["pause"].get("duration") is None
    await page.context.close()
