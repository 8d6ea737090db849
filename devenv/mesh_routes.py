"""Where the simulated mesh sends a request: the routes of VirtualServices, HTTPRoutes and Ingresses.

Without routes the simulator gives every Service the same request rate, split over its Ready
pods (the replica ratio). A traffic router changes that, and the simulator must follow it the
way a mesh or an ingress controller would, so that metrics answer to the weights the job
writes rather than to pod counts:

- An **Istio VirtualService** is an entry point with the simulator's rate. Its ``http`` routes
  are tried in order, as Istio does: a route whose every ``match`` block needs headers (or a
  cookie, which Istio matches as a header) takes ``header_share`` of what is left (the requests
  carrying the test header); the first route without such a match takes the rest. A route's
  ``destination``s share its requests by ``weight`` (one destination without a weight: all of
  it). A destination ``subset`` narrows the Service to the pods carrying the subset's labels
  (from the DestinationRule of that host).
- A **Gateway API HTTPRoute** likewise, over its ``rules``: a rule matching on headers takes
  precedence over the ones that do not (more specific), and ``backendRefs`` share by weight
  (default 1).
- An **NGINX Ingress** with ``nginx.ingress.kubernetes.io/canary: "true"`` takes
  ``canary-weight`` / ``canary-weight-total`` of the requests of the plain Ingress with the same
  host and path (plus, with ``canary-by-header`` or ``canary-by-cookie``, the ``header_share``
  that carries it first).

A Service a route sends to (or that a VirtualService names among its ``hosts``, which is how
Istio captures a Service's own traffic) gets its requests only through routes; every other
Service keeps the plain rate. Pure functions of the objects as the API returns them (dicts);
:func:`discover_routes` is the only I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]
ServiceKey = tuple[str, str]  # (namespace, name)
Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs: hashable

CANARY_ANNOTATION = "nginx.ingress.kubernetes.io/canary"
CANARY_WEIGHT_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight"
CANARY_WEIGHT_TOTAL_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight-total"
CANARY_HEADER_ANNOTATIONS = ("nginx.ingress.kubernetes.io/canary-by-header",
                             "nginx.ingress.kubernetes.io/canary-by-cookie")
DEFAULT_HEADER_SHARE = 0.05


@dataclass(frozen=True)
class Backend:
    """A Service (optionally only its pods with ``labels``) and its relative weight in a split."""

    namespace: str
    service: str
    weight: float
    labels: Labels = ()

    @property
    def key(self) -> ServiceKey:
        """The Service, as the simulator's endpoints are grouped."""
        return (self.namespace, self.service)


@dataclass(frozen=True)
class Split:
    """A share of an entry's requests (0..1) and the backends it is weighed over."""

    share: float
    backends: tuple[Backend, ...]


@dataclass(frozen=True)
class Entry:
    """One entry point (a VirtualService, an HTTPRoute, a plain Ingress) with the simulator's rate.

    ``captures``: the Services whose own traffic it takes over (a VirtualService's hosts).
    """

    name: str
    splits: tuple[Split, ...]
    captures: frozenset[ServiceKey] = frozenset()


@dataclass(frozen=True)
class Portion:
    """Requests per second sent to a Service's Ready pods that carry ``labels`` (all of them: ())."""

    rate: float
    labels: Labels = ()


def service_rates(services: Iterable[ServiceKey], entries: Sequence[Entry],
                  rate: float) -> dict[ServiceKey, list[Portion]]:
    """What each Service receives: the plain ``rate`` unless routes take it over, plus the routes' shares."""
    captured = {key for entry in entries for key in entry.captures}
    captured |= {b.key for entry in entries for split in entry.splits for b in split.backends}
    rates: dict[ServiceKey, list[Portion]] = {key: [] if key in captured else [Portion(rate)]
                                              for key in services}
    for entry in entries:
        for split in entry.splits:
            total = sum(b.weight for b in split.backends)
            if total <= 0:
                continue  # every weight 0: Istio and Gateway API refuse or drop these requests
            for b in split.backends:
                if b.weight > 0:
                    rates.setdefault(b.key, []).append(Portion(rate * split.share * b.weight / total, b.labels))
    return rates


def _ordered_shares(header_routes: Sequence[bool], header_share: float) -> list[float]:
    """Each route's share of the requests, the routes tried in order.

    A header route takes ``header_share`` of what is left; the first other route takes all of it,
    so the routes after it see nothing (as with a catch-all route in the middle of the list).
    """
    left, shares = 1.0, []
    for by_header in header_routes:
        share = left * header_share if by_header else left
        shares.append(share)
        left -= share
    return shares


def _by_header(matches: Any) -> bool:
    """Whether every match block needs a header (so only the test requests can match)."""
    blocks = [m for m in matches or [] if isinstance(m, Mapping)]
    return bool(blocks) and all(m.get("headers") for m in blocks)


def istio_host(host: str, namespace: str) -> ServiceKey | None:
    """The Service a destination or VirtualService host names (short, ``name.ns``, ``name.ns.svc...``)."""
    parts = host.split(".")
    if not parts[0]:
        return None
    if len(parts) == 1:
        return (namespace, parts[0])
    if len(parts) == 2 or parts[2] == "svc":
        return (parts[1], parts[0])
    return None  # an outside name (web.example.com): a gateway's host, not a Service


def subset_labels(destination_rules: Iterable[Obj]) -> dict[tuple[ServiceKey, str], Labels]:
    """Every DestinationRule subset's labels, by (Service, subset name)."""
    subsets: dict[tuple[ServiceKey, str], Labels] = {}
    for rule in destination_rules:
        namespace = rule.get("metadata", {}).get("namespace", "")
        spec = rule.get("spec") or {}
        host = istio_host(str(spec.get("host") or ""), namespace)
        if host is None:
            continue
        for subset in spec.get("subsets") or []:
            if subset.get("name"):
                subsets[(host, str(subset["name"]))] = tuple(sorted((subset.get("labels") or {}).items()))
    return subsets


def virtual_service_entry(vs: Obj, header_share: float,
                          subsets: Mapping[tuple[ServiceKey, str], Labels] | None = None) -> Entry:
    """A VirtualService's http routes in Istio's order; a subset nobody defines sends nowhere."""
    namespace = vs.get("metadata", {}).get("namespace", "")
    spec = vs.get("spec") or {}
    routes = [r for r in spec.get("http") or [] if isinstance(r, Mapping)]
    splits = []
    for route, share in zip(routes, _ordered_shares([_by_header(r.get("match")) for r in routes], header_share),
                            strict=True):
        destinations = [d for d in route.get("route") or [] if isinstance(d, Mapping)]
        backends = []
        for d in destinations:
            target = d.get("destination") or {}
            key = istio_host(str(target.get("host") or ""), namespace)
            if key is None:
                continue
            weight = float(d.get("weight", 100 if len(destinations) == 1 else 0))
            labels: Labels = ()
            if target.get("subset"):
                found = (subsets or {}).get((key, str(target["subset"])))
                if found is None:
                    continue
                labels = found
            backends.append(Backend(key[0], key[1], weight, labels))
        if share > 0:
            splits.append(Split(share, tuple(backends)))
    hosts = {istio_host(str(h), namespace) for h in spec.get("hosts") or []}
    return Entry(f"VirtualService {namespace}/{vs.get('metadata', {}).get('name', '')}", tuple(splits),
                 frozenset(h for h in hosts if h is not None))


def http_route_entry(route: Obj, header_share: float) -> Entry:
    """An HTTPRoute's rules, header-matching ones first; backendRefs to Services only."""
    namespace = route.get("metadata", {}).get("namespace", "")
    rules = [r for r in (route.get("spec") or {}).get("rules") or [] if isinstance(r, Mapping)]
    rules.sort(key=lambda r: not _by_header(r.get("matches")))  # stable: order kept within each kind
    splits = []
    for rule, share in zip(rules, _ordered_shares([_by_header(r.get("matches")) for r in rules], header_share),
                           strict=True):
        backends = tuple(
            Backend(str(ref.get("namespace") or namespace), str(ref["name"]), float(ref.get("weight", 1)))
            for ref in rule.get("backendRefs") or []
            if isinstance(ref, Mapping) and ref.get("name") and ref.get("group", "") == ""
            and ref.get("kind", "Service") == "Service")
        if share > 0:
            splits.append(Split(share, backends))
    return Entry(f"HTTPRoute {namespace}/{route.get('metadata', {}).get('name', '')}", tuple(splits))


def _ingress_paths(ingress: Obj) -> list[tuple[str, str, str]]:
    """(host, path, Service) of each backend of an Ingress; the default backend as host and path ``*``."""
    spec = ingress.get("spec") or {}
    found = []
    default = ((spec.get("defaultBackend") or {}).get("service") or {}).get("name")
    if default:
        found.append(("*", "*", str(default)))
    for rule in spec.get("rules") or []:
        host = str(rule.get("host") or "*")
        for path in (rule.get("http") or {}).get("paths") or []:
            service = ((path.get("backend") or {}).get("service") or {}).get("name")
            if service:
                found.append((host, str(path.get("path") or "/"), str(service)))
    return found


def _number(raw: Any, default: float) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return default


def ingress_entries(ingresses: Iterable[Obj], header_share: float) -> list[Entry]:
    """One entry per plain Ingress, its paths sharing the rate.

    A canary Ingress takes its part of the plain Ingress's path with the same host and path, as
    ingress-nginx does; a canary with no plain counterpart gets nothing.
    """
    plain: list[Obj] = []
    canaries: list[Obj] = []
    for ingress in ingresses:
        annotations = ingress.get("metadata", {}).get("annotations") or {}
        (canaries if annotations.get(CANARY_ANNOTATION) == "true" else plain).append(ingress)
    # (namespace, host, path) -> (canary Service, its share of that path's requests)
    shadows: dict[tuple[str, str, str], tuple[str, float]] = {}
    for ingress in canaries:
        namespace = ingress.get("metadata", {}).get("namespace", "")
        annotations = ingress.get("metadata", {}).get("annotations") or {}
        total = _number(annotations.get(CANARY_WEIGHT_TOTAL_ANNOTATION), 100.0) or 100.0
        weight = min(1.0, max(0.0, _number(annotations.get(CANARY_WEIGHT_ANNOTATION), 0.0) / total))
        by_header = header_share if any(annotations.get(a) for a in CANARY_HEADER_ANNOTATIONS) else 0.0
        share = by_header + (1 - by_header) * weight
        for host, path, service in _ingress_paths(ingress):
            shadows[(namespace, host, path)] = (service, share)
    entries = []
    for ingress in plain:
        namespace = ingress.get("metadata", {}).get("namespace", "")
        paths = _ingress_paths(ingress)
        splits = []
        for host, path, service in paths:
            canary, share = shadows.get((namespace, host, path), ("", 0.0))
            backends = [Backend(namespace, service, 1 - share)]
            if canary:
                backends.append(Backend(namespace, canary, share))
            splits.append(Split(1 / len(paths), tuple(backends)))
        entries.append(Entry(f"Ingress {namespace}/{ingress.get('metadata', {}).get('name', '')}", tuple(splits)))
    return entries


# -- reading the cluster -------------------------------------------------------------------


def _list_custom(api: ApiClient, group: str, plural: str, namespaces: Sequence[str] | None) -> list[Obj]:
    """Every object of a custom resource (none when the cluster does not serve it)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api)
    try:
        if namespaces is None:
            return list(custom.list_cluster_custom_object(group, "v1", plural)["items"])
        return [o for ns in namespaces for o in custom.list_namespaced_custom_object(group, "v1", ns, plural)["items"]]
    except ApiException as error:
        if error.status == 404:
            return []
        raise


def discover_routes(api: ApiClient, namespaces: Sequence[str] | None, header_share: float) -> list[Entry]:
    """The entries of every VirtualService, HTTPRoute and Ingress (in ``namespaces``; None: all)."""
    from kubernetes import client

    rules = _list_custom(api, "networking.istio.io", "destinationrules", namespaces)
    subsets = subset_labels(rules)
    entries = [virtual_service_entry(vs, header_share, subsets)
               for vs in _list_custom(api, "networking.istio.io", "virtualservices", namespaces)]
    entries += [http_route_entry(r, header_share)
                for r in _list_custom(api, "gateway.networking.k8s.io", "httproutes", namespaces)]
    networking = client.NetworkingV1Api(api)
    if namespaces is None:
        ingresses = networking.list_ingress_for_all_namespaces().items
    else:
        ingresses = [i for ns in namespaces for i in networking.list_namespaced_ingress(ns).items]
    entries += ingress_entries([api.sanitize_for_serialization(i) for i in ingresses], header_share)
    return entries
