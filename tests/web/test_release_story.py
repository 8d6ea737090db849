"""The page tells the truth, in Chromium: step records, pods, disabled buttons, the banner, an unanswered job.

The jobs run on the Temporal dev server with the in-memory cluster of the workflow tests
(``FakeKube``) instead of Kubernetes: what is checked here is what the page makes of the
workflow's answers, and every step then takes milliseconds, not pod start-ups.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, expect
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from starter import client as canary
from starter.api.app import create_app
from starter.api.auth import Principal, Role, TokenStore
from tests.web.conftest import ARTIFACTS, browser, dev_server, serving, sign_in  # noqa: F401  (fixtures)
from tests.workflow.fake_kube import FakeKube
from workflows import names
from workflows.canary import CanaryJobWorkflow
from workflows.models import CanaryJobInput, JobDetails, OperationRequest, OperationResult, Phase
from workflows.spec import JobSpec, workflow_id

# A name long enough to break a table's By column if it were allowed to wrap.
LONG_ADMIN = "alexandra-maximiliana-release-engineering-on-call-admin"
TOKENS = {"admin": ("story-admin-token-0123456789", LONG_ADMIN),
          "viewer": ("story-viewer-token-0123456789", "victor-viewer")}
STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "10m"}}]


@dataclass
class Story:
    url: str
    client: Client


@pytest.fixture(scope="module")
def story_server(dev_server: WorkflowEnvironment) -> Iterator[Story]:  # noqa: F811
    """The API and page on a free port, over the dev server (no cluster, no session worker)."""
    address = str(dev_server.client.service_client.config.target_host)
    store = TokenStore([Principal(token=token, role=Role.parse(role), name=name)
                        for role, (token, name) in TOKENS.items()])

    async def connect() -> Client:
        return await canary.connect(address)

    with serving(create_app(connect, store), "canary-api-story") as url:
        yield Story(url=url, client=dev_server.client)


@dataclass
class FakeJob:
    namespace: str
    handle: WorkflowHandle[Any, Any]
    kube: FakeKube
    worker: Worker
    queue: str

    @property
    def path(self) -> str:
        return f"/ui/namespaces/{self.namespace}/jobs/web"

    async def details(self) -> JobDetails:
        return await self.handle.query(names.DETAILS_QUERY, result_type=JobDetails)

    async def wait(self, check: Callable[[JobDetails], bool], timeout: float = 20) -> JobDetails:
        deadline = time.monotonic() + timeout
        while not check(details := await self.details()):
            assert time.monotonic() < deadline, f"the job did not get there; last: {details!r}"
            await asyncio.sleep(0.05)
        return details

    async def edit_image(self, image: str) -> None:
        self.kube.edit_image(image)
        await self.handle.signal(names.WORKLOAD_CHANGED)


@pytest_asyncio.fixture
async def fake_job(story_server: Story) -> AsyncIterator[FakeJob]:
    """A job under its production workflow id, run by a worker of its own around a FakeKube."""
    namespace = f"story-{uuid.uuid4().hex[:6]}"
    kube, queue = FakeKube(), f"story-{uuid.uuid4().hex[:8]}"
    worker = Worker(story_server.client, task_queue=queue, workflows=[CanaryJobWorkflow],
                    activities=kube.activities(), activity_executor=ThreadPoolExecutor(4))
    asyncio.get_running_loop().create_task(worker.run())
    spec = JobSpec.model_validate({"name": "web", "namespace": namespace, "workload": {"name": "web"},
                                   "steps": STEPS, "progressDeadline": "30s"})
    handle = await story_server.client.start_workflow(
        CanaryJobWorkflow.run, CanaryJobInput(job=spec, watch=False), id=workflow_id(namespace, "web"),
        task_queue=queue)
    job = FakeJob(namespace, handle, kube, worker, queue)
    await job.wait(lambda d: d.phase == Phase.HEALTHY)
    yield job
    try:
        await handle.terminate("test over")
    except Exception:
        pass
    if worker.is_running:
        await worker.shutdown()




def step(page: Page, index: int) -> Locator:
    return page.locator(f"#steps li[data-index='{index}']")


async def confirm(page: Page, reason: str | None = None) -> None:
    await expect(page.locator("#confirm-dialog")).to_be_visible()
    if reason:
        await page.fill("#confirm-reason", reason)
    await page.click("#confirm-ok")
    await expect(page.locator("#confirm-dialog")).to_be_hidden()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def test_the_steps_keep_what_happened_and_the_banner_shows_the_state_after(
        fake_job: FakeJob, browser: Browser, story_server: Story) -> None:  # noqa: F811
    page = await sign_in(browser, story_server, "admin", fake_job.path, TOKENS)
    # Basic information: where the job lives and since when.
    await expect(page.locator("#job-namespace")).to_have_text(fake_job.namespace)
    await expect(page.locator("#job-created")).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d .* UTC \(\d+s ago\)"))
    # Idle: nothing to continue, promote or terminate, and the buttons say so before any click.
    for operation, why in (("continue", "nothing to continue: the job is healthy, not paused"),
                           ("promote", "no release is running (the job is healthy)"),
                           ("terminate", "no release is running (the job is healthy)")):
        await expect(page.locator(f"#action-{operation}")).to_be_disabled()
        await expect(page.locator(f"#action-{operation}")).to_have_attribute("title", why)
    await expect(page.locator("#action-update-version")).to_be_enabled()

    await fake_job.edit_image("registry.local/web:2")
    await expect(step(page, 1)).to_have_attribute("data-state", "paused")
    await expect(page.locator("#action-continue")).to_be_enabled()
    await expect(page.locator("#action-continue")).to_have_attribute("title", "role operator")
    # Status per side: 1 canary pod of 4 at 25 %, 3 stable.
    await expect(page.locator("#main-canary td.pods")).to_have_text("Ready 1/1")
    await expect(page.locator("#main-stable td.pods")).to_have_text("Ready 3/3")
    await expect(step(page, 0).locator(".msg")).to_have_text(re.compile(r"^done \d\d:\d\d UTC in \d+s$"))

    # Continue: the banner waits until the job moved on and says where it rests now.
    await asyncio.sleep(1.2)  # the pause lasts a moment, so its record has a length
    await page.click("#action-continue")
    await confirm(page)
    await expect(page.locator("#outcome")).to_have_text(
        "continue: continuing from step 2; now paused at step 4 (pause 10m)")
    await expect(step(page, 1).locator(".msg")).to_have_text(re.compile(rf"^waited \d+s, continued by {LONG_ADMIN}$"))

    # Promote: afterwards the release stays readable; nothing turned grey, the cut-off pause says by whom.
    await page.click("#action-promote")
    await confirm(page)
    await expect(page.locator("#outcome")).to_have_text(re.compile(r"^promote: .*; now healthy$"))
    await expect(page.locator("#release-summary")).to_contain_text("Release 2 (app=registry.local/web:2")
    await expect(page.locator("#release-summary")).to_contain_text("promoted")
    states = [await step(page, i).get_attribute("data-state") for i in range(4)]
    assert states == ["succeeded", "succeeded", "succeeded", "stopped"]
    await expect(step(page, 3).locator(".msg")).to_have_text(
        re.compile(rf"^ended by promote by {LONG_ADMIN}, after \d+s$"))
    await expect(page.locator("#action-continue")).to_be_disabled()
    await shot(page, "release-story-promoted.png")

    # The next release, terminated at its first pause: the steps after it never ran, and say so.
    await fake_job.edit_image("registry.local/web:3")
    await expect(step(page, 1)).to_have_attribute("data-state", "paused")
    await page.click("#action-terminate")
    await confirm(page, "error rate too high")
    await expect(page.locator("#outcome")).to_have_text(re.compile(r"^terminate: .*; now terminated$"))
    await expect(step(page, 1)).to_have_attribute("data-state", "stopped")
    await expect(step(page, 1).locator(".msg")).to_contain_text(
        f"cut off by terminate: error rate too high by {LONG_ADMIN}")
    await expect(step(page, 2)).to_have_attribute("data-state", "skipped")
    await expect(step(page, 2).locator(".msg")).to_have_text("not run: terminated")

    # Earlier releases are one click away: their step records in the history, kept open while it refreshes.
    await page.click("#tab-history")
    records = page.locator("#release-steps-2")
    await records.locator("summary").click()
    await expect(records.locator("li[data-index='1'] .msg")).to_contain_text(f"continued by {LONG_ADMIN}")
    await asyncio.sleep(2.5)
    await expect(records.locator("li[data-index='3']")).to_be_visible()
    # A long name stays on one line in the By column, cut with an ellipsis, whole in its tooltip.
    by = page.locator("#history tr[data-revision='3'] td.actor")
    await expect(by).to_have_attribute("title", LONG_ADMIN)
    lines = await by.evaluate("""cell => {
        const range = document.createRange(); range.selectNodeContents(cell);
        return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size; }""")
    assert lines == 1, "the actor's name wrapped onto several lines"
    assert await by.evaluate("cell => cell.scrollWidth > cell.clientWidth")  # cut, with its ellipsis
    await shot(page, "release-story-history.png")

    # The nav links are apart, not run together.
    jobs, api = page.locator("nav.links a").nth(0), page.locator("nav.links a").nth(1)
    gap = (await api.bounding_box())["x"] - ((await jobs.bounding_box())["x"] + (await jobs.bounding_box())["width"])
    assert gap >= 12
    await page.context.close()


async def test_a_viewer_sees_every_operation_disabled_with_the_reason(
        fake_job: FakeJob, browser: Browser, story_server: Story) -> None:  # noqa: F811
    # Revision 2 promoted, revision 3 waits at its pause: revision 1 can be rolled back to.
    await fake_job.edit_image("registry.local/web:2")
    await fake_job.wait(lambda d: d.phase == Phase.PAUSED)
    await fake_job.handle.execute_update(names.PROMOTE, OperationRequest(), result_type=OperationResult)
    await fake_job.wait(lambda d: d.phase == Phase.HEALTHY)
    await fake_job.edit_image("registry.local/web:3")
    page = await sign_in(browser, story_server, "viewer", fake_job.path, TOKENS)
    await expect(step(page, 1)).to_have_attribute("data-state", "paused")
    for operation, role in (("update-version", "operator"), ("update-rules", "admin"), ("continue", "operator"),
                            ("promote", "operator"), ("terminate", "operator")):
        button = page.locator(f"#action-{operation}")
        await expect(button).to_be_disabled()
        await expect(button).to_have_attribute(
            "title", f"victor-viewer has role viewer; {operation} needs role {role}")
    await page.click("#tab-history")
    await expect(page.locator("#history [data-rollback='1']")).to_be_disabled()
    # A click on a disabled button does nothing: no dialog, no refusal.
    await page.locator("#action-continue").click(force=True)
    await expect(page.locator("#confirm-dialog")).to_be_hidden()
    await expect(page.locator("#outcome")).to_be_hidden()
    await page.hover("#action-continue", force=True)
    await shot(page, "viewer-disabled-actions.png")
    await page.context.close()


async def test_a_job_that_does_not_answer_says_why_and_still_takes_terminate(
        fake_job: FakeJob, browser: Browser, story_server: Story) -> None:  # noqa: F811
    await fake_job.edit_image("registry.local/web:2")
    await fake_job.wait(lambda d: d.phase == Phase.PAUSED)
    await fake_job.worker.shutdown()  # the worker is down: the job's queries go unanswered

    page = await sign_in(browser, story_server, "admin", fake_job.path, TOKENS)
    await expect(page.locator("#trouble h2")).to_have_text("This job does not answer", timeout=40_000)
    await expect(page.locator("#trouble-error")).to_contain_text(f"canary job {fake_job.namespace}/web")
    await expect(page.locator("#trouble-steps")).to_contain_text("canary-delivery")
    await expect(page.locator("#trouble-steps")).to_contain_text(
        f"temporal workflow describe -w canary.{fake_job.namespace}.web")
    await shot(page, "job-not-answering.png")

    await page.click("#signal-terminate")
    await page.fill("#signal-reason", "worker lost during an incident")
    await page.click("#signal-ok")
    await expect(page.locator("#outcome")).to_have_text(
        "terminate: terminate sent as a signal; Temporal keeps it until the job's worker runs it")
    await shot(page, "job-not-answering-signal-sent.png")
    await page.context.close()

    # Recorded: once a worker runs the job again, it terminates the release, by the signed-in user.
    worker = Worker(story_server.client, task_queue=fake_job.queue, workflows=[CanaryJobWorkflow],
                    activities=fake_job.kube.activities(), activity_executor=ThreadPoolExecutor(4))
    async with worker:
        details = await fake_job.wait(lambda d: d.phase == Phase.TERMINATED)
        assert details.steps[1].actor == LONG_ADMIN
        assert details.steps[1].message == "cut off by terminate: worker lost during an incident"
