"""Traffic follows the router: the simulated mesh sends the canary what the VirtualService weighs.

With a router the canary's share of requests is the weight the job wrote, not its share of
pods: one canary pod beside four stable ones at ``setWeight: 10`` gets 10 % of the requests
in Prometheus. And analysis judges the canary through the router, so a canary answering
errors on its 10 % is rolled back, with the route back at 100 % stable.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kubernetes import client as k8s

from activities.metrics.prometheus import query
from devenv.traffic import ERROR_RATE_ANNOTATION
from tests.e2e.conftest import MESH_RATE, MeshMetrics, Shop, until
from tests.kube_helpers import eventually
from workflows.models import Phase

pytestmark = pytest.mark.cluster

WINDOW_SECONDS = 10
SERVICES = {"stableService": "web-stable", "canaryService": "web-canary"}
TRAFFIC = {"routing": "istio", **SERVICES, "istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}
HEALTHY = {ERROR_RATE_ANNOTATION: "0.001"}


def _create_virtual_service(shop: Shop) -> None:
    """Clients call the ``web`` Service; the VirtualService for that host decides where requests go."""
    k8s.CustomObjectsApi(shop.apps.api_client).create_namespaced_custom_object(
        "networking.istio.io", "v1", shop.namespace, "virtualservices", {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
            "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
                {"destination": {"host": "web-stable", "port": {"number": 80}}, "weight": 100},
                {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 0}]}]}})


def _canary_weight(shop: Shop) -> int:
    obj = k8s.CustomObjectsApi(shop.apps.api_client).get_namespaced_custom_object(
        "networking.istio.io", "v1", shop.namespace, "virtualservices", "web")
    return int({d["destination"]["host"]: d.get("weight", 0) for d in obj["spec"]["http"][0]["route"]}["web-canary"])


async def _attached(shop: Shop, steps: list[dict[str, Any]], **rules: Any) -> None:
    shop.create_workload()
    shop.apps.patch_namespaced_deployment("web", shop.namespace, {"spec": {"template": {"metadata": {
        "annotations": HEALTHY}}}})
    _create_virtual_service(shop)
    await shop.apply(steps=steps, traffic=TRAFFIC, **rules)
    await shop.wait(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached, route set up")


async def test_the_canary_gets_the_weight_of_the_route_not_its_share_of_pods(
        shop: Shop, mesh_metrics: MeshMetrics) -> None:
    await _attached(shop, [{"setWeight": 10}, {"pause": {}}])
    shop.set_image("registry.local/web:2", annotations=HEALTHY)
    paused = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "weight 10")
    assert paused.actual_weight == 10 and shop.canary_replicas() == 1 and shop.workload().spec.replicas == 4

    address = mesh_metrics.prometheus_address
    services = f'destination_service_namespace="{shop.namespace}"'
    canary = f'{services}, destination_service_name="web-canary"'
    eventually(lambda: (query(address, f"sum(istio_requests_total{{{canary}}})") or 0) > 0,
               timeout=30, interval=0.5, what="requests to web-canary in Prometheus")
    time.sleep(WINDOW_SECONDS + 2)  # a whole window at weight 10

    def rate(selector: str) -> float:
        value = query(address, f"sum(rate(istio_requests_total{{{selector}}}[{WINDOW_SECONDS}s]))")
        assert value is not None, selector
        return value

    total = rate(f'{services}, destination_service_name=~"web-stable|web-canary"')
    share = rate(canary) / total
    # One pod of five is 20 % by pod count; the route says 10 %.
    assert 0.08 <= share <= 0.12, share
    assert 0.8 * MESH_RATE <= total <= 1.2 * MESH_RATE, total
    # The user's Service is the VirtualService's host: its requests all went through the route.
    direct = query(address, f'sum(rate(istio_requests_total{{{services}, destination_service_name="web"}}'
                            f"[{WINDOW_SECONDS}s]))")
    assert not direct, direct


async def test_analysis_through_the_router_rolls_back_a_canary_answering_errors(shop: Shop) -> None:
    success_rate = {
        "name": "success-rate", "interval": "4s", "count": 2, "initialDelay": "12s",
        "successCondition": "result >= 0.99", "failureCondition": "result < 0.98",
        "provider": {"builtin": {"check": "request-success-rate", "workload": "web",
                                 "namespace": shop.namespace, "window": "12s"}}}
    await _attached(shop, [{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "health"}]}},
                           {"setWeight": 50}],
                    analysis={"templates": [{"name": "health", "metrics": [success_rate]}]}, progressDeadline="60s")
    shop.set_image("registry.local/web:2", annotations={ERROR_RATE_ANNOTATION: "0.05"})
    await until(lambda: asyncio.to_thread(_canary_weight, shop), lambda weight: weight == 10, "weight 10", timeout=60)

    failed = await shop.wait(lambda d: d.phase == Phase.FAILED, "rolled back by analysis", timeout=90)
    assert "metric success-rate failed" in (failed.last_error or "")
    value = failed.analyses[0].metrics[0].measurements[0].value
    # Measured on the 10 % the route sent it (about 100 requests in the window), not on no traffic.
    assert value is not None and 0.9 <= value < 0.98, value
    assert _canary_weight(shop) == 0 and failed.actual_weight == 0
    assert shop.canary_replicas() == 0
