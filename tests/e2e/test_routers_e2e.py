"""A release through a real router's object: an Istio VirtualService, a Gateway API HTTPRoute, an NGINX Ingress.

The local cluster serves the projects' own CRDs, so every write the job makes is checked
against the real schemas; no mesh data plane runs, so the test reads the route's weights back
from the API server at each step, and the stable Service's endpoints after the promotion.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client as k8s

from starter import client as canary
from starter.errors import InvalidInput
from tests.e2e.conftest import Shop, until
from workflows import names
from workflows.models import OperationRequest, Outcome, Phase

pytestmark = pytest.mark.cluster

STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
SERVICES = {"stableService": "web-stable", "canaryService": "web-canary"}


class Router:
    """One kind of router: the user's object, the job's traffic spec, and the weights read back."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "istio":
            self.group, self.plural = "networking.istio.io", "virtualservices"
            self.traffic: dict[str, Any] = {"routing": "istio", **SERVICES,
                                            "istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}
        elif kind == "nginx":
            self.group, self.plural = "networking.k8s.io", "ingresses"
            self.traffic = {"routing": "nginx", **SERVICES, "nginx": {"stableIngress": "web"}}
        else:
            self.group, self.plural = "gateway.networking.k8s.io", "httproutes"
            self.traffic = {"routing": "gatewayAPI", **SERVICES, "gatewayAPI": {"httpRoute": "web"}}

    def body(self) -> dict[str, Any]:
        if self.kind == "nginx":
            return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
                    "spec": {"ingressClassName": "nginx", "rules": [{"host": "web.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}]}}]}}
        if self.kind == "istio":
            return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
                    "spec": {"hosts": ["web.example.com"], "http": [{"name": "primary", "route": [
                        {"destination": {"host": "web-stable", "port": {"number": 80}}, "weight": 100},
                        {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 0}]}]}}
        return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
                "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
                    {"name": "web-stable", "port": 80, "weight": 1},
                    {"name": "web-canary", "port": 80, "weight": 0}]}]}}

    def create(self, shop: Shop) -> None:
        if self.kind == "nginx":
            k8s.NetworkingV1Api(shop.apps.api_client).create_namespaced_ingress(shop.namespace, self.body())
            return
        custom = k8s.CustomObjectsApi(shop.apps.api_client)
        custom.create_namespaced_custom_object(self.group, "v1", shop.namespace, self.plural, self.body())

    def weights(self, shop: Shop) -> tuple[int, int]:
        """(stable, canary) as the API server holds them now."""
        if self.kind == "nginx":
            canary = self.canary_ingress(shop)
            weight = int(canary.metadata.annotations["nginx.ingress.kubernetes.io/canary-weight"]) if canary else 0
            return 100 - weight, weight
        custom = k8s.CustomObjectsApi(shop.apps.api_client)
        obj = custom.get_namespaced_custom_object(self.group, "v1", shop.namespace, self.plural, "web")
        # The weighed route (a header route the job adds goes before it, to the canary alone).
        if self.kind == "istio":
            route = next(r for r in obj["spec"]["http"] if r.get("name") == "primary")["route"]
            by_host = {d["destination"]["host"]: d.get("weight", 0) for d in route}
        else:
            refs = next(r for r in obj["spec"]["rules"] if len(r["backendRefs"]) == 2)["backendRefs"]
            by_host = {r["name"]: r.get("weight", 1) for r in refs}
        return by_host["web-stable"], by_host["web-canary"]


    @staticmethod
    def canary_ingress(shop: Shop) -> Any:
        """The job's canary Ingress, None when there is none."""
        try:
            return k8s.NetworkingV1Api(shop.apps.api_client).read_namespaced_ingress("web-canary", shop.namespace)
        except k8s.exceptions.ApiException as error:
            if error.status == 404:
                return None
            raise


async def _weights(shop: Shop, router: Router, expected: tuple[int, int], what: str) -> None:
    await until(lambda: asyncio.to_thread(router.weights, shop), lambda held: held == expected, what, timeout=30)


def _endpoint_images(shop: Shop, service: str) -> list[str]:
    """Images of the Ready pods behind ``service``, sorted."""
    slices = shop.discovery.list_namespaced_endpoint_slice(
        shop.namespace, label_selector=f"kubernetes.io/service-name={service}").items
    ips = {a for s in slices for e in s.endpoints or [] if e.conditions.ready for a in e.addresses}
    return sorted(p.spec.containers[0].image for p in shop.pods() if p.status.pod_ip in ips)


@pytest.mark.parametrize("kind", ["istio", "gatewayAPI", "nginx"])
async def test_a_release_through_the_router(shop: Shop, kind: str) -> None:
    router = Router(kind)
    shop.create_workload()
    router.create(shop)
    await shop.apply(steps=STEPS, traffic=router.traffic)
    attached = await shop.wait(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached, route read")
    assert attached.routing == kind and router.weights(shop) == (100, 0)
    assert shop.core.read_namespaced_service("web-canary", shop.namespace).spec.selector == {
        "app": "web", "canary-delivery.dev/track": "canary"}

    shop.set_image("registry.local/web:2")
    first = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "weight 10")
    assert router.weights(shop) == (90, 10)
    assert first.actual_weight == 10 and [(r.stable, r.canary) for r in first.routes] == [(90, 10)]
    assert shop.canary_replicas() == 1 and shop.workload().spec.replicas == 4  # stable keeps its size

    await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
    second = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "weight 50")
    assert router.weights(shop) == (50, 50) and second.actual_weight == 50
    assert shop.canary_replicas() == 2 and shop.workload().spec.replicas == 4

    await canary.operate(shop.temporal, shop.namespace, "web", names.PROMOTE, OperationRequest(actor="e2e"))
    done = await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                           "promoted")
    assert router.weights(shop) == (100, 0) and done.actual_weight == 0
    # The stable Service now selects the Deployment's own pods of version 2.
    await until(lambda: asyncio.to_thread(_endpoint_images, shop, "web-stable"),
                lambda images: images == ["registry.local/web:2"] * 4, "web-stable on the 4 new pods", timeout=30)

    shop.set_image("registry.local/web:3")
    await shop.wait(lambda d: d.phase == Phase.PAUSED and d.canary is not None and d.canary.revision == 3,
                    "the next release at weight 10")
    assert router.weights(shop) == (90, 10)
    await canary.operate(shop.temporal, shop.namespace, "web", names.TERMINATE, OperationRequest(reason="e2e"))
    ended = await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated")
    assert router.weights(shop) == (100, 0) and ended.actual_weight == 0
    if kind == "nginx":
        assert router.canary_ingress(shop) is None, "the canary Ingress goes with the release"
    versions = await canary.versions(shop.temporal, shop.namespace, "web")
    assert versions.history[0].outcome == Outcome.TERMINATED
    await until(lambda: asyncio.to_thread(shop.pods, "canary"), lambda pods: pods == [], "no canary pods")

    await canary.operate(shop.temporal, shop.namespace, "web", names.DELETE, OperationRequest())
    await until(lambda: asyncio.to_thread(lambda: [s.metadata.name for s in shop.core.list_namespaced_service(
        shop.namespace).items]), lambda names_: sorted(names_) == ["web"], "the job's Services removed")
    assert router.weights(shop) == (100, 0)
    if kind == "nginx":
        assert router.canary_ingress(shop) is None
        user = k8s.NetworkingV1Api(shop.apps.api_client).read_namespaced_ingress("web", shop.namespace)
        assert user.metadata.annotations is None and user.spec.rules[0].http.paths[0].backend.service.name == (
            "web-stable"), "the user's Ingress as it was"


async def test_apply_refuses_a_router_object_that_is_not_there(shop: Shop) -> None:
    shop.create_workload()
    router = Router("istio")
    with pytest.raises(InvalidInput) as error:
        await shop.apply(steps=STEPS, traffic=router.traffic)
    assert error.value.field == "traffic.istio.virtualService.name"
    assert "no VirtualService 'web'" in str(error.value)
    workload = shop.workload()
    assert not workload.spec.paused and "canary-delivery.dev/job" not in (workload.metadata.annotations or {})
