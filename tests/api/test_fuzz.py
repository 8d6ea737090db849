"""Schemathesis fuzzes the served OpenAPI document against the live API (real worker and cluster).

Every operation gets schema examples, boundary values and random (valid and invalid) inputs,
with an admin token so that every route is reached past authentication; valid job addresses
name one real job in the middle of a release, so that the details and versions answers are
checked against their schemas and the operations reach the workflow. The run fails on any
5xx and on any response that its documented schema, status codes, headers or content type
do not allow. It runs as a subprocess so this test's event loop keeps turning for the worker.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import TOKENS, ApiServer, job_body, job_url
from tests.e2e.conftest import Shop

pytestmark = pytest.mark.cluster
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "schemathesis"

CONFIG = """
# A schema-valid value can still name something that does not exist for this job or cluster (a
# Deployment, a revision, a container): the API answers 422 naming the field, which the schema
# cannot express, so 422 counts as a correct answer to schema-valid data.
[checks.positive_data_acceptance]
expected-statuses = [200, 201, 401, 403, 404, 409, 422]

# Valid job addresses point at one real job in the middle of a release, so that the details and
# versions answers are checked against their schemas and the operations reach the workflow: the
# fuzz continues, promotes, terminates, rolls back, replaces and deletes it in whatever order it
# likes. Invalid addresses are still generated for the negative cases.
[parameters]
"path.namespace" = "{namespace}"
"path.name" = "web"
"""


async def test_fuzzing_the_openapi_document_finds_no_server_error_or_schema_violation(
        api_server: ApiServer, shop: Shop, tmp_path: Path) -> None:
    shop.create_workload()
    async with api_server.client("admin") as admin:
        assert (await admin.put(job_url(shop), json=job_body(shop))).status_code == 201
    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == "paused", "a release paused at its first step")

    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(namespace=shop.namespace))
    schemathesis = Path(sys.executable).parent / "schemathesis"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        str(schemathesis), "--config-file", str(config), "run", f"{api_server.url}/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {TOKENS['admin'][0]}",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "25",
        "--seed", "20261101",
        # One worker: with two, Hypothesis's lambda-source parsing races in threads on Python 3.11
        # ("AST constructor recursion depth mismatch"), an error of the tool, not of the API.
        "--workers", "1",
        "--request-timeout", "90",
        "--report", "junit,har", "--report-dir", str(ARTIFACTS),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={"PATH": str(schemathesis.parent), "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    (ARTIFACTS / "output.txt").write_text(text)
    assert process.returncode == 0, text[-6000:]
    async with httpx.AsyncClient(base_url=api_server.url) as http:
        assert (await http.get("/healthz")).status_code == 200
