"""The ``traffic`` part of a job: Argo Rollouts' trafficRouting names read as-is; misfits refused by field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from workflows.spec import JobSpec, validation_message
from workflows.traffic_spec import RoutingKind

BASE = {"name": "web", "namespace": "shop", "workload": {"name": "web"}, "steps": [{"setWeight": 5}]}

ISTIO = """
routing: istio
stableService: web-stable
canaryService: web-canary
istio:
  virtualService: {name: web, routes: [primary, secondary]}
"""
GATEWAY = """
routing: gatewayAPI
stableService: web-stable
canaryService: web-canary
gatewayAPI: {httpRoute: web.routes}
"""


def job(traffic: dict[str, Any] | str) -> JobSpec:
    value = yaml.safe_load(traffic) if isinstance(traffic, str) else traffic
    return JobSpec.model_validate({**BASE, "traffic": value})


def refused(traffic: dict[str, Any] | str) -> str:
    with pytest.raises(ValidationError) as error:
        job(traffic)
    return validation_message(error.value)


def test_argo_style_router_specs_read_and_round_trip() -> None:
    istio = job(ISTIO)
    assert istio.traffic.routing is RoutingKind.ISTIO and istio.traffic.router
    assert istio.traffic.istio is not None
    assert istio.traffic.istio.virtual_service.routes == ["primary", "secondary"]
    assert (istio.traffic.stable_service, istio.traffic.canary_service) == ("web-stable", "web-canary")
    gateway = job(GATEWAY)
    assert gateway.traffic.gateway_api is not None and gateway.traffic.gateway_api.http_route == "web.routes"
    for spec in (istio, gateway):
        dumped = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert JobSpec.model_validate(dumped) == spec
    assert "gatewayAPI" in gateway.model_dump(mode="json", by_alias=True)["traffic"]


NGINX = """
routing: nginx
stableService: web-stable
canaryService: web-canary
nginx:
  stableIngress: web
  additionalIngressAnnotations: {canary-by-header: X-Canary, example.com/team: shop}
"""
SUBSETS = """
routing: istio
istio:
  virtualService: {name: web, routes: [primary]}
  destinationRule: {name: web, stableSubsetName: stable, canarySubsetName: canary}
"""


def test_nginx_and_destination_rule_specs_read_as_argo_writes_them() -> None:
    nginx = job(NGINX)
    assert nginx.traffic.routing is RoutingKind.NGINX and nginx.traffic.nginx is not None
    assert nginx.traffic.nginx.stable_ingress == "web"
    assert nginx.traffic.nginx.additional_ingress_annotations["canary-by-header"] == "X-Canary"
    subsets = job(SUBSETS)
    assert subsets.traffic.subsets is not None and subsets.traffic.subsets.canary_subset_name == "canary"
    assert subsets.traffic.stable_service is None  # the subsets, not Services, stand for the two sides
    assert "DestinationRule web" in subsets.traffic.backends
    for spec in (nginx, subsets):
        assert JobSpec.model_validate(spec.model_dump(mode="json", by_alias=True, exclude_none=True)) == spec


def test_replica_ratio_stays_the_default_and_needs_nothing_else() -> None:
    spec = JobSpec.model_validate(BASE)
    assert spec.traffic.routing is RoutingKind.REPLICA_RATIO and not spec.traffic.router
    assert spec.traffic.stable_service is None and spec.traffic.istio is None


@pytest.mark.parametrize("traffic, message", [
    ({"routing": "linkerd"}, "traffic.routing: Input should be 'replicaRatio', 'istio', 'gatewayAPI' or 'nginx'"),
    ({"routing": "nginx", "stableService": "a", "canaryService": "b"}, "traffic.nginx: required with routing: nginx"),
    ({"routing": "nginx", "nginx": {"stableIngress": "web"}}, "traffic.stableService: required with routing: nginx"),
    ({"routing": "nginx", "stableService": "a", "canaryService": "b", "nginx": {}},
     "traffic.nginx.stableIngress: Field required"),
    ({"routing": "nginx", "stableService": "a", "canaryService": "b",
      "nginx": {"stableIngress": "web", "additionalIngressAnnotations": {"a b": "c"}}},
     "traffic.nginx.additionalIngressAnnotations: 'a b' is not an annotation key"),
    ({"routing": "istio", "stableService": "a", "canaryService": "b", "nginx": {"stableIngress": "web"},
      "istio": {"virtualService": {"name": "w"}}}, "traffic.nginx: only used with routing: nginx"),
    ({"routing": "istio", "stableService": "a", "istio": {"virtualService": {"name": "w"}, "destinationRule": {
        "name": "w", "stableSubsetName": "stable", "canarySubsetName": "canary"}}},
     "traffic.stableService: not used with istio.destinationRule"),
    ({"routing": "istio", "istio": {"virtualService": {"name": "w"}, "destinationRule": {
        "name": "w", "stableSubsetName": "v", "canarySubsetName": "v"}}},
     "traffic.istio.destinationRule: canarySubsetName must differ from stableSubsetName"),
    ({"routing": "istio", "istio": {"virtualService": {"name": "w"}, "destinationRule": {"name": "w"}}},
     "traffic.istio.destinationRule.stableSubsetName: Field required"),
    ({"routing": "istio", "stableService": "a", "canaryService": "b"}, "traffic.istio: required with routing: istio"),
    ({"routing": "gatewayAPI", "stableService": "a", "canaryService": "b"},
     "traffic.gatewayAPI: required with routing: gatewayAPI"),
    ({"routing": "istio", "canaryService": "b", "istio": {"virtualService": {"name": "web"}}},
     "traffic.stableService: required with routing: istio"),
    ({"routing": "istio", "stableService": "a", "istio": {"virtualService": {"name": "web"}}},
     "traffic.canaryService: required with routing: istio"),
    ({"routing": "istio", "stableService": "a", "canaryService": "a", "istio": {"virtualService": {"name": "w"}}},
     "traffic.canaryService: must differ from stableService"),
    ({"routing": "istio", "stableService": "a", "canaryService": "b", "istio": {"virtualService": {"name": "w"}},
      "gatewayAPI": {"httpRoute": "w"}}, "traffic.gatewayAPI: only used with routing: gatewayAPI"),
    ({"stableService": "web-stable"}, "traffic.stableService: only used with a router"),
    ({"routing": "istio", "stableService": "A", "canaryService": "b", "istio": {"virtualService": {"name": "w"}}},
     "traffic.stableService: String should match pattern"),
    ({"routing": "istio", "stableService": "a", "canaryService": "b", "istio": {"virtualService": {}}},
     "traffic.istio.virtualService.name: Field required"),
    ({"routing": "istio", "stableService": "a", "canaryService": "b",
      "istio": {"virtualService": {"name": "w", "routes": ["p", "p"]}}},
     "traffic.istio.virtualService.routes: routes named more than once: p"),
    ({"routing": "istio", "stableService": "a", "canaryService": "b",
      "istio": {"virtualService": {"name": "w", "route": ["p"]}}},
     "traffic.istio.virtualService.route: Extra inputs are not permitted"),
    ({"routing": "gatewayAPI", "stableService": "a", "canaryService": "b", "gatewayAPI": {"httpRoute": "Web"}},
     "traffic.gatewayAPI.httpRoute: String should match pattern"),
])
def test_misfit_traffic_is_refused_naming_the_field(traffic: dict[str, Any], message: str) -> None:
    assert message in refused(traffic)
