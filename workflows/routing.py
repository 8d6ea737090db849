"""The messages between the workflow and the traffic-router activities.

Plain data, like :mod:`workflows.models`: the workflow says which job, which workload and
which ``traffic`` spec, and gets back the weights the router holds, read from the object
itself (not what the job last asked for), so what the job reports is what the mesh sees.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from workflows.header_route import HeaderRoute
from workflows.traffic_spec import Traffic


class _Model(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


class RouterRequest(_Model):
    """Which job's router, on which workload, configured how."""

    namespace: str
    job: str
    workload: str  # the Deployment: its selector and ports shape the Services the job creates
    traffic: Traffic


class ServicesRequest(RouterRequest):
    """Create the stable and canary Services when missing; point the stable one at this version.

    The stable Service selects the stable ReplicaSet's ``pod-template-hash`` (a Service
    selector cannot say "without the canary label"), so it moves only when the workflow says
    which version is stable: at attach, and once a promotion's new pods are up.
    """

    stable_template_hash: str = Field(alias="stableTemplateHash")


class SetWeightRequest(RouterRequest):
    """Send ``canary_weight`` percent to the canary Service and the rest to the stable one.

    ``header_routes`` are all the header routes the job wants held, no more: a route the job
    made earlier and left out here is removed. So every end of a release (a write at weight 0
    with none) leaves no route of the job's behind.
    """

    canary_weight: int = Field(alias="canaryWeight", ge=0, le=100)
    header_routes: list[HeaderRoute] = Field(default_factory=list, alias="headerRoutes")


class RouteWeight(_Model):
    """The weights one route (an Istio http route, an HTTPRoute rule) holds now."""

    route: str  # the route's name, or ``rules[i]`` / ``http[i]`` for an unnamed one
    stable: int
    canary: int

    @property
    def canary_percent(self) -> int:
        """The canary's share in percent (Gateway API weights are relative, not percentages)."""
        total = self.stable + self.canary
        return 0 if total == 0 else round(100 * self.canary / total)


class RouterWeights(_Model):
    """What the router holds, per route, as read back after a write."""

    routes: list[RouteWeight]
    # The header routes the object holds, by name (read back, like the weights).
    header_routes: list[str] = Field(default_factory=list, alias="headerRoutes")

    @property
    def canary_percent(self) -> int:
        """The canary's share of the route that gives it the most: what a user must know."""
        return max((route.canary_percent for route in self.routes), default=0)
