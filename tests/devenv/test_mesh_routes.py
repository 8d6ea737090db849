"""The simulated mesh follows a router's weights and header matches, as Istio, Gateway API or NGINX would."""

from __future__ import annotations

from typing import Any

import pytest

from devenv.mesh_routes import (
    CANARY_ANNOTATION,
    CANARY_WEIGHT_ANNOTATION,
    CANARY_WEIGHT_TOTAL_ANNOTATION,
    Entry,
    http_route_entry,
    ingress_entries,
    subset_labels,
    virtual_service_entry,
)
from devenv.traffic import Endpoint, TrafficModel

RATE = 100.0
HEADER = 0.05


def pods(service: str, count: int, **labels: str) -> list[Endpoint]:
    return [Endpoint(namespace="shop", service=service, pod=f"{service}-{labels.get('track', 'x')}-{i}",
                     workload=service, ready=True, pod_labels=tuple(sorted(labels.items())))
            for i in range(count)]


def per_service(endpoints: list[Endpoint], routes: list[Entry]) -> dict[str, float]:
    """Requests per second each Service's pods receive together."""
    shares = TrafficModel(RATE).shares(endpoints, routes)
    out: dict[str, float] = {}
    for (_, service, _), share in shares.items():
        out[service] = round(out.get(service, 0.0) + share, 6)
    return out


def virtual_service(*http: dict[str, Any], hosts: tuple[str, ...] = ("web.example.com",)) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"hosts": list(hosts), "http": list(http)}}


def weighed(stable: int, canary: int, **extra: Any) -> dict[str, Any]:
    return {"route": [{"destination": {"host": "web-stable"}, "weight": stable},
                      {"destination": {"host": "web-canary.shop.svc.cluster.local"}, "weight": canary}], **extra}


HEADER_MATCH = [{"headers": {"x-canary": {"exact": "yes"}}}]
ENDPOINTS = pods("web-stable", 4) + pods("web-canary", 1) + pods("web", 5)


def test_a_virtual_service_splits_by_weight_not_by_pod_count() -> None:
    routes = [virtual_service_entry(virtual_service(weighed(90, 10)), HEADER)]
    # One canary pod against four stable ones, yet exactly 10 %; a Service outside the route keeps its rate.
    assert per_service(ENDPOINTS, routes) == {"web-stable": 90.0, "web-canary": 10.0, "web": 100.0}


def test_a_service_the_virtual_service_hosts_is_captured_by_it() -> None:
    routes = [virtual_service_entry(virtual_service(weighed(50, 50), hosts=("web",)), HEADER)]
    assert per_service(ENDPOINTS, routes) == {"web-stable": 50.0, "web-canary": 50.0}


def test_a_service_at_weight_zero_gets_nothing() -> None:
    routes = [virtual_service_entry(virtual_service(weighed(100, 0)), HEADER)]
    assert per_service(ENDPOINTS, routes) == {"web-stable": 100.0, "web": 100.0}


def test_a_header_route_gets_the_test_header_share_before_the_weighed_route() -> None:
    header_route = {"name": "canary-header", "match": HEADER_MATCH,
                    "route": [{"destination": {"host": "web-canary"}}]}
    routes = [virtual_service_entry(virtual_service(header_route, weighed(100, 0)), HEADER)]
    assert per_service(ENDPOINTS, routes) == {"web-canary": 5.0, "web-stable": 95.0, "web": 100.0}


def test_a_catch_all_route_before_a_header_route_shadows_it() -> None:
    header_route = {"match": HEADER_MATCH, "route": [{"destination": {"host": "web-canary"}}]}
    routes = [virtual_service_entry(virtual_service(weighed(100, 0), header_route), HEADER)]
    assert per_service(ENDPOINTS, routes)["web-stable"] == 100.0
    assert "web-canary" not in per_service(ENDPOINTS, routes)


def test_a_route_matching_on_something_else_than_headers_takes_everything() -> None:
    uri_route = {"match": [{"uri": {"prefix": "/"}}], **weighed(70, 30)}
    routes = [virtual_service_entry(virtual_service(uri_route), HEADER)]
    assert per_service(ENDPOINTS, routes) == {"web-stable": 70.0, "web-canary": 30.0, "web": 100.0}


def test_subsets_pick_the_pods_of_one_service_by_their_labels() -> None:
    rule = {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"host": "web", "subsets": [
        {"name": "stable", "labels": {"track": "stable"}}, {"name": "canary", "labels": {"track": "canary"}}]}}
    vs = virtual_service({"route": [{"destination": {"host": "web", "subset": "stable"}, "weight": 80},
                                    {"destination": {"host": "web", "subset": "canary"}, "weight": 20}]},
                         hosts=("web",))
    endpoints = pods("web", 3, track="stable") + pods("web", 1, track="canary")
    shares = TrafficModel(RATE).shares(endpoints, [virtual_service_entry(vs, HEADER, subset_labels([rule]))])
    assert sorted(shares.values()) == pytest.approx([20.0, 80 / 3, 80 / 3, 80 / 3])
    assert shares[("shop", "web", "web-canary-0")] == pytest.approx(20.0)


def http_route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"rules": list(rules)}}


def backends(stable: int, canary: int) -> list[dict[str, Any]]:
    return [{"name": "web-stable", "port": 80, "weight": stable}, {"name": "web-canary", "port": 80, "weight": canary}]


def test_an_http_route_splits_by_relative_weights() -> None:
    routes = [http_route_entry(http_route({"backendRefs": backends(3, 1)}), HEADER)]
    assert per_service(ENDPOINTS, routes) == {"web-stable": 75.0, "web-canary": 25.0, "web": 100.0}


def test_an_http_route_header_rule_wins_over_a_plain_rule_wherever_it_is() -> None:
    header_rule = {"matches": HEADER_MATCH, "backendRefs": [{"name": "web-canary", "port": 80}]}
    routes = [http_route_entry(http_route({"backendRefs": backends(1, 0)}, header_rule), HEADER)]
    assert per_service(ENDPOINTS, routes) == {"web-canary": 5.0, "web-stable": 95.0, "web": 100.0}


def ingress(name: str, service: str, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "annotations": annotations},
            "spec": {"rules": [{"host": "web.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}
            ]}}]}}


def test_an_nginx_canary_ingress_takes_its_weight_of_the_stable_ingress() -> None:
    stable = ingress("web", "web-stable")
    canary = ingress("web-canary", "web-canary", **{CANARY_ANNOTATION: "true", CANARY_WEIGHT_ANNOTATION: "10"})
    assert per_service(ENDPOINTS, ingress_entries([stable, canary], HEADER)) == {
        "web-stable": 90.0, "web-canary": 10.0, "web": 100.0}
    # Without its canary the stable Ingress sends everything; a different total rescales the weight.
    assert per_service(ENDPOINTS, ingress_entries([stable], HEADER))["web-stable"] == 100.0
    scaled = ingress("web-canary", "web-canary", **{CANARY_ANNOTATION: "true", CANARY_WEIGHT_ANNOTATION: "10",
                                                    CANARY_WEIGHT_TOTAL_ANNOTATION: "1000"})
    assert per_service(ENDPOINTS, ingress_entries([stable, scaled], HEADER))["web-canary"] == 1.0


def test_an_nginx_canary_by_header_gets_the_test_requests_first() -> None:
    stable = ingress("web", "web-stable")
    canary = ingress("web-canary", "web-canary", **{
        CANARY_ANNOTATION: "true", CANARY_WEIGHT_ANNOTATION: "0",
        "nginx.ingress.kubernetes.io/canary-by-header": "x-canary"})
    assert per_service(ENDPOINTS, ingress_entries([stable, canary], HEADER)) == {
        "web-stable": 95.0, "web-canary": 5.0, "web": 100.0}


def test_traffic_through_a_route_reaches_the_exposition_as_requests() -> None:
    model = TrafficModel(RATE)
    routes = [virtual_service_entry(virtual_service(weighed(90, 10), hosts=("web",)), HEADER)]
    for _ in range(10):
        model.advance(ENDPOINTS, 1.0, routes)
    lines = [line for line in model.render().splitlines() if line.startswith("istio_requests_total{")]
    canary = sum(float(line.rsplit(" ", 1)[1]) for line in lines if 'destination_service_name="web-canary"' in line)
    everything = sum(float(line.rsplit(" ", 1)[1]) for line in lines)
    assert canary == 100 and everything == 1000
