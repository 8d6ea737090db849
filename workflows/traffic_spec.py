"""The ``traffic`` part of a job: which router splits requests between stable and canary.

Field names follow Argo Rollouts' ``trafficRouting`` (``stableService``, ``canaryService``,
``istio.virtualService.{name, routes}``, ``istio.destinationRule.{name, stableSubsetName,
canarySubsetName}``, ``nginx.stableIngress``; Gateway API as its plugin names it, ``httpRoute``)
so its users can move their YAML over. The spec only says *what* to route; whether the named
objects exist and fit is checked against the cluster when the job is applied.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from workflows.fields import StrictModel

# A Service name is a DNS-1035 label; a VirtualService or HTTPRoute name a DNS-1123 subdomain.
SERVICE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Istio allows any route name; a bound keeps one job's history small.
MAX_ROUTES = 20
SUBSET_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ANNOTATION_KEY_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                          r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
MAX_ANNOTATIONS = 20


class RoutingKind(StrEnum):
    """Which traffic router splits requests between stable and canary."""

    REPLICA_RATIO = "replicaRatio"
    ISTIO = "istio"
    GATEWAY_API = "gatewayAPI"
    NGINX = "nginx"


class VirtualServiceRef(StrictModel):
    """The user's VirtualService and the named http routes in it whose weights the job sets.

    Without ``routes`` the VirtualService must hold exactly one http route (as in Argo Rollouts).
    """

    name: str = Field(pattern=OBJECT_NAME_PATTERN, max_length=253)
    routes: list[str] = Field(default_factory=list, max_length=MAX_ROUTES)

    @field_validator("routes")
    @classmethod
    def _named_once(cls, value: list[str]) -> list[str]:
        for index, route in enumerate(value):
            if not route or len(route) > 253:
                raise ValueError(f"route {index + 1} must be a name of 1 to 253 characters")
        repeated = sorted({route for route in value if value.count(route) > 1})
        if repeated:
            raise ValueError(f"routes named more than once: {', '.join(repeated)}")
        return value


class DestinationRuleRef(StrictModel):
    """Subset-level routing: the VirtualService's two destinations are subsets of one host.

    The job sets the two subsets' labels (stable: the stable version's ``pod-template-hash``;
    canary: the canary track label) and weighs them; no stable or canary Service is needed.
    """

    name: str = Field(pattern=OBJECT_NAME_PATTERN, max_length=253)
    stable_subset_name: str = Field(alias="stableSubsetName", pattern=SUBSET_NAME_PATTERN, max_length=63)
    canary_subset_name: str = Field(alias="canarySubsetName", pattern=SUBSET_NAME_PATTERN, max_length=63)

    @model_validator(mode="after")
    def _two_subsets(self) -> DestinationRuleRef:
        if self.stable_subset_name == self.canary_subset_name:
            raise ValueError("canarySubsetName must differ from stableSubsetName")
        return self


class IstioRouting(StrictModel):
    """Istio: a VirtualService whose routes send traffic to stable and canary (Services, or subsets)."""

    virtual_service: VirtualServiceRef = Field(alias="virtualService")
    destination_rule: DestinationRuleRef | None = Field(default=None, alias="destinationRule")


class NginxRouting(StrictModel):
    """NGINX: the user's Ingress, beside which the job keeps a canary Ingress of its own.

    ``additionalIngressAnnotations`` go on the canary Ingress; a key without a ``/`` gets the
    ``nginx.ingress.kubernetes.io/`` prefix, as in Argo Rollouts.
    """

    stable_ingress: str = Field(alias="stableIngress", pattern=OBJECT_NAME_PATTERN, max_length=253)
    additional_ingress_annotations: dict[str, str] = Field(default_factory=dict,
                                                           alias="additionalIngressAnnotations",
                                                           max_length=MAX_ANNOTATIONS)

    @field_validator("additional_ingress_annotations")
    @classmethod
    def _annotation_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.fullmatch(ANNOTATION_KEY_PATTERN, key):
                raise ValueError(f"{key!r} is not an annotation key (name, or prefix/name)")
        return value


class GatewayApiRouting(StrictModel):
    """Gateway API: an HTTPRoute whose rules have the stable and canary Services as backendRefs."""

    http_route: str = Field(alias="httpRoute", pattern=OBJECT_NAME_PATTERN, max_length=253)


class Traffic(StrictModel):
    """Traffic policy.

    Replica ratio needs no mesh: the workload's Service selects stable and canary pods alike,
    so weight is the share of Ready pods. A router sets exact weights between two Services,
    ``stableService`` and ``canaryService`` (created by the job when missing).
    """

    routing: RoutingKind = RoutingKind.REPLICA_RATIO
    stable_service: str | None = Field(default=None, alias="stableService", pattern=SERVICE_NAME_PATTERN,
                                       max_length=63)
    canary_service: str | None = Field(default=None, alias="canaryService", pattern=SERVICE_NAME_PATTERN,
                                       max_length=63)
    istio: IstioRouting | None = None
    gateway_api: GatewayApiRouting | None = Field(default=None, alias="gatewayAPI")
    nginx: NginxRouting | None = None
    # Argo Rollouts' name and meaning: with a router, the stable side shrinks to the pods its
    # share of the weight needs, and grows back (its pods Ready) before weight returns to it.
    dynamic_stable_scale: bool = Field(default=False, alias="dynamicStableScale")

    @property
    def router(self) -> bool:
        """Whether a router (not the replica ratio) sets the weights."""
        return self.routing is not RoutingKind.REPLICA_RATIO

    def same_route(self, other: Traffic | None) -> bool:
        """Whether ``other`` routes through the same objects, differing at most in how stable is sized.

        ``dynamicStableScale`` changes what the job does with the stable pods, not the route or
        its Services: turning it on or off between releases must not tear the router down.
        """
        return other is not None and (self.model_copy(update={"dynamic_stable_scale": False})
                                      == other.model_copy(update={"dynamic_stable_scale": False}))

    @property
    def subsets(self) -> DestinationRuleRef | None:
        """The DestinationRule whose subsets stand for stable and canary, when Istio routes by subset."""
        return self.istio.destination_rule if self.routing is RoutingKind.ISTIO and self.istio else None

    @property
    def backends(self) -> str:
        """What the route sends to, as one phrase for events and summaries."""
        if self.subsets is not None:
            return (f"subsets {self.subsets.stable_subset_name} (stable) and {self.subsets.canary_subset_name} "
                    f"(canary) of DestinationRule {self.subsets.name}")
        return f"Services {self.stable_service} (stable) and {self.canary_service} (canary)"


_SECTIONS = {RoutingKind.ISTIO: "istio", RoutingKind.GATEWAY_API: "gatewayAPI", RoutingKind.NGINX: "nginx"}


def traffic_problems(traffic: Traffic) -> list[str]:
    """What does not fit together in ``traffic``, each naming its field as the user writes it.

    Checked by the job spec's validator (whose errors carry no location of their own), so the
    messages spell out the whole path: ``traffic.istio: required with routing: istio``.
    """
    problems: list[str] = []
    given = {"istio": traffic.istio is not None, "gatewayAPI": traffic.gateway_api is not None,
             "nginx": traffic.nginx is not None}
    wanted = _SECTIONS.get(traffic.routing)
    for section, present in given.items():
        if present and section != wanted:
            problems.append(f"traffic.{section}: only used with routing: {section} (routing is {traffic.routing})")
    if wanted is not None and not given[wanted]:
        problems.append(f"traffic.{wanted}: required with routing: {wanted}")
    if traffic.dynamic_stable_scale and not traffic.router:
        problems.append("traffic.dynamicStableScale: only used with a router (routing: istio, gatewayAPI or nginx); "
                        "with the replica ratio the stable side always shrinks as the canary grows")
    return problems + _service_problems(traffic)


def _service_problems(traffic: Traffic) -> list[str]:
    """``stableService`` and ``canaryService``: required by a router that routes between Services, else unused."""
    problems: list[str] = []
    if traffic.subsets is not None:
        for field, value in (("stableService", traffic.stable_service), ("canaryService", traffic.canary_service)):
            if value is not None:
                problems.append(f"traffic.{field}: not used with istio.destinationRule (its subsets select the "
                                "stable and canary pods)")
    elif traffic.router:
        for field, value in (("stableService", traffic.stable_service), ("canaryService", traffic.canary_service)):
            if value is None:
                problems.append(f"traffic.{field}: required with routing: {traffic.routing} (the job creates "
                                "the Service when it is missing)")
        if traffic.stable_service is not None and traffic.stable_service == traffic.canary_service:
            problems.append("traffic.canaryService: must differ from stableService")
    else:
        for field, value in (("stableService", traffic.stable_service), ("canaryService", traffic.canary_service)):
            if value is not None:
                problems.append(f"traffic.{field}: only used with a router (routing: istio, gatewayAPI or nginx); the "
                                "replica ratio sends traffic through the workload's own Service")
    return problems
