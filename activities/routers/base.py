"""What every router does, and the weighing both Istio and Gateway API share.

A router is small on purpose (:class:`Router`): check the user's object fits the spec, set
the canary's weight, read back what the object holds, and leave it at 100 % stable. Istio's
VirtualService and Gateway API's HTTPRoute have the same shape for this purpose (a list of
routes, each with a list of weighted destinations), so :class:`WeightedRoutes` holds the
reading and writing once; each router says where its routes and destinations are and how a
destination names a Service (or, for Istio's DestinationRule subsets, a subset).

Writes are JSON patches that first ``test`` the resourceVersion that was read: a route the
user edits meanwhile is read again, never overwritten with a stale copy. Only the ``weight``
of the two destinations changes; every other field stays the user's. Header routes
(``setHeaderRoute``) are routes of the job's own, added before the weighed ones and removed
by the next write that does not ask for them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.errors import kube_errors
from workflows.header_route import HeaderRoute
from workflows.routing import RouterWeights, RouteWeight
from workflows.traffic_spec import Traffic

Obj = dict[str, Any]
FIELD_MANAGER = "canary-delivery"
REQUEST_TIMEOUT = 10.0
CONFLICT_ATTEMPTS = 5
JSON_PATCH = "application/json-patch+json"
HEADER_ROUTES_ANNOTATION = "canary-delivery.dev/header-routes"


class Router(Protocol):
    """One router for one job: what the workflow's steps need from a mesh or a gateway."""

    def check(self) -> None:
        """Raise a non-retryable ``RouterConfigInvalid`` naming the spec field if the object does not fit."""

    def set_weight(self, canary: int, header_routes: Sequence[HeaderRoute] = ()) -> RouterWeights:
        """Send ``canary`` percent to the canary, the rest to stable, and hold exactly ``header_routes``.

        Answer what the object holds then.
        """

    def read_weights(self) -> RouterWeights:
        """The weights the object holds now."""

    def cleanup(self) -> None:
        """Leave all traffic on stable and no header route of the job's; an object the user deleted is fine."""


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
    """A custom object whose routes each send traffic to the stable and canary destinations by weight.

    Subclasses set the resource, the spec field that names the object (for errors), where
    routes and their destinations live, and implement :meth:`select` (which routes to weigh),
    :meth:`key_of` (which of the two a destination is, if any) and :meth:`header_route` (the
    route that sends matching requests to the canary).

    Header routes the job adds are its own: listed, with what they were made from, in the
    object's ``canary-delivery.dev/header-routes`` annotation, so a later write (whatever the
    activity was asked before) knows which routes to replace or remove and never reads them
    as the user's.
    """

    resource: Resource
    object_field: str  # e.g. traffic.istio.virtualService.name
    routes_key: str  # spec.<routes_key> is the list of routes
    destinations_key: str  # route.<destinations_key> is the list of weighted destinations
    default_weight: int  # what an absent weight means
    key_kind = "Service"  # what a key names, in messages
    key_fields = ("traffic.stableService", "traffic.canaryService")

    def __init__(self, api: ApiClient, namespace: str, name: str, traffic: Traffic) -> None:
        self._custom = client.CustomObjectsApi(api)
        self.namespace, self.name, self.traffic = namespace, name, traffic
        self.stable_key, self.canary_key = self.keys(traffic)

    # -- what each router says ----------------------------------------------------------------

    def keys(self, traffic: Traffic) -> tuple[str, str]:
        """What :meth:`key_of` answers for the stable and the canary destination: the Services' names."""
        assert traffic.stable_service is not None and traffic.canary_service is not None  # the spec's rule
        return traffic.stable_service, traffic.canary_service

    def select(self, routes: list[Obj]) -> list[tuple[int, str]]:
        """The routes to weigh, as (index, label); raise ``config_error`` if the spec's names do not fit."""
        raise NotImplementedError

    def key_of(self, destination: Obj) -> str | None:
        """Which destination this is (a Service in this namespace, by default), if it is one the job knows."""
        raise NotImplementedError

    def header_route(self, route: Obj, canary: Obj, name: str, header: HeaderRoute) -> Obj:
        """A route named ``name`` that sends what ``route`` serves, when ``header`` matches, to ``canary``.

        ``canary`` is ``route``'s canary destination, copied as the user wrote it (port and all).
        """
        raise NotImplementedError

    # -- Router --------------------------------------------------------------------------------

    def check(self) -> None:
        """Read the object and check that every route to weigh has exactly the two destinations."""
        self._plan(self._get())

    def read_weights(self) -> RouterWeights:
        """The weights the object holds now, per weighed route."""
        obj = self._get()
        return self._weights(obj, self._plan(obj))

    def set_weight(self, canary: int, header_routes: Sequence[HeaderRoute] = ()) -> RouterWeights:
        """Write the weights and header routes guarded by the resourceVersion read; read again on a conflict."""
        for attempt in range(CONFLICT_ATTEMPTS):
            obj = self._get()
            plan = self._plan(obj)
            current = self._weights(obj, plan)
            record = _record(obj)
            wanted = _wanted_record(plan, header_routes)
            held = set(current.header_routes) == set(record.get("names", []))
            if record == wanted and held and all((r.stable, r.canary) == (100 - canary, canary)
                                                 for r in current.routes):
                return current  # a retry, or all already held: no write, no new generation
            ops: list[Obj] = [{"op": "test", "path": "/metadata/resourceVersion",
                               "value": obj["metadata"]["resourceVersion"]}]
            if record == wanted and held:
                # Only weights change: two numbers per route, nothing else of the user's is rewritten.
                for route in plan:
                    base = f"/spec/{self.routes_key}/{route.index}/{self.destinations_key}"
                    ops.append({"op": "add", "path": f"{base}/{route.stable}/weight", "value": 100 - canary})
                    ops.append({"op": "add", "path": f"{base}/{route.canary}/weight", "value": canary})
            else:
                ops.append({"op": "replace", "path": f"/spec/{self.routes_key}",
                            "value": self._routes_with(obj, plan, canary, header_routes)})
                ops.extend(_annotation_ops(obj, wanted))
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
        """All traffic to stable, no header route of the job's; nothing to do when the object or CRD is gone."""
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
        return served(self._custom, self.resource)

    def _exists(self) -> bool:
        try:
            self._get()
        except ApplicationError as error:
            if error.type == errors.ROUTER_CONFIG_INVALID:
                return False
            raise
        return True

    def _routes(self, obj: Obj) -> list[Obj]:
        return list((obj.get("spec") or {}).get(self.routes_key) or [])

    def _plan(self, obj: Obj) -> list[Route]:
        """Where to write, for each selected route; a route that does not fit raises ``config_error``.

        The job's own header routes are not the user's routes: they are neither selected nor
        counted (an Istio VirtualService with one route of the user's still has one).
        """
        routes = self._routes(obj)
        made = set(_record(obj).get("names", []))
        users = [index for index, route in enumerate(routes) if route.get("name") not in made]
        plan = []
        for position, label in self.select([routes[index] for index in users]):
            index = users[position]
            destinations = list(routes[index].get(self.destinations_key) or [])
            keys = [self.key_of(d) for d in destinations]
            missing = [(field, key) for field, key in zip(self.key_fields, (self.stable_key, self.canary_key),
                                                          strict=True) if key not in keys]
            if missing:
                field, key = missing[0]
                named = ", ".join(k or f"(not a {self.key_kind} here)" for k in keys) or "none"
                raise config_error(field, f"{label} of {self._describe()} does not send to {self.key_kind} "
                                          f"{key!r} (its destinations: {named})")
            if len(destinations) != 2:
                raise config_error(self.object_field, (
                    f"{label} of {self._describe()} has {len(destinations)} destinations; the job weighs "
                    f"routes with exactly two, {self.stable_key} and {self.canary_key}"))
            plan.append(Route(label, index, keys.index(self.stable_key), keys.index(self.canary_key)))
        return plan

    def _weights(self, obj: Obj, plan: list[Route]) -> RouterWeights:
        routes = self._routes(obj)

        def weight(route: Route, position: int) -> int:
            destination = routes[route.index][self.destinations_key][position]
            return int(destination.get("weight", self.default_weight))

        made = set(_record(obj).get("names", []))
        return RouterWeights(routes=[RouteWeight(route=r.label, stable=weight(r, r.stable),
                                                 canary=weight(r, r.canary)) for r in plan],
                             header_routes=[str(route["name"]) for route in routes if route.get("name") in made])

    def _routes_with(self, obj: Obj, plan: list[Route], canary: int, header_routes: Sequence[HeaderRoute]
                     ) -> list[Obj]:
        """The object's routes with the weights set and exactly ``header_routes`` of the job's.

        The header routes go right before the first weighed route: matched first, they take
        the requests they name and leave the rest to the weights.
        """
        routes = copy.deepcopy(self._routes(obj))
        made = set(_record(obj).get("names", []))
        names = {str(r.get("name")) for r in routes if r.get("name") and r.get("name") not in made}
        added: list[Obj] = []
        for header in header_routes:
            for number, route in enumerate(plan):
                name = _route_name(header, plan, number)
                if name in names:
                    raise config_error("setHeaderRoute.name", (
                        f"{self._describe()} already has a route named {name!r} of its own; name the header "
                        "route otherwise"))
                source = routes[route.index]
                added.append(self.header_route(source, copy.deepcopy(
                    source[self.destinations_key][route.canary]), name, header))
        for route in plan:
            destinations = routes[route.index][self.destinations_key]
            destinations[route.stable]["weight"] = 100 - canary
            destinations[route.canary]["weight"] = canary
        first = min((route.index for route in plan), default=len(routes))
        kept = [(index, r) for index, r in enumerate(routes) if r.get("name") not in made]
        before = [r for index, r in kept if index < first]
        after = [r for index, r in kept if index >= first]
        return [*before, *added, *after]

    def _patch(self, ops: list[Obj]) -> Obj:
        r = self.resource
        with kube_errors(f"patch {self._describe()}"):
            obj: Obj = self._custom.patch_namespaced_custom_object(
                r.group, r.version, self.namespace, r.plural, self.name, ops, field_manager=FIELD_MANAGER,
                _content_type=JSON_PATCH, _request_timeout=REQUEST_TIMEOUT)
            return obj


def served(custom: client.CustomObjectsApi, r: Resource) -> bool:
    """Whether the API server knows the resource ``r`` at all (a 404 alone cannot tell)."""
    with kube_errors(f"discover {r.api_version}"):
        try:
            found = custom.get_api_resources(r.group, r.version, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
    return any(resource.name == r.plural for resource in found.resources or [])


def _route_name(header: HeaderRoute, plan: list[Route], number: int) -> str:
    """The header route's own name; with several weighed routes, one route each, numbered."""
    return header.name if len(plan) == 1 else f"{header.name}-{number + 1}"


def _record(obj: Obj) -> Obj:
    """What the job wrote in the object's header-routes annotation (nothing when it has none)."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(HEADER_ROUTES_ANNOTATION)
    if not text:
        return {}
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _wanted_record(plan: list[Route], header_routes: Sequence[HeaderRoute]) -> Obj:
    if not header_routes:
        return {}
    return {"names": [_route_name(h, plan, n) for h in header_routes for n in range(len(plan))],
            "routes": [h.model_dump(mode="json", by_alias=True, exclude_none=True) for h in header_routes]}


def _annotation_ops(obj: Obj, wanted: Obj) -> list[Obj]:
    """JSON-patch ops that leave the header-routes annotation saying ``wanted`` (absent when empty)."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    path = "/metadata/annotations/" + HEADER_ROUTES_ANNOTATION.replace("~", "~0").replace("/", "~1")
    if not wanted:
        return [{"op": "remove", "path": path}] if annotations and HEADER_ROUTES_ANNOTATION in annotations else []
    value = json.dumps(wanted, sort_keys=True, separators=(",", ":"))
    if annotations is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": {HEADER_ROUTES_ANNOTATION: value}}]
    return [{"op": "add", "path": path, "value": value}]


def indexed(routes: list[Obj], prefix: str) -> Iterator[tuple[int, str]]:
    """Every route with a label: its name, or its place in the list."""
    for index, route in enumerate(routes):
        yield index, str(route.get("name") or f"{prefix}[{index}]")
