"""Istio: weigh the named http routes of the user's VirtualService between stable and canary.

Each weighed route must send to exactly two destinations: either the stable and the canary
Service (``host``: short name, ``name.namespace``, or the full ``name.namespace.svc...``), or,
with ``istio.destinationRule``, two subsets of that DestinationRule's host, whose ``labels``
the job sets (stable: the stable version's ``pod-template-hash``; canary: the track label).
Weights are percentages; Istio wants them to add up to 100, which they always do here.
"""

from __future__ import annotations

import copy
from functools import cached_property

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.errors import kube_errors
from activities.routers.base import (
    FIELD_MANAGER,
    JSON_PATCH,
    REQUEST_TIMEOUT,
    Obj,
    Resource,
    WeightedRoutes,
    config_error,
    indexed,
    served,
)
from workflows.header_route import HeaderRoute
from workflows.traffic_spec import DestinationRuleRef, Traffic

VIRTUAL_SERVICE = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
DESTINATION_RULE = Resource("networking.istio.io", "v1", "destinationrules", "DestinationRule")
ROUTES_FIELD = "traffic.istio.virtualService.routes"
RULE_FIELD = "traffic.istio.destinationRule.name"
SUBSET_FIELDS = ("traffic.istio.destinationRule.stableSubsetName", "traffic.istio.destinationRule.canarySubsetName")


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
        self.subsets = Subsets(api, namespace, traffic.subsets) if traffic.subsets is not None else None
        if self.subsets is not None:
            self.key_kind, self.key_fields = "subset", SUBSET_FIELDS
        super().__init__(api, namespace, traffic.istio.virtual_service.name, traffic)

    def keys(self, traffic: Traffic) -> tuple[str, str]:
        """The two Services, or the two subsets' names."""
        if traffic.subsets is not None:
            return traffic.subsets.stable_subset_name, traffic.subsets.canary_subset_name
        return super().keys(traffic)

    def check(self) -> None:
        """The DestinationRule first (it has both subsets), then the VirtualService's routes."""
        if self.subsets is not None:
            self.subsets.check()
        super().check()

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

    def key_of(self, destination: Obj) -> str | None:
        """The Service in this namespace that ``destination.host`` names; or its subset of the rule's host."""
        target = destination.get("destination") or {}
        service = service_of_host(str(target.get("host") or ""), self.namespace)
        if self.subsets is None:
            return service
        if service is None or service != self.subsets.host:
            return None
        return str(target.get("subset") or "") or None

    def header_route(self, route: Obj, canary: Obj, name: str, header: HeaderRoute) -> Obj:
        """An http route matching what ``route`` matches and the header (or cookie), to the canary alone."""
        headers: Obj = {}
        for match in header.matches:
            if match.cookie_name is not None:
                headers["cookie"] = {"regex": match.cookie_regex()}
            else:
                assert match.header_name is not None and match.header_value is not None
                headers[match.header_name.lower()] = match.header_value.model_dump(exclude_none=True)
        blocks = route.get("match") or [{}]
        matches = [{**copy.deepcopy(block), "headers": {**(block.get("headers") or {}), **headers}}
                   for block in blocks]
        canary.pop("weight", None)
        # Whatever else the user's route does (timeouts, retries, rewrites) it does for these requests too.
        rest = {key: copy.deepcopy(value) for key, value in route.items() if key not in ("name", "match", "route")}
        return {"name": name, "match": matches, **rest, "route": [canary]}


def service_of_host(host: str, namespace: str) -> str | None:
    """The Service of ``namespace`` an Istio host names (``web``, ``web.ns``, ``web.ns.svc...``), if any."""
    parts = host.split(".")
    if parts[0] and (len(parts) == 1 or (parts[1] == namespace and (len(parts) == 2 or parts[2] == "svc"))):
        return parts[0]
    return None


class Subsets:
    """The user's DestinationRule: its two subsets stand for stable and canary; the job sets their labels."""

    def __init__(self, api: ApiClient, namespace: str, ref: DestinationRuleRef) -> None:
        self._custom = client.CustomObjectsApi(api)
        self.namespace, self.ref = namespace, ref

    def _describe(self) -> str:
        return f"DestinationRule {self.namespace}/{self.ref.name}"

    def get(self) -> Obj:
        """The DestinationRule; a missing one (or CRD) is the spec's to fix."""
        r = DESTINATION_RULE
        with kube_errors(f"read {self._describe()}"):
            try:
                obj: Obj = self._custom.get_namespaced_custom_object(
                    r.group, r.version, self.namespace, r.plural, self.ref.name, _request_timeout=REQUEST_TIMEOUT)
                return obj
            except ApiException as error:
                if error.status != 404:
                    raise
        if not served(self._custom, r):
            raise config_error("traffic.routing", (
                f"the cluster does not serve {r.plural}.{r.group} ({r.api_version}): install the {r.kind} CRD"))
        raise config_error(RULE_FIELD, f"no DestinationRule {self.ref.name!r} in namespace {self.namespace}")

    @cached_property
    def host(self) -> str | None:
        """The Service (of this namespace) the DestinationRule is for."""
        return service_of_host(str((self.get().get("spec") or {}).get("host") or ""), self.namespace)

    def _indices(self, rule: Obj) -> tuple[int, int]:
        """Where the stable and canary subsets are in ``rule``; a missing one is refused naming its field."""
        subsets = list((rule.get("spec") or {}).get("subsets") or [])
        names = [str(s.get("name") or "") for s in subsets]
        if self.host is None:
            raise config_error(RULE_FIELD, (
                f"{self._describe()} is for host {(rule.get('spec') or {}).get('host')!r}, not a Service of "
                f"namespace {self.namespace}"))
        found = []
        for field, name in zip(SUBSET_FIELDS, (self.ref.stable_subset_name, self.ref.canary_subset_name),
                               strict=True):
            if name not in names:
                raise config_error(field, f"{self._describe()} has no subset {name!r} (its subsets: "
                                          f"{', '.join(n for n in names if n) or 'none'})")
            found.append(names.index(name))
        return found[0], found[1]

    def check(self) -> None:
        """The rule exists, is for a Service here, and has both subsets."""
        self._indices(self.get())

    def aim(self, stable: dict[str, str], canary: dict[str, str]) -> None:
        """Set the two subsets' ``labels``, guarded by the resourceVersion read; no write when they hold."""
        for attempt in range(5):
            rule = self.get()
            stable_at, canary_at = self._indices(rule)
            subsets = rule["spec"]["subsets"]
            ops: list[Obj] = [{"op": "test", "path": "/metadata/resourceVersion",
                               "value": rule["metadata"]["resourceVersion"]}]
            ops += [{"op": "add", "path": f"/spec/subsets/{at}/labels", "value": labels}
                    for at, labels in ((stable_at, stable), (canary_at, canary))
                    if subsets[at].get("labels") != labels]
            if len(ops) == 1:
                return
            r = DESTINATION_RULE
            try:
                with kube_errors(f"set the subsets of {self._describe()}"):
                    self._custom.patch_namespaced_custom_object(
                        r.group, r.version, self.namespace, r.plural, self.ref.name, ops,
                        field_manager=FIELD_MANAGER, _content_type=JSON_PATCH, _request_timeout=REQUEST_TIMEOUT)
                return
            except ApplicationError as error:
                if error.type not in (errors.KUBERNETES_CONFLICT, errors.KUBERNETES_INVALID) or attempt == 4:
                    raise
