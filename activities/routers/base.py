"""What every router does, and the weighing both Istio and Gateway API share.

A router is small on purpose (:class:`Router`): check the user's object fits the spec, set
the canary's weight, read back what the object holds, and leave it at 100 % stable. Istio's
VirtualService and Gateway API's HTTPRoute have the same shape for this purpose (a list of
routes, each with a list of weighted destinations), so :class:`WeightedRoutes` holds the
reading and writing once; each router says where its routes and destinations are and how a
destination names a Service.

Writes are JSON patches that first ``test`` the resourceVersion that was read: a route the
user edits meanwhile is read again, never overwritten with a stale copy. Only the ``weight``
of the two destinations changes; every other field stays the user's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.errors import kube_errors
from workflows.routing import RouterWeights, RouteWeight
from workflows.traffic_spec import Traffic

Obj = dict[str, Any]
FIELD_MANAGER = "canary-delivery"
REQUEST_TIMEOUT = 10.0
CONFLICT_ATTEMPTS = 5
JSON_PATCH = "application/json-patch+json"


class Router(Protocol):
    """One router for one job: what the workflow's steps need from a mesh or a gateway."""

    def check(self) -> None:
        """Raise a non-retryable ``RouterConfigInvalid`` naming the spec field if the object does not fit."""

    def set_weight(self, canary: int) -> RouterWeights:
        """Send ``canary`` percent to the canary Service, the rest to stable; return what the object holds."""

    def read_weights(self) -> RouterWeights:
        """The weights the object holds now."""

    def cleanup(self) -> None:
        """Leave all traffic on stable; an object the user deleted meanwhile is fine."""


def config_error(field: str, message: str) -> ApplicationError:
    """A spec that does not fit the cluster: retrying cannot fix it, the user must.

    The field is also the failure's first detail, so the workflow passes it on as the field to fix.
    """
    return ApplicationError(f"{field}: {message}", field, type=errors.ROUTER_CONFIG_INVALID, non_retryable=True)


@dataclass(frozen=True)
class Resource:
    """A custom resource as the API serves it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        """``group/version``, as in an object's ``apiVersion``."""
        return f"{self.group}/{self.version}"


@dataclass(frozen=True)
class Route:
    """One route to weigh: where it is in the object, and where its two destinations are."""

    label: str  # the route's name, or its place (``http[0]``) when it has none
    index: int
    stable: int  # index of the stable Service's destination in the route
    canary: int


class WeightedRoutes:
    """A custom object whose routes each send traffic to the stable and canary Services by weight.

    Subclasses set the resource, the spec field that names the object (for errors), where
    routes and their destinations live, and implement :meth:`select` (which routes to weigh)
    and :meth:`service_of` (the Service a destination names, if any).
    """

    resource: Resource
    object_field: str  # e.g. traffic.istio.virtualService.name
    routes_key: str  # spec.<routes_key> is the list of routes
    destinations_key: str  # route.<destinations_key> is the list of weighted destinations
    default_weight: int  # what an absent weight means

    def __init__(self, api: ApiClient, namespace: str, name: str, traffic: Traffic) -> None:
        self._custom = client.CustomObjectsApi(api)
        self.namespace, self.name, self.traffic = namespace, name, traffic
        assert traffic.stable_service is not None and traffic.canary_service is not None  # the spec's rule
        self.stable_service, self.canary_service = traffic.stable_service, traffic.canary_service

    # -- what each router says ----------------------------------------------------------------

    def select(self, routes: list[Obj]) -> list[tuple[int, str]]:
        """The routes to weigh, as (index, label); raise ``config_error`` if the spec's names do not fit."""
        raise NotImplementedError

    def service_of(self, destination: Obj) -> str | None:
        """The name of the Service in this namespace that ``destination`` sends to, if it is one."""
        raise NotImplementedError

    # -- Router --------------------------------------------------------------------------------

    def check(self) -> None:
        """Read the object and check that every route to weigh has exactly the two destinations."""
        self._plan(self._get())

    def read_weights(self) -> RouterWeights:
        """The weights the object holds now, per weighed route."""
        obj = self._get()
        return self._weights(obj, self._plan(obj))

    def set_weight(self, canary: int) -> RouterWeights:
        """Write the weights guarded by the resourceVersion read; read again on a conflict."""
        for attempt in range(CONFLICT_ATTEMPTS):
            obj = self._get()
            plan = self._plan(obj)
            current = self._weights(obj, plan)
            if all((r.stable, r.canary) == (100 - canary, canary) for r in current.routes):
                return current  # a retry, or a weight already held: no write, no new generation
            ops: list[Obj] = [{"op": "test", "path": "/metadata/resourceVersion",
                               "value": obj["metadata"]["resourceVersion"]}]
            for route in plan:
                base = f"/spec/{self.routes_key}/{route.index}/{self.destinations_key}"
                ops.append({"op": "add", "path": f"{base}/{route.stable}/weight", "value": 100 - canary})
                ops.append({"op": "add", "path": f"{base}/{route.canary}/weight", "value": canary})
            try:
                written = self._patch(ops)
            except ApplicationError as error:
                # A failed "test" is the API server's 422; a moved resourceVersion, a 409.
                if error.type not in (errors.KUBERNETES_CONFLICT, errors.KUBERNETES_INVALID) or (
                        attempt == CONFLICT_ATTEMPTS - 1):
                    raise
                continue
            return self._weights(written, self._plan(written))
        raise AssertionError("unreachable")

    def cleanup(self) -> None:
        """All traffic to stable; nothing to do when the object or the CRD is gone."""
        try:
            self.set_weight(0)
        except ApplicationError as error:
            if error.type != errors.ROUTER_CONFIG_INVALID or self._exists():
                raise

    # -- reading -------------------------------------------------------------------------------

    def _describe(self) -> str:
        return f"{self.resource.kind} {self.namespace}/{self.name}"

    def _get(self) -> Obj:
        r = self.resource
        with kube_errors(f"read {self._describe()}"):
            try:
                obj: Obj = self._custom.get_namespaced_custom_object(
                    r.group, r.version, self.namespace, r.plural, self.name, _request_timeout=REQUEST_TIMEOUT)
                return obj
            except ApiException as error:
                if error.status != 404:
                    raise
        if not self._served():
            raise config_error("traffic.routing", (
                f"the cluster does not serve {r.plural}.{r.group} ({r.api_version}): install the "
                f"{r.kind} CRD, or choose another router"))
        raise config_error(self.object_field, f"no {r.kind} {self.name!r} in namespace {self.namespace}")

    def _served(self) -> bool:
        """Whether the API server knows this resource at all (a 404 alone cannot tell)."""
        r = self.resource
        with kube_errors(f"discover {r.api_version}"):
            try:
                found = self._custom.get_api_resources(r.group, r.version, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
        return any(resource.name == r.plural for resource in found.resources or [])

    def _exists(self) -> bool:
        try:
            self._get()
        except ApplicationError as error:
            if error.type == errors.ROUTER_CONFIG_INVALID:
                return False
            raise
        return True

    def _plan(self, obj: Obj) -> list[Route]:
        """Where to write, for each selected route; a route that does not fit raises ``config_error``."""
        routes = list((obj.get("spec") or {}).get(self.routes_key) or [])
        plan = []
        for index, label in self.select(routes):
            destinations = list(routes[index].get(self.destinations_key) or [])
            services = [self.service_of(d) for d in destinations]
            missing = [(field, service) for field, service in (("traffic.stableService", self.stable_service),
                                                               ("traffic.canaryService", self.canary_service))
                       if service not in services]
            if missing:
                field, service = missing[0]
                named = ", ".join(s or "(not a Service here)" for s in services) or "none"
                raise config_error(field, f"{label} of {self._describe()} does not send to Service {service!r} "
                                          f"(its destinations: {named})")
            if len(destinations) != 2:
                raise config_error(self.object_field, (
                    f"{label} of {self._describe()} has {len(destinations)} destinations; the job weighs "
                    f"routes with exactly two, {self.stable_service} and {self.canary_service}"))
            plan.append(Route(label, index, services.index(self.stable_service),
                              services.index(self.canary_service)))
        return plan

    def _weights(self, obj: Obj, plan: list[Route]) -> RouterWeights:
        routes = (obj.get("spec") or {}).get(self.routes_key) or []

        def weight(route: Route, position: int) -> int:
            destination = routes[route.index][self.destinations_key][position]
            return int(destination.get("weight", self.default_weight))

        return RouterWeights(routes=[RouteWeight(route=r.label, stable=weight(r, r.stable),
                                                 canary=weight(r, r.canary)) for r in plan])

    def _patch(self, ops: list[Obj]) -> Obj:
        r = self.resource
        with kube_errors(f"patch {self._describe()}"):
            obj: Obj = self._custom.patch_namespaced_custom_object(
                r.group, r.version, self.namespace, r.plural, self.name, ops, field_manager=FIELD_MANAGER,
                _content_type=JSON_PATCH, _request_timeout=REQUEST_TIMEOUT)
            return obj


def indexed(routes: list[Obj], prefix: str) -> Iterator[tuple[int, str]]:
    """Every route with a label: its name, or its place in the list."""
    for index, route in enumerate(routes):
        yield index, str(route.get("name") or f"{prefix}[{index}]")
