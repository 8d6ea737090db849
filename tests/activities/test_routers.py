"""The traffic-router activities against the real local cluster and the real Istio / Gateway API CRDs.

Covers: the stable and canary Services (created with the workload's ports, each selecting its
own pods, shown by their endpoints; the user's own Service left alone), exact weights set and
read back on the routes the spec names and on nothing else, no write when nothing changes,
cleanup to 100 % stable, and a spec that does not fit the cluster refused naming its field.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.routers.activities import RouterActivities
from activities.routers.base import Resource
from activities.routers.istio import IstioRouter
from activities.templates import JOB_KEY, TRACK_LABEL
from tests.activities.test_kube import JOB, Web, failure, run
from tests.kube_helpers import eventually, service
from workflows.routing import RouterRequest, RouterWeights, RouteWeight, ServicesRequest, SetWeightRequest
from workflows.traffic_spec import Traffic

pytestmark = pytest.mark.cluster

ISTIO = {"routing": "istio", "stableService": "web-stable", "canaryService": "web-canary",
         "istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}
GATEWAY = {"routing": "gatewayAPI", "stableService": "web-stable", "canaryService": "web-canary",
           "gatewayAPI": {"httpRoute": "web"}}
VS = ("networking.istio.io", "v1", "virtualservices")
ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")


def virtual_service(stable: str = "web-stable", canary: str = "web-canary") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
            "spec": {"hosts": ["web.example.com"], "http": [
                {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
                 "route": [{"destination": {"host": "web-admin"}}]},
                {"name": "primary", "route": [
                    {"destination": {"host": stable, "port": {"number": 80}}, "weight": 100},
                    {"destination": {"host": canary, "port": {"number": 80}}, "weight": 0}]},
            ]}}


def http_route() -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
                {"matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}],
                 "backendRefs": [{"name": "web-canary", "port": 80}]},
                {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 1},
                                 {"name": "web-canary", "port": 80, "weight": 0}]},
            ]}}


class Routed:
    """``web`` attached, with a one-pod canary of version 2, and a router's object beside it."""

    def __init__(self, web: Web, traffic: dict[str, Any]) -> None:
        self.web, self.custom = web, client.CustomObjectsApi(web.api)
        self.acts = RouterActivities(web.api)
        self.traffic = Traffic.model_validate(traffic)
        self.stable = web.attach()
        canary = dict(self.stable.template)
        canary["spec"] = {"containers": [{"name": "app", "image": "registry.local/web:2"}]}
        web.start_canary(self.stable.model_copy(update={"template": canary, "template_hash": "v2hash"}))

    def req(self, cls: type[Any] = RouterRequest, **fields: Any) -> Any:
        return cls(namespace=self.web.ns, job=JOB, workload="web", traffic=self.traffic, **fields)

    def services(self) -> None:
        request = self.req(ServicesRequest, stable_template_hash=self.stable.template_hash)
        run(self.acts.prepare_router_services, request)

    def set_weight(self, canary: int) -> RouterWeights:
        return run(self.acts.set_router_weight, self.req(SetWeightRequest, canary_weight=canary))

    def read(self, resource: tuple[str, str, str]) -> dict[str, Any]:
        group, version, plural = resource
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(group, version, self.web.ns, plural, "web")
        return obj

    def endpoint_ips(self, name: str) -> set[str]:
        slices = self.web.discovery.list_namespaced_endpoint_slice(
            self.web.ns, label_selector=f"kubernetes.io/service-name={name}").items
        return {a for s in slices for e in s.endpoints or [] if e.conditions.ready for a in e.addresses}


@pytest.fixture
def web(kube_api: ApiClient, namespace: str) -> Web:
    return Web(kube_api, namespace)


def test_istio_services_select_their_pods_and_weights_are_exact(web: Web) -> None:
    routed = Routed(web, ISTIO)
    group, version, plural = VS
    routed.custom.create_namespaced_custom_object(group, version, web.ns, plural, virtual_service())
    run(routed.acts.check_router, routed.req())
    routed.services()

    stable_svc = web.core.read_namespaced_service("web-stable", web.ns)
    assert stable_svc.metadata.labels[JOB_KEY] == JOB
    assert [(p.port, p.target_port) for p in stable_svc.spec.ports] == [(80, 8080)]  # from Service `web`
    assert web.core.read_namespaced_service("web-canary", web.ns).spec.selector == {
        "app": "web", TRACK_LABEL: "canary"}
    eventually(lambda: len(web.ready_pods(f"{TRACK_LABEL}=canary")) == 1, what="a Ready canary pod")
    stable_ips = {p.status.pod_ip for p in web.ready_pods(f"app=web,!{TRACK_LABEL}")}
    canary_ips = {p.status.pod_ip for p in web.ready_pods(f"{TRACK_LABEL}=canary")}
    eventually(lambda: routed.endpoint_ips("web-stable") == stable_ips and len(stable_ips) == 3,
               what="web-stable's endpoints: the 3 stable pods only")
    eventually(lambda: routed.endpoint_ips("web-canary") == canary_ips, what="web-canary's endpoints: the canary pod")

    for weight in (1, 33, 100, 0):
        held = routed.set_weight(weight)
        assert held == RouterWeights(routes=[RouteWeight(route="primary", stable=100 - weight, canary=weight)])
        assert run(routed.acts.read_router_weights, routed.req()) == held
        http = routed.read(VS)["spec"]["http"]
        assert [d["weight"] for d in http[1]["route"]] == [100 - weight, weight]
        assert http[0] == virtual_service()["spec"]["http"][0], "a route the spec does not name is untouched"

    routed.set_weight(5)
    version_before = routed.read(VS)["metadata"]["resourceVersion"]
    assert routed.set_weight(5).canary_percent == 5
    assert routed.read(VS)["metadata"]["resourceVersion"] == version_before, "the same weight again writes nothing"

    run(routed.acts.cleanup_router, routed.req())
    assert [d["weight"] for d in routed.read(VS)["spec"]["http"][1]["route"]] == [100, 0]
    remaining = {s.metadata.name for s in web.core.list_namespaced_service(web.ns).items}
    assert remaining == {"web"}, "the Services the job created are gone; the user's stays"


def test_gateway_api_weighs_the_rule_with_both_services_and_keeps_the_users_service(web: Web) -> None:
    routed = Routed(web, GATEWAY)
    web.core.create_namespaced_service(web.ns, service("web-stable", selector={"app": "web"}))  # the user's own
    group, version, plural = ROUTE
    routed.custom.create_namespaced_custom_object(group, version, web.ns, plural, http_route())
    run(routed.acts.check_router, routed.req())
    routed.services()
    assert web.core.read_namespaced_service("web-stable", web.ns).spec.selector == {"app": "web"}
    assert web.core.read_namespaced_service("web-canary", web.ns).metadata.labels[JOB_KEY] == JOB

    held = routed.set_weight(10)
    assert held.routes == [RouteWeight(route="rules[1]", stable=90, canary=10)] and held.canary_percent == 10
    rules = routed.read(ROUTE)["spec"]["rules"]
    assert [ref.get("weight") for ref in rules[1]["backendRefs"]] == [90, 10]
    assert rules[0]["backendRefs"] == [{"group": "", "kind": "Service", "name": "web-canary", "port": 80,
                                        "weight": 1}], "the header rule is the user's: only defaults added"

    run(routed.acts.cleanup_router, routed.req())
    assert [ref["weight"] for ref in routed.read(ROUTE)["spec"]["rules"][1]["backendRefs"]] == [100, 0]
    assert {s.metadata.name for s in web.core.list_namespaced_service(web.ns).items} == {"web", "web-stable"}


def test_a_new_stable_version_without_pods_yet_is_retried_not_refused(web: Web) -> None:
    routed = Routed(web, ISTIO)
    error = failure(routed.acts.prepare_router_services,
                    routed.req(ServicesRequest, stable_template_hash="0123456789ab"))
    assert error.type == errors.STABLE_NOT_ROLLED_OUT and not error.non_retryable


@pytest.mark.parametrize("traffic, setup, field, says", [
    (ISTIO, None, "traffic.istio.virtualService.name", "no VirtualService 'web'"),
    ({**ISTIO, "istio": {"virtualService": {"name": "web", "routes": ["primary", "main"]}}}, "vs",
     "traffic.istio.virtualService.routes", "no http route named 'main' (its named routes: admin, primary)"),
    ({**ISTIO, "istio": {"virtualService": {"name": "web"}}}, "vs",
     "traffic.istio.virtualService.routes", "has 2 http routes; name the ones to weigh"),
    ({**ISTIO, "canaryService": "web-preview"}, "vs", "traffic.canaryService",
     "does not send to Service 'web-preview'"),
    ({**ISTIO, "istio": {"virtualService": {"name": "web", "routes": ["admin"]}}}, "vs",
     "traffic.stableService", "admin of VirtualService"),
    (GATEWAY, None, "traffic.gatewayAPI.httpRoute", "no HTTPRoute 'web'"),
    ({**GATEWAY, "stableService": "web-main"}, "route", "traffic.gatewayAPI.httpRoute",
     "no rule of HTTPRoute"),
])
def test_routing_that_does_not_fit_the_cluster_is_refused_naming_the_field(
        kube_api: ApiClient, namespace: str, traffic: dict[str, Any], setup: str | None, field: str,
        says: str) -> None:
    custom = client.CustomObjectsApi(kube_api)
    if setup == "vs":
        custom.create_namespaced_custom_object(*VS[:2], namespace, VS[2], virtual_service(
            stable=f"web-stable.{namespace}.svc.cluster.local"))
    elif setup == "route":
        custom.create_namespaced_custom_object(*ROUTE[:2], namespace, ROUTE[2], http_route())
    acts = RouterActivities(kube_api)
    request = RouterRequest(namespace=namespace, job=JOB, workload="web", traffic=Traffic.model_validate(traffic))
    error = failure(acts.check_router, request)
    assert error.type == errors.ROUTER_CONFIG_INVALID and error.non_retryable
    assert error.message.startswith(f"{field}: ") and says in error.message, error.message


@pytest.mark.parametrize("resource", [
    Resource("networking.istio.io", "v1", "sidecars", "Sidecar"),  # group served, this kind's CRD not installed
    Resource("mesh.example.io", "v1", "virtualservices", "VirtualService"),  # no such API group at all
])
def test_a_router_whose_crd_is_not_installed_is_refused_as_such(
        kube_api: ApiClient, namespace: str, resource: Resource) -> None:
    router = IstioRouter(kube_api, namespace, Traffic.model_validate(ISTIO))
    router.resource = resource  # the VirtualService router, asking for a kind this cluster lacks
    with pytest.raises(ApplicationError) as refused:
        run(lambda _: router.check(), None)
    assert refused.value.type == errors.ROUTER_CONFIG_INVALID and refused.value.non_retryable
    assert refused.value.message.startswith("traffic.routing: the cluster does not serve ")
    assert f"install the {resource.kind} CRD" in refused.value.message
    router.cleanup()  # nothing to put back, and no error: delete works without the mesh
