"""The HTTP API against the real worker, the Temporal dev server and the local cluster.

Every endpoint is called with every role (and without a token); the job lifecycle runs over
HTTP only, and each error code the API promises is provoked for real.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from starter import client as canary
from starter.api.app import create_app
from tests.api.conftest import TOKENS, ApiServer, job_body, job_url, token_store
from tests.e2e.conftest import Shop, until

pytestmark = pytest.mark.cluster

GHOST = "/api/v1/namespaces/nowhere/jobs/ghost"
PHANTOM = "/api/v1/namespaces/nowhere/jobs/phantom"
PHANTOM_SPEC = {"name": "phantom", "namespace": "nowhere", "workload": {"name": "phantom"},
                "steps": [{"setWeight": 50}]}
# (method, path, body, least role, status for a role that may call it: the job does not exist)
ENDPOINTS: list[tuple[str, str, Any, str, int]] = [
    ("GET", "/api/v1/whoami", None, "viewer", 200),
    ("GET", "/api/v1/jobs", None, "viewer", 200),
    ("GET", "/api/v1/namespaces/nowhere/jobs", None, "viewer", 200),
    ("GET", GHOST, None, "viewer", 404),
    ("GET", f"{GHOST}/versions", None, "viewer", 404),
    ("POST", f"{GHOST}/update-version", {"image": "registry.local/web:9"}, "operator", 404),
    ("POST", f"{GHOST}/continue", {}, "operator", 404),
    ("POST", f"{GHOST}/promote", None, "operator", 404),
    ("POST", f"{GHOST}/terminate", {"reason": "test"}, "operator", 404),
    ("POST", f"{GHOST}/rollback", {"revision": 1, "skipSteps": True}, "operator", 404),
    ("POST", f"{GHOST}/update-rules", {"rules": {"steps": [{"setWeight": 50}]}}, "admin", 404),
    ("POST", f"{GHOST}/delete", {}, "admin", 404),
    ("DELETE", GHOST, None, "admin", 404),
    # Creating a job for a Deployment that does not exist: refused, naming the field.
    ("PUT", PHANTOM, PHANTOM_SPEC, "admin", 422),
    ("POST", "/api/v1/jobs", PHANTOM_SPEC, "admin", 422),
]
RANK = {"viewer": 1, "operator": 2, "admin": 3}


def _ids(endpoint: tuple[str, str, Any, str, int]) -> str:
    return f"{endpoint[0]} {endpoint[1].replace(GHOST, '{job}').replace(PHANTOM, '{job}')}"


async def call(http: httpx.AsyncClient, method: str, path: str, body: Any = None) -> httpx.Response:
    return await http.request(method, path, json=body) if body is not None else await http.request(method, path)


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error body, after checking its status and shape."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["message"] and body["reason"]
    return body


# -- authentication and roles ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=_ids)
async def test_every_endpoint_needs_a_token(api_server: ApiServer, endpoint: tuple[str, str, Any, str, int]) -> None:
    method, path, body, _, _ = endpoint
    async with api_server.client() as anonymous:
        response = await call(anonymous, method, path, body)
        assert error(response, 401)["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert error(await call(anonymous, method, path, body), 401)
        wrong = await anonymous.request(method, path, json=body, headers={"Authorization": "Bearer not-a-token"})
        assert error(wrong, 401)["message"] == "unknown token"
        basic = await anonymous.request(method, path, json=body, headers={"Authorization": "Basic YTpi"})
        assert error(basic, 401)
    # The page's session cookie counts only together with the page's own header (no CSRF).
    async with api_server.client(cookie_role="admin") as cookie_only:
        assert error(await call(cookie_only, method, path, body), 401)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=_ids)
async def test_every_endpoint_checks_the_role(api_server: ApiServer, endpoint: tuple[str, str, Any, str, int]
                                              ) -> None:
    method, path, body, least, allowed_status = endpoint
    for role in RANK:
        async with api_server.client(role) as http:
            response = await call(http, method, path, body)
        if RANK[role] < RANK[least]:
            refused = error(response, 403)
            assert refused["code"] == "forbidden"
            assert TOKENS[role][1] in refused["message"] and f"needs role {least}" in refused["message"]
        else:
            assert response.status_code == allowed_status, (role, response.text)
    async with api_server.client(cookie_role=least) as page:
        page.headers["X-Requested-With"] = "canary-web"
        response = await call(page, method, path, body)
        assert response.status_code == allowed_status, response.text


async def test_whoami_names_the_token_holder(viewer: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    assert (await viewer.get("/api/v1/whoami")).json() == {"name": "victor-viewer", "role": "viewer"}
    assert (await admin.get("/api/v1/whoami")).json() == {"name": "alice-admin", "role": "admin"}


async def test_unknown_job_is_404_with_a_message(viewer: httpx.AsyncClient) -> None:
    body = error(await viewer.get(GHOST), 404)
    assert body == {"status": 404, "code": "not-found", "message": "no canary job nowhere/ghost", "field": None,
                    "reason": "no canary job nowhere/ghost", "errors": []}


# -- probes and the OpenAPI document -----------------------------------------------------------


async def test_probes(api_server: ApiServer) -> None:
    async with api_server.client() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok", "temporal": None}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["temporal"] == api_server.temporal_address


async def test_openapi_documents_the_project_models_and_the_errors(api_server: ApiServer) -> None:
    async with api_server.client() as http:
        document = (await http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for model in ("JobSpec", "OperationRequest", "UpdateVersionRequest", "RollbackRequest", "UpdateRulesRequest",
                  "OperationResult", "JobSummary", "ErrorBody"):
        assert model in schemas, model
    assert any(name.startswith("JobDetails") for name in schemas)
    assert any(name.startswith("JobVersions") for name in schemas)
    # The wire names of the project's models (aliases), not Python's.
    assert {"requestId", "actor", "reason", "image", "container"} <= set(schemas["UpdateVersionRequest"]["properties"])
    assert "skipSteps" in schemas["RollbackRequest"]["properties"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "A token configured by the operator; its role decides what it may do."}
    operations = {(method.upper(), path): op for path, item in document["paths"].items()
                  for method, op in item.items()}
    for method, path, *_ in ENDPOINTS:
        template = path.replace("nowhere", "{namespace}").replace("ghost", "{name}").replace("phantom", "{name}")
        op = operations[(method, template)]
        assert {"401", "403", "422", "503"} <= set(op["responses"]), (method, template)
        assert op["security"] == [{"bearer": []}]
        if "{name}" in template:
            assert {"404", "409"} <= set(op["responses"])
    continue_body = operations[("POST", "/api/v1/namespaces/{namespace}/jobs/{name}/continue")]["requestBody"]
    assert "OperationRequest" in str(continue_body)
    # The gate a continue or promote means: documented on the model, and on the routes.
    gate = schemas["OperationRequest"]["properties"]
    assert "409" in gate["release"]["description"] and "1-based" in gate["step"]["description"]
    for operation in ("continue", "promote"):
        assert "`release` and `step`" in operations[("POST", f"/api/v1/namespaces/{{namespace}}/jobs/{{name}}/"
                                                             f"{operation}")]["description"]


# -- input errors ------------------------------------------------------------------------------


async def test_bad_input_is_400_or_422_naming_the_field(admin: httpx.AsyncClient) -> None:
    not_json = await admin.post(f"{GHOST}/continue", content=b"{not json", headers={"Content-Type": "application/json"})
    assert error(not_json, 400)["code"] == "bad-request"
    bad_path = error(await admin.get("/api/v1/namespaces/Not_A_Namespace/jobs/web"), 422)
    assert bad_path["field"] == "namespace"
    bad_filter = error(await admin.get("/api/v1/jobs", params={"status": "sleeping"}), 422)
    assert bad_filter["field"] == "status"
    zero = error(await admin.post(f"{GHOST}/rollback", json={"revision": 0}), 422)
    assert zero["field"] == "revision" and "greater than or equal to 1" in zero["reason"]
    # Strictly the documented types: no 0 for false, no "1" for 1 (pydantic's lax mode would take them).
    assert error(await admin.post(f"{GHOST}/rollback", json={"revision": 1, "skipSteps": 0}), 422)["field"] == \
        "skipSteps"
    assert error(await admin.post(f"{GHOST}/rollback", json={"revision": "1"}), 422)["field"] == "revision"
    assert error(await admin.post(f"{GHOST}/terminate", json={"reason": 7}), 422)["field"] == "reason"
    assert error(await admin.put(PHANTOM, json={**PHANTOM_SPEC, "steps": [{"setWeight": "50"}]}), 422)["field"] == \
        "steps.0.setWeight"
    extra = error(await admin.post(f"{GHOST}/continue", json={"please": True}), 422)
    assert extra["field"] == "please"
    no_image = error(await admin.post(f"{GHOST}/update-version", json={}), 422)
    assert no_image["field"] == "image"
    rules = error(await admin.post(f"{GHOST}/update-rules", json={"rules": {"steps": [{"setWeight": 150}]}}), 422)
    assert rules["field"] == "rules.steps.0.setWeight" and "less than or equal to 100" in rules["reason"]
    unknown_step = error(await admin.post(f"{GHOST}/update-rules", json={"rules": {"steps": [{"wait": 1}]}}), 422)
    assert unknown_step["field"] == "rules.steps" and "unknown step 'wait'" in unknown_step["reason"]
    spec = error(await admin.put(PHANTOM, json={**PHANTOM_SPEC, "steps": [], "progressDeadline": "soon"}), 422)
    assert {e["field"] for e in spec["errors"]} == {"steps", "progressDeadline"}
    other_name = error(await admin.put(PHANTOM, json={**PHANTOM_SPEC, "name": "spirit"}), 422)
    assert other_name["field"] == "name"
    other_namespace = error(await admin.put(PHANTOM, json={**PHANTOM_SPEC, "namespace": "elsewhere"}), 422)
    assert other_namespace["field"] == "namespace"


async def test_a_job_refused_at_creation_does_not_exist(admin: httpx.AsyncClient) -> None:
    refused = error(await admin.put("/api/v1/namespaces/nowhere/jobs/typo", json={
        "name": "typo", "workload": {"name": "web-typo"}, "steps": [{"setWeight": 50}]}), 422)
    assert refused["field"] == "workload.name"
    assert refused["message"] == ("canary job nowhere/typo refused: workload: Deployment nowhere/web-typo "
                                  "not found")
    for path in ("", "/versions"):
        missing = error(await admin.get(f"/api/v1/namespaces/nowhere/jobs/typo{path}"), 404)
        assert missing["message"] == "no canary job nowhere/typo: refused: workload: Deployment nowhere/web-typo " \
                                     "not found"


async def test_temporal_unreachable_is_503_and_bad_input_still_422() -> None:
    async def unreachable():
        return await canary.connect("127.0.0.1:1", timeout=5)

    app = create_app(unreachable, token_store())
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKENS['admin'][0]}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as http:
        assert (await http.get("/healthz")).status_code == 200
        for response in (await http.get("/readyz"), await http.get(GHOST), await http.get("/api/v1/jobs"),
                         await http.post(f"{GHOST}/continue")):
            body = error(response, 503)
            assert body["code"] == "unavailable" and "cannot reach Temporal at 127.0.0.1:1" in body["message"]
        assert error(await http.post(f"{GHOST}/rollback", json={"revision": -1}), 422)["field"] == "revision"


# -- a job's life over HTTP --------------------------------------------------------------------


async def wait_for(http: httpx.AsyncClient, shop: Shop, check: Any, what: str, timeout: float = 60) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        response = await http.get(job_url(shop))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return await until(probe, check, what, timeout)


async def test_create_list_continue_and_actor_over_http(
        shop: Shop, admin: httpx.AsyncClient, operator: httpx.AsyncClient, viewer: httpx.AsyncClient) -> None:
    shop.create_workload()
    created = await admin.put(job_url(shop), json=job_body(shop))
    assert created.status_code == 201, created.text
    assert (created.json()["message"], created.json()["phase"]) == (f"canary job {shop.namespace}/web created",
                                                                   "healthy")
    again = await admin.put(job_url(shop), json=job_body(shop, progressDeadline="30s"))
    assert again.status_code == 200 and "configured" in again.json()["message"]

    job = (await viewer.get(job_url(shop))).json()
    assert (job["name"], job["namespace"], job["workload"], job["mode"], job["phase"]) == (
        "web", shop.namespace, "web", "canary", "healthy")
    assert job["rules"]["progressDeadline"] == "30s"
    listed = await until(lambda: viewer.get("/api/v1/jobs", params={"namespace": shop.namespace, "status": "healthy"}),
                         lambda r: len(r.json()) == 1, "the job in the list")
    assert listed.json()[0]["name"] == "web" and listed.json()[0]["workload"] == "web"
    assert [j["name"] for j in (await viewer.get(f"/api/v1/namespaces/{shop.namespace}/jobs")).json()] == ["web"]
    for phase in ("paused", "workload-missing", "error"):
        none = await viewer.get(f"/api/v1/namespaces/{shop.namespace}/jobs", params={"status": phase})
        assert none.status_code == 200 and none.json() == []

    # Operations the job's state does not allow: 409 with the workflow's own reason.
    idle = error(await operator.post(job_url(shop, "/continue")), 409)
    assert idle["code"] == "conflict" and idle["message"] == "nothing to continue: the job is healthy, not paused"
    assert "no release is running" in error(await operator.post(job_url(shop, "/promote")), 409)["message"]
    assert "no release is running" in error(await operator.post(job_url(shop, "/terminate")), 409)["message"]
    # A second job for the same Deployment: a conflict with the first.
    other = await admin.put(f"/api/v1/namespaces/{shop.namespace}/jobs/other", json={**job_body(shop), "name": "other"})
    assert "belongs to canary job 'web'" in error(other, 409)["message"]

    shop.set_image("registry.local/web:2")
    paused = await wait_for(viewer, shop, lambda d: d["phase"] == "paused" and d["current_step"] == 1, "first pause")
    assert paused["weight"] == 25 and paused["canary"]["images"] == {"app": "registry.local/web:2"}
    # The body may claim any actor: the token's name is what the job records.
    done = await operator.post(job_url(shop, "/continue"), json={"actor": "mallory", "reason": "looks good"})
    assert done.status_code == 200, done.text
    assert done.json()["message"] == "continuing from step 2"
    promoted = await wait_for(viewer, shop, lambda d: d["phase"] == "healthy" and d["stable"]["revision"] == 2,
                              "promotion", timeout=60)
    continued = [e for e in promoted["events"] if e["kind"] == "continued"]
    assert continued and continued[0]["actor"] == "olivia-operator"
    assert all(e["actor"] != "mallory" for e in promoted["events"])
    versions = (await viewer.get(job_url(shop, "/versions"))).json()
    assert versions["stable"]["revision"] == 2 and versions["canary"] is None
    assert [v["revision"] for v in versions["history"]] == [2, 1]


async def test_update_version_terminate_rollback_rules_and_delete_over_http(
        shop: Shop, admin: httpx.AsyncClient, operator: httpx.AsyncClient, viewer: httpx.AsyncClient) -> None:
    shop.create_workload()
    assert (await admin.post("/api/v1/jobs", json={**job_body(shop), "namespace": shop.namespace})).status_code == 201

    bad_image = error(await operator.post(job_url(shop, "/update-version"),
                                          json={"image": "registry.local/Web:2"}), 422)
    assert bad_image["field"] == "image" and "must be lowercase" in bad_image["reason"]
    bad_container = error(await operator.post(job_url(shop, "/update-version"),
                                              json={"image": "registry.local/web:2", "container": "sidecar"}), 422)
    assert bad_container["field"] == "container"
    started = await operator.post(job_url(shop, "/update-version"), json={"image": "registry.local/web:2"})
    assert started.status_code == 200, started.text
    await wait_for(viewer, shop, lambda d: d["phase"] == "paused", "release of the new image")
    stopped = await operator.post(job_url(shop, "/terminate"), json={"reason": "error rate"})
    assert stopped.status_code == 200 and "terminating" in stopped.json()["message"]
    await wait_for(viewer, shop, lambda d: d["phase"] == "terminated", "terminated")
    history = (await viewer.get(job_url(shop, "/versions"))).json()["history"]
    assert history[0]["outcome"] == "terminated" and history[0]["actor"] == "olivia-operator"

    unknown = error(await operator.post(job_url(shop, "/rollback"), json={"revision": 99}), 422)
    assert unknown["field"] == "revision" and unknown["reason"] == "unknown revision 99; known revisions: 1, 2"
    # Deliver the terminated revision 2 again, at once: a new revision 3 becomes stable.
    back = await operator.post(job_url(shop, "/rollback"), json={"revision": 2, "skipSteps": True})
    assert back.status_code == 200, back.text
    rolled = await wait_for(viewer, shop, lambda d: d["phase"] == "healthy" and d["stable"]["revision"] == 3,
                            "fast rollback")
    assert rolled["stable"]["trigger"] == "rollback" and rolled["stable"]["actor"] == "olivia-operator"
    assert rolled["stable"]["images"] == {"app": "registry.local/web:2"}

    assert error(await operator.post(job_url(shop, "/update-rules"), json={"rules": {"steps": []}}), 403)
    new_rules = {"steps": [{"setWeight": 50}, {"pause": {"duration": "1m"}}], "progressDeadline": "30s"}
    updated = await admin.post(job_url(shop, "/update-rules"), json={"rules": new_rules})
    assert updated.status_code == 200 and updated.json()["message"] == "delivery rules updated"
    job = (await viewer.get(job_url(shop))).json()
    assert job["rules"]["steps"] == [{"setWeight": 50}, {"pause": {"duration": "1m", "onTimeout": None}}]
    assert any(e["kind"] == "rules-updated" and e["actor"] == "alice-admin" for e in job["events"])

    assert error(await operator.delete(job_url(shop)), 403)
    deleted = await admin.delete(job_url(shop))
    assert deleted.status_code == 200 and deleted.json()["message"] == "deleting the job"
    # While the job gives its Deployment back it refuses operations (409); once its workflow has
    # ended the job is gone (404), but its last state can still be read: phase "deleted".
    await until(lambda: admin.post(job_url(shop, "/continue")), lambda r: r.status_code == 404, "the job has ended")
    final = (await viewer.get(job_url(shop))).json()
    assert final["phase"] == "deleted"
    assert any(e["kind"] == "deleted" and e["actor"] == "alice-admin" for e in final["events"])
    assert shop.workload().spec.paused is not True
