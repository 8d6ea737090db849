"""The ``traffic`` part of a job: which router splits requests between stable and canary.

Field names follow Argo Rollouts' ``trafficRouting`` (``stableService``, ``canaryService``,
``istio.virtualService.{name, routes}``; Gateway API as its plugin names it, ``httpRoute``) so
its users can move their YAML over. The spec only says *what* to route; whether the named
objects exist and fit is checked against the cluster when the job is applied.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from workflows.fields import StrictModel

# A Service name is a DNS-1035 label; a VirtualService or HTTPRoute name a DNS-1123 subdomain.
SERVICE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Istio allows any route name; a bound keeps one job's history small.
MAX_ROUTES = 20


class RoutingKind(StrEnum):
    """Which traffic router splits requests between stable and canary."""

    REPLICA_RATIO = "replicaRatio"
    ISTIO = "istio"
    GATEWAY_API = "gatewayAPI"


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


class IstioRouting(StrictModel):
    """Istio: a VirtualService whose routes send traffic to the stable and canary Services."""

    virtual_service: VirtualServiceRef = Field(alias="virtualService")


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

    @property
    def router(self) -> bool:
        """Whether a router (not the replica ratio) sets the weights."""
        return self.routing is not RoutingKind.REPLICA_RATIO


_SECTIONS = {RoutingKind.ISTIO: "istio", RoutingKind.GATEWAY_API: "gatewayAPI"}


def traffic_problems(traffic: Traffic) -> list[str]:
    """What does not fit together in ``traffic``, each naming its field as the user writes it.

    Checked by the job spec's validator (whose errors carry no location of their own), so the
    messages spell out the whole path: ``traffic.istio: required with routing: istio``.
    """
    problems: list[str] = []
    given = {"istio": traffic.istio is not None, "gatewayAPI": traffic.gateway_api is not None}
    wanted = _SECTIONS.get(traffic.routing)
    for section, present in given.items():
        if present and section != wanted:
            problems.append(f"traffic.{section}: only used with routing: {section} (routing is {traffic.routing})")
    if wanted is not None and not given[wanted]:
        problems.append(f"traffic.{wanted}: required with routing: {wanted}")
    if traffic.router:
        for field, value in (("stableService", traffic.stable_service), ("canaryService", traffic.canary_service)):
            if value is None:
                problems.append(f"traffic.{field}: required with routing: {traffic.routing} (the job creates "
                                "the Service when it is missing)")
        if traffic.stable_service is not None and traffic.stable_service == traffic.canary_service:
            problems.append("traffic.canaryService: must differ from stableService")
    else:
        for field, value in (("stableService", traffic.stable_service), ("canaryService", traffic.canary_service)):
            if value is not None:
                problems.append(f"traffic.{field}: only used with a router (routing: istio or gatewayAPI); the "
                                "replica ratio sends traffic through the workload's own Service")
    return problems
