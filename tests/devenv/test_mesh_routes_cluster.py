"""The simulator reads routes as the API server serves them: the real CRDs' and Ingress's shapes."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from devenv.mesh_routes import discover_routes, service_rates

pytestmark = pytest.mark.cluster

RATE = 100.0


def rates(api: ApiClient, namespace: str) -> dict[str, float]:
    """Requests per second per Service of ``namespace`` through what the cluster holds now."""
    services = [(namespace, name) for name in ("web", "web-stable", "web-canary", "other")]
    out = {}
    for (_, name), portions in service_rates(services, discover_routes(api, [namespace], 0.05), RATE).items():
        if portions:
            out[name] = round(sum(p.rate for p in portions), 6)
    return out


def create(api: ApiClient, namespace: str, group: str, plural: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(group, "v1", namespace, plural, body)


def ingress(name: str, service: str, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": annotations}, "spec": {"rules": [{
        "host": "web.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": service, "port": {"number": 80}}}}]}}]}}


def test_virtual_service_http_route_and_ingresses_as_served(kube_api: ApiClient, namespace: str) -> None:
    assert rates(kube_api, namespace) == {"web": 100.0, "web-stable": 100.0, "web-canary": 100.0, "other": 100.0}

    create(kube_api, namespace, "networking.istio.io", "virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [
            {"name": "header", "match": [{"headers": {"x-canary": {"exact": "1"}}}],
             "route": [{"destination": {"host": "web-canary"}}]},
            {"name": "primary", "route": [{"destination": {"host": "web-stable"}, "weight": 70},
                                          {"destination": {"host": "web-canary"}, "weight": 30}]}]}})
    # 5 % carry the header; the other 95 % split 70/30. The captured `web` gets nothing directly.
    assert rates(kube_api, namespace) == {"web-stable": 66.5, "web-canary": 33.5, "other": 100.0}


def test_http_route_as_served(kube_api: ApiClient, namespace: str) -> None:
    create(kube_api, namespace, "gateway.networking.k8s.io", "httproutes", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
            {"name": "web-stable", "port": 80, "weight": 9}, {"name": "web-canary", "port": 80, "weight": 1}]}]}})
    assert rates(kube_api, namespace) == {"web": 100.0, "web-stable": 90.0, "web-canary": 10.0, "other": 100.0}


def test_nginx_canary_ingress_as_served(kube_api: ApiClient, namespace: str) -> None:
    networking = client.NetworkingV1Api(kube_api)
    networking.create_namespaced_ingress(namespace, ingress("web", "web-stable"))
    networking.create_namespaced_ingress(namespace, ingress("web-canary", "web-canary", **{
        "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "20"}))
    assert rates(kube_api, namespace) == {"web": 100.0, "web-stable": 80.0, "web-canary": 20.0, "other": 100.0}
