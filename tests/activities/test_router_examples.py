"""The router examples the README points to: valid jobs, and route objects their router accepts.

The route objects are judged by the real routers' own planning (which routes they would weigh,
and where the stable and canary weights are), without a cluster; tests/e2e writes such objects
to the API server, whose CRD schemas check them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from activities.routers.base import WeightedRoutes
from activities.routers.gateway_api import GatewayApiRouter
from activities.routers.istio import IstioRouter
from activities.routers.nginx import NginxRouter
from workflows.header_route import HeaderRoute, apply_header_route
from workflows.spec import JobSpec, SetHeaderRouteStep
from workflows.traffic_spec import Traffic

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> Any:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


@pytest.mark.parametrize(("job_file", "route_file", "router"), [
    ("istio-job.yaml", "istio-route.yaml", IstioRouter),
    ("istio-dynamic-job.yaml", "istio-route.yaml", IstioRouter),
    ("gateway-api-job.yaml", "gateway-api-route.yaml", GatewayApiRouter),
])
def test_a_router_example_is_a_job_whose_route_fits(job_file: str, route_file: str,
                                                    router: Callable[[ApiClient, str, Traffic], WeightedRoutes]
                                                    ) -> None:
    job = JobSpec.model_validate(_load(job_file))
    route = _load(route_file)
    assert job.traffic.router
    assert route["metadata"]["namespace"] == job.namespace
    weighed = router(ApiClient(), job.namespace, job.traffic)
    assert route["metadata"]["name"] == weighed.name and route["kind"] == weighed.resource.kind
    held = weighed._weights(route, weighed._plan(route))
    assert [(r.stable, r.canary) for r in held.routes] == [(100, 0)]
    readme = (ROOT / "README.md").read_text()
    assert f"examples/{job_file}" in readme and f"examples/{route_file}" in readme


def test_the_nginx_example_derives_a_canary_ingress_from_the_users() -> None:
    job = JobSpec.model_validate(_load("nginx-job.yaml"))
    ingress = _load("nginx-ingress.yaml")
    assert job.traffic.nginx is not None and ingress["metadata"]["name"] == job.traffic.nginx.stable_ingress
    assert ingress["metadata"]["namespace"] == job.namespace
    router = NginxRouter(ApiClient(), job.namespace, job.name, job.traffic)
    derived = router.derive({**ingress, "metadata": {**ingress["metadata"], "uid": "u1"}}, 5, [])
    assert derived["metadata"]["name"] == "web-canary"
    assert derived["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "5",
        "nginx.ingress.kubernetes.io/canary-weight-total": "100"}
    [path] = derived["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": "web-canary", "port": {"number": 80}}
    readme = (ROOT / "README.md").read_text()
    assert "examples/nginx-job.yaml" in readme and "examples/nginx-ingress.yaml" in readme


def test_the_header_route_example_adds_and_removes_its_routes_on_the_istio_route() -> None:
    job = JobSpec.model_validate(_load("header-route-job.yaml"))
    held: list[HeaderRoute] = []
    names_seen = []
    for step in job.steps:
        if isinstance(step, SetHeaderRouteStep):
            held = apply_header_route(held, step.set_header_route)
            names_seen.append([route.name for route in held])
    assert names_seen == [["beta-testers"], ["beta-testers", "beta-cookie"], ["beta-cookie"], []]
    route = _load("istio-route.yaml")
    router = IstioRouter(ApiClient(), job.namespace, job.traffic)
    plan = router._plan(route)
    http = router._routes_with(route, plan, 10, [HeaderRoute.model_validate(
        {"name": "beta-testers", "match": [{"headerName": "x-canary", "headerValue": {"exact": "yes"}}]})])
    assert [r["name"] for r in http] == ["beta-testers", "primary"]
    assert http[0]["route"] == [{"destination": {"host": "web-canary", "port": {"number": 80}}}]
    assert "examples/header-route-job.yaml" in (ROOT / "README.md").read_text()
