"""Header routes, DestinationRule subsets and the NGINX canary Ingress, against the real API server.

The local cluster serves Istio's and Gateway API's own CRDs and the core Ingress, so every
object the routers write here passes the real schemas. Covers: a header route added before the
weighed route (with what that route matches, to the canary destination as the user wrote it),
kept by a weight write, replaced and removed by the next write without it, and no write when
all is held; the job's routes never read as the user's; subsets labelled to select each side's
pods; NGINX's canary Ingress derived from the user's, weighed, header-routed, and deleted at
weight 0; and each misfit refused naming its field.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from activities import errors
from activities.routers.activities import RouterActivities
from activities.routers.base import HEADER_ROUTES_ANNOTATION
from activities.templates import JOB_KEY, TRACK_LABEL
from tests.activities.test_kube import JOB, Web, failure, run
from tests.activities.test_routers import GATEWAY, ISTIO, ROUTE, VS, Routed, http_route, virtual_service
from workflows.header_route import HeaderRoute
from workflows.routing import RouterRequest, RouteWeight, ServicesRequest, SetWeightRequest
from workflows.traffic_spec import Traffic

pytestmark = pytest.mark.cluster

BETA = HeaderRoute.model_validate({"name": "beta", "match": [
    {"headerName": "X-Canary", "headerValue": {"exact": "yes"}},
    {"headerName": "user-agent", "headerValue": {"prefix": "Mozilla"}}]})
COOKIE = HeaderRoute.model_validate({"name": "testers", "match": [{"cookieName": "canary"}]})
DR = ("networking.istio.io", "v1", "destinationrules")
SUBSETS = {"routing": "istio", "istio": {
    "virtualService": {"name": "web", "routes": ["primary"]},
    "destinationRule": {"name": "web", "stableSubsetName": "stable", "canarySubsetName": "canary"}}}
NGINX = {"routing": "nginx", "stableService": "web-stable", "canaryService": "web-canary",
         "nginx": {"stableIngress": "web", "additionalIngressAnnotations": {"canary-weight-total": "100"}}}
A = "nginx.ingress.kubernetes.io/"


def set_weight(routed: Routed, canary: int, *headers: HeaderRoute) -> Any:
    return run(routed.acts.set_router_weight, routed.req(SetWeightRequest, canary_weight=canary,
                                                         header_routes=list(headers)))


@pytest.fixture
def web(kube_api: ApiClient, namespace: str) -> Web:
    return Web(kube_api, namespace)


def test_istio_header_route_goes_before_the_weighed_route_and_leaves_with_the_next_write(web: Web) -> None:
    routed = Routed(web, ISTIO)
    routed.custom.create_namespaced_custom_object(*VS[:2], web.ns, VS[2], virtual_service())
    held = set_weight(routed, 10, BETA)
    assert held.routes == [RouteWeight(route="primary", stable=90, canary=10)] and held.header_routes == ["beta"]
    http = routed.read(VS)["spec"]["http"]
    assert [r["name"] for r in http] == ["admin", "beta", "primary"]
    assert http[1]["match"] == [{"headers": {"x-canary": {"exact": "yes"}, "user-agent": {"prefix": "Mozilla"}}}]
    assert http[1]["route"] == [{"destination": {"host": "web-canary", "port": {"number": 80}}}]
    assert [d["weight"] for d in http[2]["route"]] == [90, 10]
    assert run(routed.acts.read_router_weights, routed.req()) == held

    version = routed.read(VS)["metadata"]["resourceVersion"]
    assert set_weight(routed, 10, BETA) == held
    assert routed.read(VS)["metadata"]["resourceVersion"] == version, "all held already: no write"

    held = set_weight(routed, 30, BETA, COOKIE)  # a second route, and a weight: one write
    http = routed.read(VS)["spec"]["http"]
    assert [r["name"] for r in http] == ["admin", "beta", "testers", "primary"]
    assert http[2]["match"][0]["headers"] == {"cookie": {"regex": "^(.*;\\s*)?canary=always(;.*)?$"}}
    assert held.header_routes == ["beta", "testers"] and held.canary_percent == 30

    held = set_weight(routed, 30, COOKIE)
    assert [r["name"] for r in routed.read(VS)["spec"]["http"]] == ["admin", "testers", "primary"]
    run(routed.acts.cleanup_router, routed.req())
    obj = routed.read(VS)
    assert obj["spec"]["http"] == virtual_service()["spec"]["http"], "the user's routes, as they were"
    assert HEADER_ROUTES_ANNOTATION not in (obj["metadata"].get("annotations") or {})


def test_istio_without_named_routes_still_sees_one_route_of_the_users(web: Web) -> None:
    traffic = {**ISTIO, "istio": {"virtualService": {"name": "web"}}}
    routed = Routed(web, traffic)
    body = virtual_service()
    body["spec"]["http"] = body["spec"]["http"][1:]  # only `primary`
    routed.custom.create_namespaced_custom_object(*VS[:2], web.ns, VS[2], body)
    set_weight(routed, 5, COOKIE)
    assert [r["name"] for r in routed.read(VS)["spec"]["http"]] == ["testers", "primary"]
    run(routed.acts.check_router, routed.req())  # the job's route is not counted as the user's
    assert set_weight(routed, 5).header_routes == []


def test_gateway_api_header_rule_keeps_the_weighed_rules_matches(web: Web) -> None:
    routed = Routed(web, GATEWAY)
    body = http_route()
    body["spec"]["rules"][1]["matches"] = [{"path": {"type": "PathPrefix", "value": "/shop"}}]
    routed.custom.create_namespaced_custom_object(*ROUTE[:2], web.ns, ROUTE[2], body)
    held = set_weight(routed, 20, BETA, COOKIE)
    assert held.header_routes == ["beta", "testers"] and held.canary_percent == 20
    rules = routed.read(ROUTE)["spec"]["rules"]
    assert [r.get("name") for r in rules] == [None, "beta", "testers", None]
    assert rules[1]["matches"] == [{"path": {"type": "PathPrefix", "value": "/shop"}, "headers": [
        {"name": "X-Canary", "type": "Exact", "value": "yes"},
        {"name": "user-agent", "type": "RegularExpression", "value": "^Mozilla.*"}]}]
    assert rules[2]["matches"][0]["headers"] == [
        {"name": "Cookie", "type": "RegularExpression", "value": "^(.*;\\s*)?canary=always(;.*)?$"}]
    assert [ref["name"] for ref in rules[1]["backendRefs"]] == ["web-canary"]
    assert [ref["weight"] for ref in rules[3]["backendRefs"]] == [80, 20]

    held = set_weight(routed, 0)
    rules = routed.read(ROUTE)["spec"]["rules"]
    assert len(rules) == 2 and held.header_routes == [] and [r["weight"] for r in rules[1]["backendRefs"]] == [100, 0]


def test_destination_rule_subsets_select_each_sides_pods_and_are_weighed(web: Web) -> None:
    routed = Routed(web, SUBSETS)
    routed.custom.create_namespaced_custom_object(*DR[:2], web.ns, DR[2], {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "web"},
        "spec": {"host": f"web.{web.ns}.svc.cluster.local", "subsets": [
            {"name": "stable", "labels": {"app": "web"}}, {"name": "canary"}]}})
    vs = virtual_service()
    vs["spec"]["http"][1]["route"] = [
        {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
        {"destination": {"host": "web", "subset": "canary"}, "weight": 0}]
    routed.custom.create_namespaced_custom_object(*VS[:2], web.ns, VS[2], vs)
    run(routed.acts.check_router, routed.req())
    routed.services()
    subsets = {s["name"]: s["labels"] for s in routed.read(DR)["spec"]["subsets"]}
    assert subsets["canary"] == {TRACK_LABEL: "canary"}
    stable_pods = web.ready_pods(",".join(f"{k}={v}" for k, v in subsets["stable"].items()))
    assert len(stable_pods) == 3 and all(TRACK_LABEL not in (p.metadata.labels or {}) for p in stable_pods)
    assert {s.metadata.name for s in web.core.list_namespaced_service(web.ns).items} == {"web"}, "no Services"

    held = set_weight(routed, 25, BETA)
    assert held.routes == [RouteWeight(route="primary", stable=75, canary=25)]
    http = routed.read(VS)["spec"]["http"]
    assert http[1]["route"] == [{"destination": {"host": "web", "subset": "canary"}}]
    run(routed.acts.cleanup_router, routed.req())
    assert [d["weight"] for d in routed.read(VS)["spec"]["http"][1]["route"]] == [100, 0]


@pytest.mark.parametrize("change, field, says", [
    ({"stableSubsetName": "main"}, "traffic.istio.destinationRule.stableSubsetName", "has no subset 'main'"),
    ({"name": "other"}, "traffic.istio.destinationRule.name", "no DestinationRule 'other'"),
    ({"canarySubsetName": "preview"}, "traffic.istio.destinationRule.canarySubsetName", "no subset 'preview'"),
])
def test_subsets_that_do_not_fit_are_refused_naming_the_field(
        kube_api: ApiClient, namespace: str, change: dict[str, str], field: str, says: str) -> None:
    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(*DR[:2], namespace, DR[2], {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "web"},
        "spec": {"host": "web", "subsets": [{"name": "stable"}, {"name": "canary"}]}})
    vs = virtual_service()
    vs["spec"]["http"][1]["route"] = [{"destination": {"host": "web", "subset": "stable"}, "weight": 100},
                                      {"destination": {"host": "web", "subset": "canary"}, "weight": 0}]
    custom.create_namespaced_custom_object(*VS[:2], namespace, VS[2], vs)
    traffic = {**SUBSETS, "istio": {**SUBSETS["istio"], "destinationRule": {
        **SUBSETS["istio"]["destinationRule"], **change}}}
    error = failure(RouterActivities(kube_api).check_router, RouterRequest(
        namespace=namespace, job=JOB, workload="web", traffic=Traffic.model_validate(traffic)))
    assert error.type == errors.ROUTER_CONFIG_INVALID and error.non_retryable
    assert error.message.startswith(f"{field}: ") and says in error.message, error.message


def user_ingress(backend: str = "web-stable") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/"}},
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["web.example.com"], "secretName": "web-tls"}],
                     "rules": [{"host": "web.example.com", "http": {"paths": [
                         {"path": "/", "pathType": "Prefix",
                          "backend": {"service": {"name": backend, "port": {"number": 80}}}},
                         {"path": "/admin", "pathType": "Prefix",
                          "backend": {"service": {"name": "web-admin", "port": {"number": 80}}}}]}}]}}


def test_nginx_canary_ingress_is_derived_weighed_header_routed_and_removed_at_zero(web: Web) -> None:
    routed = Routed(web, NGINX)
    net = client.NetworkingV1Api(web.api)
    net.create_namespaced_ingress(web.ns, user_ingress())
    run(routed.acts.check_router, routed.req())
    routed.services()
    assert set_weight(routed, 0).routes == [RouteWeight(route="web-canary", stable=100, canary=0)]
    assert [i.metadata.name for i in net.list_namespaced_ingress(web.ns).items] == ["web"], "nothing at 0"

    held = set_weight(routed, 10)
    assert held.routes == [RouteWeight(route="web-canary", stable=90, canary=10)]
    canary = net.read_namespaced_ingress("web-canary", web.ns)
    assert canary.metadata.labels[JOB_KEY] == JOB
    assert (canary.metadata.owner_references[0].kind, canary.metadata.owner_references[0].name) == ("Ingress", "web")
    assert canary.metadata.annotations == {A + "canary": "true", A + "canary-weight": "10",
                                           A + "canary-weight-total": "100"}
    assert canary.spec.ingress_class_name == "nginx" and canary.spec.tls is None
    [rule] = canary.spec.rules
    assert rule.host == "web.example.com"
    assert [(p.path, p.backend.service.name, p.backend.service.port.number) for p in rule.http.paths] == [
        ("/", "web-canary", 80)], "only the stable Service's paths, sent to the canary Service"
    assert run(routed.acts.read_router_weights, routed.req()) == held
    version = canary.metadata.resource_version
    set_weight(routed, 10)
    assert net.read_namespaced_ingress("web-canary", web.ns).metadata.resource_version == version

    regex = HeaderRoute.model_validate({"name": "beta", "match": [
        {"headerName": "X-Canary", "headerValue": {"regex": "^(yes|1)$"}}]})
    for headers, expected in (
            ([BETA.model_copy(update={"match": BETA.matches[:1]})],
             {A + "canary-by-header": "X-Canary", A + "canary-by-header-value": "yes"}),
            ([regex], {A + "canary-by-header": "X-Canary", A + "canary-by-header-pattern": "^(yes|1)$"}),
            ([COOKIE], {A + "canary-by-cookie": "canary"})):
        held = set_weight(routed, 0, *headers)  # an A/B test: only the matching requests reach the canary
        annotations = net.read_namespaced_ingress("web-canary", web.ns).metadata.annotations
        assert {k: v for k, v in annotations.items() if "canary-by" in k} == expected
        assert annotations[A + "canary-weight"] == "0" and held.header_routes == [headers[0].name]

    held = set_weight(routed, 0)
    assert held.header_routes == [] and held.canary_percent == 0
    assert [i.metadata.name for i in net.list_namespaced_ingress(web.ns).items] == ["web"]
    set_weight(routed, 50)
    run(routed.acts.cleanup_router, routed.req())
    assert [i.metadata.name for i in net.list_namespaced_ingress(web.ns).items] == ["web"]
    assert net.read_namespaced_ingress("web", web.ns).metadata.annotations == {
        "nginx.ingress.kubernetes.io/rewrite-target": "/"}, "the user's Ingress untouched"


@pytest.mark.parametrize("setup, says", [
    (None, "no Ingress 'web'"),
    ("other-backend", "no path of Ingress"),
    ("taken", "exists and is not this job's"),
])
def test_nginx_that_does_not_fit_is_refused_naming_the_field(
        kube_api: ApiClient, namespace: str, setup: str | None, says: str) -> None:
    net = client.NetworkingV1Api(kube_api)
    if setup is not None:
        net.create_namespaced_ingress(namespace, user_ingress("web" if setup == "other-backend" else "web-stable"))
    if setup == "taken":
        other = user_ingress()
        other["metadata"] = {"name": "web-canary"}
        net.create_namespaced_ingress(namespace, other)
    error = failure(RouterActivities(kube_api).check_router, RouterRequest(
        namespace=namespace, job=JOB, workload="web", traffic=Traffic.model_validate(NGINX)))
    assert error.type == errors.ROUTER_CONFIG_INVALID and error.non_retryable
    assert error.message.startswith("traffic.nginx.stableIngress: ") and says in error.message, error.message


def test_services_request_for_subsets_needs_no_services(web: Web) -> None:
    """Aiming subsets at a stable version without pods yet is retried, like the stable Service's."""
    routed = Routed(web, SUBSETS)
    error = failure(routed.acts.prepare_router_services,
                    routed.req(ServicesRequest, stable_template_hash="0123456789ab"))
    assert error.type == errors.STABLE_NOT_ROLLED_OUT and not error.non_retryable
