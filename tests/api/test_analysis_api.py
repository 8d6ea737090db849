"""A release held by an inconclusive analysis step, seen over HTTP: the details, the page and the way on.

A real worker measures a ``web`` metric from a small JSON endpoint this test serves; its value
satisfies neither condition, so the analysis is inconclusive and the job waits at the step for
a human. The details endpoint must carry the run and the reason, the page must show them, and
``continue`` must take the release on.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.api.conftest import ApiServer, job_body, job_url
from tests.api.test_api import wait_for
from tests.e2e.conftest import Shop

pytestmark = pytest.mark.cluster


class _Rate(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"success": {"rate": 0.95}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def rate_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rate)
    thread = threading.Thread(target=server.serve_forever, name="rate-endpoint", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/rate"
    server.shutdown()
    server.server_close()


def analysis_job(shop: Shop, url: str) -> dict[str, object]:
    metric = {"name": "success-rate", "interval": "1s", "count": 1, "inconclusiveLimit": 0,
              "successCondition": "result >= 0.99", "failureCondition": "result < 0.9",
              "provider": {"web": {"url": url, "jsonPath": "$.success.rate"}}}
    return job_body(shop, steps=[{"setWeight": 25}, {"analysis": {"templates": [{"templateName": "health"}]}},
                                 {"setWeight": 50}],
                    analysis={"templates": [{"name": "health", "metrics": [metric]}]})


async def test_an_inconclusive_analysis_holds_the_release_and_says_so_everywhere(
        api_server: ApiServer, shop: Shop, admin: httpx.AsyncClient, viewer: httpx.AsyncClient,
        rate_endpoint: str) -> None:
    shop.create_workload()
    created = await admin.put(job_url(shop), json=analysis_job(shop, rate_endpoint))
    assert created.status_code == 201, created.text
    shop.set_image("registry.local/web:2")

    held = await wait_for(viewer, shop, lambda d: d["phase"] == "paused" and d["pause_reason"], "the analysis gate")
    assert held["current_step"] == 1
    assert held["pause_reason"].startswith("step 2: ") and "metric success-rate inconclusive" in held["pause_reason"]
    [run] = held["analyses"]
    assert (run["kind"], run["step"], run["phase"]) == ("step", 1, "inconclusive")
    assert "startedAt" in run and run["reason"] in held["pause_reason"]
    [metric] = run["metrics"]
    assert metric["template"] == "health"
    status = metric["status"]
    assert (status["metric"], status["phase"], status["lastValue"]) == ("success-rate", "inconclusive", 0.95)
    assert (status["measured"], status["inconclusive"], status["failed"]) == (1, 1, 0)
    assert [(m["value"], m["phase"]) for m in metric["measurements"]] == [(0.95, "inconclusive")]

    async with api_server.client(cookie_role="viewer") as browser:
        page = await browser.get(f"/ui/namespaces/{shop.namespace}/jobs/web/live")
    assert page.status_code == 200
    assert '<dd id="pause-reason" class="waiting">' in page.text
    assert '<tr data-metric="success-rate" data-phase="inconclusive">' in page.text
    assert '<span class="mono recent-values">0.95 (inconclusive)</span>' in page.text

    # The documented schema names what the answer carries.
    schemas = (await viewer.get("/openapi.json")).json()["components"]["schemas"]
    details = next(schema for name, schema in schemas.items() if name.startswith("JobDetails"))
    assert {"analyses", "pause_reason"} <= set(details["properties"])

    going_on = await admin.post(job_url(shop, "/continue"))
    assert going_on.status_code == 200, going_on.text
    done = await wait_for(viewer, shop, lambda d: d["phase"] == "healthy" and d["stable"]["revision"] == 2,
                          "promotion after the continue", timeout=90)
    assert done["pause_reason"] is None
