"""Header routes and DestinationRule subsets in a release, on the real cluster with the real schemas.

Each router's object is read back from the API server at every pause: the header route there
while the steps say so, gone after the step that removes it, and gone (with the route at 100 %
stable) after a terminate. Subsets: the job labels them so that each selects its side's pods,
and moves the stable one to the new version's pods at promotion.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client as k8s

from starter import client as canary
from starter.errors import InvalidInput
from tests.e2e.conftest import Shop, until
from tests.e2e.test_routers_e2e import Router
from workflows import names
from workflows.models import OperationRequest, Phase

pytestmark = pytest.mark.cluster

BETA = {"setHeaderRoute": {"name": "beta", "match": [{"headerName": "x-canary", "headerValue": {"exact": "yes"}}]}}
STEPS = [{"setWeight": 10}, BETA, {"pause": {}}, {"setHeaderRoute": {"name": "beta"}}, {"pause": {}}, BETA,
         {"pause": {}}]
NGINX_HEADER = "nginx.ingress.kubernetes.io/canary-by-header"


def header_routes(shop: Shop, router: Router) -> list[str]:
    """The header routes the router's object holds now, by name (NGINX: the header it routes by)."""
    if router.kind == "nginx":
        ingress = router.canary_ingress(shop)
        annotations = (ingress.metadata.annotations or {}) if ingress else {}
        return [annotations[NGINX_HEADER]] if NGINX_HEADER in annotations else []
    custom = k8s.CustomObjectsApi(shop.apps.api_client)
    obj = custom.get_namespaced_custom_object(router.group, "v1", shop.namespace, router.plural, "web")
    routes = obj["spec"]["http" if router.kind == "istio" else "rules"]
    return [str(r["name"]) for r in routes if r.get("name") and r.get("name") != "primary"]


async def _at(shop: Shop, step: int) -> Any:
    return await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == step, f"the pause at {step + 1}")


@pytest.mark.parametrize("kind", ["istio", "gatewayAPI", "nginx"])
async def test_a_header_route_on_off_and_gone_at_terminate(shop: Shop, kind: str) -> None:
    router = Router(kind)
    shop.create_workload()
    router.create(shop)
    await shop.apply(steps=STEPS, traffic=router.traffic)
    await shop.wait(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached")
    shop.set_image("registry.local/web:2")

    on = await _at(shop, 2)
    expected = ["x-canary"] if kind == "nginx" else ["beta"]
    assert header_routes(shop, router) == expected and router.weights(shop) == (90, 10)
    assert [r.name for r in on.header_routes] == ["beta"]

    await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
    off = await _at(shop, 4)
    assert header_routes(shop, router) == [] and router.weights(shop) == (90, 10) and off.header_routes == []

    await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
    await _at(shop, 6)
    assert header_routes(shop, router) == expected

    await canary.operate(shop.temporal, shop.namespace, "web", names.TERMINATE, OperationRequest(reason="e2e"))
    ended = await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated")
    assert header_routes(shop, router) == [] and router.weights(shop) == (100, 0)
    assert ended.header_routes == [] and ended.actual_weight == 0


def _subset_objects(shop: Shop) -> None:
    custom = k8s.CustomObjectsApi(shop.apps.api_client)
    custom.create_namespaced_custom_object("networking.istio.io", "v1", shop.namespace, "destinationrules", {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "web"},
        "spec": {"host": "web", "subsets": [{"name": "stable"}, {"name": "canary"}]}})
    custom.create_namespaced_custom_object("networking.istio.io", "v1", shop.namespace, "virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
            {"destination": {"host": "web", "subset": "canary"}, "weight": 0}]}]}})


def _subsets(shop: Shop) -> tuple[dict[str, dict[str, str]], tuple[int, int]]:
    """The subsets' labels and the (stable, canary) weights, as the API server holds them."""
    custom = k8s.CustomObjectsApi(shop.apps.api_client)
    rule = custom.get_namespaced_custom_object("networking.istio.io", "v1", shop.namespace, "destinationrules", "web")
    vs = custom.get_namespaced_custom_object("networking.istio.io", "v1", shop.namespace, "virtualservices", "web")
    primary = next(r for r in vs["spec"]["http"] if r["name"] == "primary")
    weights = {d["destination"]["subset"]: d.get("weight", 0) for d in primary["route"]}
    return ({s["name"]: s.get("labels") or {} for s in rule["spec"]["subsets"]},
            (weights["stable"], weights["canary"]))


def _images(shop: Shop, labels: dict[str, str]) -> list[str]:
    selector = ",".join(f"{k}={v}" for k, v in {"app": "web", **labels}.items())
    return sorted(p.spec.containers[0].image for p in shop.core.list_namespaced_pod(
        shop.namespace, label_selector=selector).items if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []))


async def test_destination_rule_subsets_through_a_release(shop: Shop) -> None:
    shop.create_workload()
    _subset_objects(shop)
    traffic = {"routing": "istio", "istio": {
        "virtualService": {"name": "web", "routes": ["primary"]},
        "destinationRule": {"name": "web", "stableSubsetName": "stable", "canarySubsetName": "canary"}}}
    await shop.apply(steps=[{"setWeight": 10}, BETA, {"pause": {}}], traffic=traffic)
    await shop.wait(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached")
    labels, weights = _subsets(shop)
    assert weights == (100, 0) and labels["canary"] == {"canary-delivery.dev/track": "canary"}
    assert _images(shop, labels["stable"]) == ["registry.local/web:1"] * 4
    assert [s.metadata.name for s in shop.core.list_namespaced_service(shop.namespace).items] == ["web"]

    shop.set_image("registry.local/web:2")
    paused = await _at(shop, 2)
    labels, weights = _subsets(shop)
    assert weights == (90, 10) and paused.actual_weight == 10
    assert _images(shop, labels["canary"]) == ["registry.local/web:2"]
    assert _images(shop, labels["stable"]) == ["registry.local/web:1"] * 4

    await canary.operate(shop.temporal, shop.namespace, "web", names.PROMOTE, OperationRequest(actor="e2e"))
    await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                    "promoted")
    labels, weights = _subsets(shop)
    assert weights == (100, 0)
    await until(lambda: asyncio.to_thread(_images, shop, labels["stable"]),
                lambda images: images == ["registry.local/web:2"] * 4, "the stable subset on the 4 new pods")
    custom = k8s.CustomObjectsApi(shop.apps.api_client)
    vs = custom.get_namespaced_custom_object("networking.istio.io", "v1", shop.namespace, "virtualservices", "web")
    assert [r["name"] for r in vs["spec"]["http"]] == ["primary"], "the header route went with the release"


async def test_apply_refuses_an_nginx_ingress_without_the_stable_service(shop: Shop) -> None:
    shop.create_workload()
    router = Router("nginx")
    body = router.body()
    body["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "web"
    k8s.NetworkingV1Api(shop.apps.api_client).create_namespaced_ingress(shop.namespace, body)
    with pytest.raises(InvalidInput) as error:
        await shop.apply(steps=STEPS, traffic=router.traffic)
    assert error.value.field == "traffic.nginx.stableIngress"
    assert "no path of Ingress" in str(error.value)
    assert "canary-delivery.dev/job" not in (shop.workload().metadata.annotations or {})
