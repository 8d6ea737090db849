"""The analysis part of a job's details over HTTP, without Temporal: the JSON, its schema and the page.

The details query's answer is fixed (built with the workflow's verdict code in
tests/starter/analysis_data.py) and handed to the app in place of a Temporal round trip, so
these tests pin down what the HTTP layer does with it: the wire names, nothing dropped by the
response model, the schema that documents it, and the page's escaping through the real routes.
The same path against a real worker is tests/api/test_analysis_api.py (cluster).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from starter import client as canary
from starter.api.app import create_app
from tests.api.conftest import TOKENS, token_store
from tests.api.local import sign_in
from tests.starter.analysis_data import INC, SUCCESS_RATE_INCONCLUSIVE, measured, metric, view
from tests.starter.test_render_analysis import at_analysis_gate
from workflows.analysis_run import AnalysisKind
from workflows.models import JobDetails, JobVersions

HOSTILE = "<script>alert('x')</script>"


@pytest_asyncio.fixture
async def serve(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, list[JobDetails]]]:
    """An app whose details query answers the job the test puts in the list (bearer token: viewer)."""
    answers: list[JobDetails] = []

    async def details(_client: Any, namespace: str, name: str) -> JobDetails:
        return answers[-1]

    async def versions(_client: Any, namespace: str, name: str) -> JobVersions:
        job = answers[-1]
        return JobVersions(stable=job.stable, canary=job.canary, history=[])

    async def connect() -> Any:
        return object()  # never used: the two queries above stand in for the workflow

    monkeypatch.setattr(canary, "details", details)
    monkeypatch.setattr(canary, "versions", versions)
    # The job "changes by itself" between two reads here: no answer is kept for later readers.
    transport = httpx.ASGITransport(app=create_app(connect, token_store(), read_ttl=0))
    headers = {"Authorization": f"Bearer {TOKENS['viewer'][0]}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as http:
        yield http, answers


async def test_details_carry_every_run_and_the_gate_reason(serve: tuple[httpx.AsyncClient, list[JobDetails]]
                                                            ) -> None:
    http, answers = serve
    answers.append(at_analysis_gate())
    body = (await http.get("/api/v1/namespaces/shop/jobs/web")).json()
    assert body["pause_reason"] == SUCCESS_RATE_INCONCLUSIVE
    assert body["analyses"] == [run.model_dump(mode="json", by_alias=True) for run in answers[-1].analyses]
    step, background = body["analyses"]
    assert (step["kind"], step["step"], step["phase"], step["startedAt"]) == (
        "step", 1, "inconclusive", "2025-05-01T11:50:00Z")
    assert step["metrics"][0]["status"]["lastValue"] is None  # no data is null, not 0
    assert step["metrics"][1]["status"] == {
        "metric": "latency-p99", "phase": "running", "reason": "", "lastValue": 135.5, "measured": 2,
        "successful": 2, "failed": 0, "inconclusive": 0, "errors": 0, "consecutiveErrors": 0}
    assert background["metrics"][0]["measurements"][-1]["message"] == "connection refused by prometheus:9090"

    answers.append(answers[-1].model_copy(update={"analyses": [], "pause_reason": None}))
    idle = (await http.get("/api/v1/namespaces/shop/jobs/web")).json()
    assert idle["analyses"] == [] and idle["pause_reason"] is None


async def test_the_schema_documents_the_analysis_with_its_wire_names(
        serve: tuple[httpx.AsyncClient, list[JobDetails]]) -> None:
    http, _ = serve
    schemas = (await http.get("/openapi.json")).json()["components"]["schemas"]
    details = next(schema for name, schema in schemas.items() if name.startswith("JobDetails"))
    assert details["properties"]["analyses"]["items"]["$ref"].endswith("/AnalysisView")
    assert {"type": "null"} in details["properties"]["pause_reason"]["anyOf"]
    assert {"kind", "step", "startedAt", "phase", "reason", "metrics"} <= set(schemas["AnalysisView"]["properties"])
    assert {"lastValue", "measured", "successful", "failed", "inconclusive", "errors"} <= set(
        schemas["MetricStatus"]["properties"])
    assert {"value", "phase", "message", "at"} <= set(schemas["Measurement"]["properties"])


async def test_the_page_escapes_what_providers_say(serve: tuple[httpx.AsyncClient, list[JobDetails]]) -> None:
    http, answers = serve
    run = view(AnalysisKind.STEP, 1, [(metric("success-rate"), measured((INC, 0.97, HOSTILE)))])
    answers.append(at_analysis_gate(analyses=[run], pause_reason=f"step 2: analysis inconclusive: {run.reason}"))
    await sign_in(http, "viewer")
    for path in ("/ui/namespaces/shop/jobs/web", "/ui/namespaces/shop/jobs/web/live"):
        page = await http.get(path)
        assert page.status_code == 200, page.text
        assert HOSTILE not in page.text and "<script>alert" not in page.text
        assert page.text.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") >= 3  # gate, reason, title
