"""Istio: weigh the named http routes of the user's VirtualService between two Services.

Each weighed route must send to exactly two destinations whose ``host`` is the stable and the
canary Service (short name, ``name.namespace``, or the full ``name.namespace.svc...``).
Weights are percentages; Istio wants them to add up to 100, which they always do here.
"""

from __future__ import annotations

from kubernetes.client import ApiClient

from activities.routers.base import Obj, Resource, WeightedRoutes, config_error, indexed
from workflows.traffic_spec import Traffic

VIRTUAL_SERVICE = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
ROUTES_FIELD = "traffic.istio.virtualService.routes"


class IstioRouter(WeightedRoutes):
    """The job's VirtualService (``traffic.istio.virtualService``)."""

    resource = VIRTUAL_SERVICE
    object_field = "traffic.istio.virtualService.name"
    routes_key = "http"
    destinations_key = "route"
    default_weight = 0  # two destinations without weights are refused by Istio; read them as 0

    def __init__(self, api: ApiClient, namespace: str, traffic: Traffic) -> None:
        assert traffic.istio is not None  # the spec's rule for routing: istio
        self.wanted = list(traffic.istio.virtual_service.routes)
        super().__init__(api, namespace, traffic.istio.virtual_service.name, traffic)

    def select(self, routes: list[Obj]) -> list[tuple[int, str]]:
        """The routes named in the spec; without names, the VirtualService's only http route."""
        labelled = list(indexed(routes, "http"))
        if not self.wanted:
            if len(routes) != 1:
                raise config_error(ROUTES_FIELD, (
                    f"VirtualService {self.namespace}/{self.name} has {len(routes)} http routes; name the "
                    "ones to weigh (routes are named by their `name`)"))
            return labelled
        by_name = {str(route["name"]): index for index, route in enumerate(routes) if route.get("name")}
        unknown = [name for name in self.wanted if name not in by_name]
        if unknown:
            known = ", ".join(sorted(by_name)) or "none are named"
            raise config_error(ROUTES_FIELD, (
                f"VirtualService {self.namespace}/{self.name} has no http route named "
                f"{', '.join(repr(n) for n in unknown)} (its named routes: {known})"))
        return [(by_name[name], name) for name in self.wanted]

    def service_of(self, destination: Obj) -> str | None:
        """The Service in this namespace that ``destination.host`` names, if any."""
        host = str((destination.get("destination") or {}).get("host") or "")
        parts = host.split(".")
        if len(parts) == 1 or (parts[1] == self.namespace and (len(parts) == 2 or parts[2] == "svc")):
            return parts[0]
        return None
