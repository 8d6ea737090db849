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
from workflows.spec import JobSpec
from workflows.traffic_spec import Traffic

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> Any:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


@pytest.mark.parametrize(("job_file", "route_file", "router"), [
    ("istio-job.yaml", "istio-route.yaml", IstioRouter),
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
