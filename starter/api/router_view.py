"""What the job page says about traffic: which router, on which objects, holding which weights.

The details query carries the router's kind (``routing``) and the weights read back from its
object (``routes``); the objects themselves are named in the job's rules (``rules.traffic``,
the spec as the user wrote it). This reads both into plain lines the template prints, and
reads the rules leniently: a job written by a newer or older worker may carry fields this
page does not know, and the page must still show what it can.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workflows.models import JobDetails

REPLICA_RATIO = "replicaRatio"
KIND_NAMES = {REPLICA_RATIO: "Replica ratio", "istio": "Istio", "gatewayAPI": "Gateway API", "nginx": "NGINX"}


@dataclass(frozen=True)
class HeldWeight:
    """One route's weights as the router's object holds them."""

    route: str
    stable: int
    canary: int


@dataclass(frozen=True)
class RouterView:
    """The router as the page shows it."""

    routing: str
    kind: str  # "Istio", ...
    objects: list[str] = field(default_factory=list)  # "VirtualService shop/web (routes: primary)", ...
    services: str | None = None  # "web-stable (stable), web-canary (canary)"
    weights: list[HeldWeight] = field(default_factory=list)
    # With ``dynamicStableScale``: how the stable side is sized, and its pods and the canary's now.
    stable_scale: str | None = None

    @property
    def routed(self) -> bool:
        """Whether a router (not the pods' ratio) decides the canary's share."""
        return self.routing != REPLICA_RATIO


def _section(traffic: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = traffic.get(key)
    return value if isinstance(value, Mapping) else {}


def _objects(routing: str, namespace: str, traffic: Mapping[str, Any]) -> list[str]:
    if routing == "istio":
        istio = _section(traffic, "istio")
        vs = _section(istio, "virtualService")
        found = []
        if vs.get("name"):
            routes = [str(r) for r in vs.get("routes") or []]
            found.append(f"VirtualService {namespace}/{vs['name']}"
                         + (f" (routes: {', '.join(routes)})" if routes else " (its only http route)"))
        rule = _section(istio, "destinationRule")
        if rule.get("name"):
            found.append(f"DestinationRule {namespace}/{rule['name']} (subsets: "
                         f"{rule.get('stableSubsetName', '?')} stable, {rule.get('canarySubsetName', '?')} canary)")
        return found
    if routing == "gatewayAPI":
        name = _section(traffic, "gatewayAPI").get("httpRoute")
        return [f"HTTPRoute {namespace}/{name}"] if name else []
    if routing == "nginx":
        name = _section(traffic, "nginx").get("stableIngress")
        return [f"Ingress {namespace}/{name} and the job's canary Ingress beside it"] if name else []
    return []


def router_view(job: JobDetails) -> RouterView:
    """The router of ``job``: kind, objects, Services and the weights its routes hold."""
    routing = job.routing or REPLICA_RATIO
    kind = KIND_NAMES.get(routing, routing)
    if routing == REPLICA_RATIO:
        return RouterView(routing, kind)
    traffic = _section(job.rules, "traffic")
    stable, canary = traffic.get("stableService"), traffic.get("canaryService")
    services = f"{stable} (stable), {canary} (canary)" if stable and canary else None
    weights = [HeldWeight(r.route, r.stable, r.canary) for r in job.routes]
    stable_scale = None
    if traffic.get("dynamicStableScale") is True:
        # Without it stable keeps every replica through the release; with it, an operator who sees
        # fewer stable pods than the Deployment's replicas must know that is by design.
        stable_scale = (f"sized to its weight (dynamicStableScale): {job.stable_replicas} stable, "
                        f"{job.canary_replicas} canary pods now; grown back and Ready before weight returns to it")
    return RouterView(routing, kind, _objects(routing, job.namespace, traffic), services, weights, stable_scale)
