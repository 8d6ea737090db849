"""Gateway API: weigh the rules of the user's HTTPRoute whose backendRefs are the two Services.

Every rule with exactly the stable and the canary Service as ``backendRefs`` is weighed; rules
that send elsewhere (or to one of them alone, as a header route would) are left as they are.
Gateway API weights are relative; the job writes ``100 - w`` and ``w`` so they read as percent.
A header route is a rule of the job's, named, with the weighed rule's matches plus the headers
(Gateway API matches a header exactly or by regular expression: a prefix becomes one).
"""

from __future__ import annotations

import copy

from kubernetes.client import ApiClient

from activities.routers.base import Obj, Resource, WeightedRoutes, config_error, indexed
from workflows.header_route import HeaderRoute
from workflows.traffic_spec import Traffic

HTTP_ROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")


class GatewayApiRouter(WeightedRoutes):
    """The job's HTTPRoute (``traffic.gatewayAPI.httpRoute``)."""

    resource = HTTP_ROUTE
    object_field = "traffic.gatewayAPI.httpRoute"
    routes_key = "rules"
    destinations_key = "backendRefs"
    default_weight = 1  # the Gateway API's default

    def __init__(self, api: ApiClient, namespace: str, traffic: Traffic) -> None:
        assert traffic.gateway_api is not None  # the spec's rule for routing: gatewayAPI
        super().__init__(api, namespace, traffic.gateway_api.http_route, traffic)

    def select(self, routes: list[Obj]) -> list[tuple[int, str]]:
        """Every rule whose backendRefs include both Services; at least one must."""
        wanted = {self.stable_key, self.canary_key}
        chosen = [(index, label) for index, label in indexed(routes, "rules")
                  if wanted <= {self.key_of(ref) for ref in routes[index].get("backendRefs") or []}]
        if not chosen:
            raise config_error(self.object_field, (
                f"no rule of HTTPRoute {self.namespace}/{self.name} has backendRefs to both "
                f"{self.stable_key} and {self.canary_key}"))
        return chosen

    def header_route(self, route: Obj, canary: Obj, name: str, header: HeaderRoute) -> Obj:
        """A rule with ``route``'s matches, each also requiring the headers (or cookie), to the canary alone."""
        headers: list[Obj] = []
        for match in header.matches:
            if match.cookie_name is not None:
                headers.append({"name": "Cookie", "type": "RegularExpression", "value": match.cookie_regex()})
            else:
                assert match.header_name is not None and match.header_value is not None
                value = match.header_value
                if value.exact is not None:
                    headers.append({"name": match.header_name, "type": "Exact", "value": value.exact})
                else:
                    headers.append({"name": match.header_name, "type": "RegularExpression",
                                    "value": value.as_regex()})
        blocks = route.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
        matches = [{**copy.deepcopy(block), "headers": [*(block.get("headers") or []), *headers]}
                   for block in blocks]
        canary.pop("weight", None)
        rest = {key: copy.deepcopy(value) for key, value in route.items()
                if key not in ("name", "matches", "backendRefs")}
        return {"name": name, "matches": matches, **rest, "backendRefs": [canary]}

    def key_of(self, destination: Obj) -> str | None:
        """The backendRef's Service name, when it is a Service of this namespace."""
        if destination.get("group", "") != "" or destination.get("kind", "Service") != "Service":
            return None
        if destination.get("namespace", self.namespace) != self.namespace:
            return None
        return str(destination.get("name") or "") or None
