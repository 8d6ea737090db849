"""The analysis section in Debian's Chromium, under a CSP without inline script: drawn, readable, inert.

The live part is rendered on the server from a fixed job (no Temporal, no cluster) and loaded
with the page's own stylesheet, so the test sees what a user would: the sparklines have a size,
the recent values and reasons read as text, and hostile text from a provider runs nothing.
"""

from __future__ import annotations

from playwright.async_api import Browser, Dialog

from starter.api import web
from starter.api.web import HERE
from tests.starter.analysis_data import INC, S, measured, metric, view
from tests.starter.test_render_analysis import at_analysis_gate
from tests.web.test_rendering import ADMIN, REQUEST
from workflows.analysis_run import AnalysisKind
from workflows.models import JobVersions

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'"
HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def document() -> str:
    hostile = view(AnalysisKind.STEP, 2, [(metric("error-rate"), measured((S, 0.999), (INC, 0.97, HOSTILE)))],
                   template="errors")
    job = at_analysis_gate()
    job = job.model_copy(update={"analyses": [*job.analyses, hostile]})
    versions = JobVersions(stable=job.stable, canary=job.canary, history=[])
    live = web.templates.get_template("_live.html").render(web._live_context(REQUEST, ADMIN, job, versions))
    style = (HERE / "static" / "style.css").read_text()
    return (f'<!doctype html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<style>{style}</style></head><body><main>{live}</main></body></html>")


async def test_the_analysis_section_draws_and_runs_nothing(browser: Browser) -> None:
    page = await browser.new_page()
    dialogs: list[Dialog] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog))
    await page.set_content(document())

    assert await page.locator("#analysis .analysis-run").count() == 3
    box = await page.locator('tr[data-metric="latency-p99"] svg.spark').bounding_box()
    assert box is not None and box["width"] == 120 and box["height"] == 28
    assert await page.locator('tr[data-metric="latency-p99"] polyline').count() == 1
    assert await page.locator('tr[data-metric="latency-p99"] .recent-values').inner_text() == "120, 135.5"
    assert (await page.locator("#pause-reason .why").inner_text()).startswith("step 2: analysis inconclusive")

    hostile_run = page.locator('.analysis-run[data-step="2"]')
    assert HOSTILE in await hostile_run.locator(".reason").inner_text()
    assert await page.locator("main img, main script").count() == 0
    title = await hostile_run.locator("circle title").nth(1).text_content()
    assert title == f"0.97 (inconclusive) at 11:58:30 UTC: {HOSTILE}"
    assert dialogs == []
    await page.close()
