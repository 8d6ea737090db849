"""An in-memory traffic router for time-skipping tests: one route, its two weights, two Services.

The real router activities (activities/routers/) are tested against the real API server and
its CRDs in tests/activities and tests/e2e; here the workflow's order of things is what
matters. So the fake keeps a timeline: every weight it was given, with how many canary pods
were Ready at that moment (a weight on a canary with no Ready pod is a request answered by
nobody), and which version the stable Service selected. Errors are raised with the same type
and field detail as the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import errors
from workflows import port
from workflows.routing import RouterRequest, RouterWeights, RouteWeight, ServicesRequest, SetWeightRequest


@dataclass(frozen=True)
class WeightWrite:
    """One weight the route took, and the canary pods Ready when it did."""

    canary: int
    ready_canary_pods: int
    stable_selects: str | None  # the template hash the stable Service selected then
    header_routes: tuple[str, ...] = ()  # the header routes held from then on, by name
    ready_stable_pods: int | None = None  # the stable pods Ready then (None: the fake does not say)


class FakeRouter:
    """The route of one job: ``weight`` percent to the canary Service, the rest to the stable one.

    ``ready_canary_pods`` tells how many canary pods serve now (the fake cluster knows); ``log``
    is the cluster fake's write log, so a test reads router and Deployment writes in one order.
    """

    def __init__(self, ready_canary_pods: Callable[[], int], log: Callable[[str, object], None],
                 ready_stable_pods: Callable[[], int] | None = None) -> None:
        self._ready = ready_canary_pods
        self._ready_stable = ready_stable_pods
        self._log = log
        self.weight = 0
        self.route = "primary"
        self.stable_selects: str | None = None  # the stable Service's pod-template hash
        self.services = False  # the job's Services exist
        self.timeline: list[WeightWrite] = []
        self.problem: tuple[str, str] | None = None  # (field, message): the cluster does not fit the spec
        self.checked: list[RouterRequest] = []
        self.header_routes: tuple[str, ...] = ()  # names of the header routes the route holds

    def refuse(self, field: str, message: str) -> None:
        """From now on the spec does not fit: ``check_router`` (and every other call) says so."""
        self.problem = (field, message)

    def _fits(self) -> None:
        if self.problem is not None:
            field, message = self.problem
            raise ApplicationError(f"{field}: {message}", field, type=errors.ROUTER_CONFIG_INVALID,
                                   non_retryable=True)

    def _stable_pods(self) -> int | None:
        return self._ready_stable() if self._ready_stable is not None else None

    def weights(self) -> RouterWeights:
        return RouterWeights(routes=[RouteWeight(route=self.route, stable=100 - self.weight, canary=self.weight)],
                             header_routes=list(self.header_routes))

    def activities(self) -> list[Callable[..., object]]:
        return [self.check_router, self.prepare_router_services, self.set_router_weight,
                self.read_router_weights, self.cleanup_router]

    @activity.defn(name=port.CHECK_ROUTER.name)
    async def check_router(self, req: RouterRequest) -> None:
        self.checked.append(req)
        self._fits()

    @activity.defn(name=port.PREPARE_ROUTER_SERVICES.name)
    async def prepare_router_services(self, req: ServicesRequest) -> None:
        self._fits()
        self.services, self.stable_selects = True, req.stable_template_hash
        self._log("router_services", req.stable_template_hash)

    @activity.defn(name=port.SET_ROUTER_WEIGHT.name)
    async def set_router_weight(self, req: SetWeightRequest) -> RouterWeights:
        self._fits()
        headers = tuple(route.name for route in req.header_routes)
        if req.canary_weight != self.weight or headers != self.header_routes:
            self.timeline.append(WeightWrite(req.canary_weight, self._ready(), self.stable_selects, headers,
                                             self._stable_pods()))
        if headers != self.header_routes:
            self.header_routes = headers
            self._log("router_headers", headers)
        if req.canary_weight != self.weight:
            self.weight = req.canary_weight
            self._log("router_weight", req.canary_weight)
        return self.weights()

    @activity.defn(name=port.READ_ROUTER_WEIGHTS.name)
    async def read_router_weights(self, req: RouterRequest) -> RouterWeights:
        self._fits()
        return self.weights()

    @activity.defn(name=port.CLEANUP_ROUTER.name)
    async def cleanup_router(self, req: RouterRequest) -> None:
        if self.weight != 0 or self.header_routes:
            self.weight, self.header_routes = 0, ()
            self.timeline.append(WeightWrite(0, self._ready(), self.stable_selects,
                                             ready_stable_pods=self._stable_pods()))
        self.services, self.stable_selects = False, None
        self._log("router_cleanup", None)
