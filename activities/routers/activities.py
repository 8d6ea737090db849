"""The router activities the worker registers: one door per thing the workflow asks of a router.

``check_router`` is the apply-time check (reads only); ``prepare_router_services`` makes the
Services the routes point at (with Istio DestinationRule subsets: sets the subsets' labels);
``set_router_weight`` (weight and header routes) and ``read_router_weights`` answer with the
weights read back from the object; ``cleanup_router`` (on ``delete``) leaves all traffic on
stable, no header route, and removes the Services the job created. A ``terminate`` or a
failed release only needs ``set_router_weight`` at 0 with no header route: the Services stay
for the next release.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.routers.base import Router
from activities.routers.gateway_api import GatewayApiRouter
from activities.routers.istio import IstioRouter
from activities.routers.nginx import NginxRouter
from activities.routers.services import RouterServices
from workflows import port
from workflows.routing import RouterRequest, RouterWeights, ServicesRequest, SetWeightRequest
from workflows.traffic_spec import RoutingKind


class RouterActivities:
    """Router activities around one shared ``ApiClient`` (built once, in the worker)."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self._services = RouterServices(api)

    def all(self) -> list[Callable[..., Any]]:
        """Every router activity, bound to this client: what the worker registers."""
        return [self.check_router, self.prepare_router_services, self.set_router_weight,
                self.read_router_weights, self.cleanup_router]

    def router(self, req: RouterRequest) -> Router:
        """The router ``traffic.routing`` names."""
        if req.traffic.routing is RoutingKind.ISTIO:
            return IstioRouter(self._api, req.namespace, req.traffic)
        if req.traffic.routing is RoutingKind.GATEWAY_API:
            return GatewayApiRouter(self._api, req.namespace, req.traffic)
        if req.traffic.routing is RoutingKind.NGINX:
            return NginxRouter(self._api, req.namespace, req.job, req.traffic)
        raise ApplicationError(f"traffic.routing: {req.traffic.routing} has no router to call",
                               type=errors.INVALID_REQUEST, non_retryable=True)

    @activity.defn(name=port.CHECK_ROUTER.name)
    def check_router(self, req: RouterRequest) -> None:
        """Refuse a traffic spec the cluster cannot carry out, naming the field; writes nothing."""
        self.router(req).check()

    @activity.defn(name=port.PREPARE_ROUTER_SERVICES.name)
    def prepare_router_services(self, req: ServicesRequest) -> None:
        """Create the stable and canary Services when missing; aim the stable one at the stable version."""
        self._services.ensure(req)

    @activity.defn(name=port.SET_ROUTER_WEIGHT.name)
    def set_router_weight(self, req: SetWeightRequest) -> RouterWeights:
        """Set the canary's weight on every weighed route and hold exactly the request's header routes.

        Answer what the object now holds.
        """
        return self.router(req).set_weight(req.canary_weight, req.header_routes)

    @activity.defn(name=port.READ_ROUTER_WEIGHTS.name)
    def read_router_weights(self, req: RouterRequest) -> RouterWeights:
        """What the router's object holds now."""
        return self.router(req).read_weights()

    @activity.defn(name=port.CLEANUP_ROUTER.name)
    def cleanup_router(self, req: RouterRequest) -> None:
        """All traffic to stable, then the job's own Services removed (the user's stay)."""
        self.router(req).cleanup()
        self._services.remove(req)
