"""The local cluster serves the routers' CRDs with their real schemas: good objects in, bad ones refused."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster

ISTIO = ("networking.istio.io", "v1", "virtualservices")
GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")


def virtual_service(weights: tuple[Any, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web-stable"}, "weight": weights[0]},
            {"destination": {"host": "web-canary"}, "weight": weights[1]},
        ]}]},
    }


def http_route(weights: tuple[Any, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
            {"name": "web-stable", "port": 80, "weight": weights[0]},
            {"name": "web-canary", "port": 80, "weight": weights[1]},
        ]}]},
    }


@pytest.mark.parametrize(("resource", "make"), [(ISTIO, virtual_service), (GATEWAY, http_route)],
                         ids=["VirtualService", "HTTPRoute"])
def test_router_objects_are_stored_and_schema_checked(
        kube_api: ApiClient, namespace: str, resource: tuple[str, str, str], make: Any) -> None:
    custom = client.CustomObjectsApi(kube_api)
    group, version, plural = resource
    custom.create_namespaced_custom_object(group, version, namespace, plural, make((90, 10)))
    stored = custom.get_namespaced_custom_object(group, version, namespace, plural, "web")
    routes = stored["spec"].get("http") or stored["spec"]["rules"]
    weights = [r["weight"] for r in routes[0].get("route") or routes[0]["backendRefs"]]
    assert weights == [90, 10]

    bad = make((90, "ten"))  # a weight of the wrong type: the CRD's schema, not the client, says no
    bad["metadata"]["name"] = "bad"
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(group, version, namespace, plural, bad)
    assert refused.value.status == 422
    assert "weight" in str(refused.value.body)
