"""An in-memory stand-in for the Kubernetes port, for time-skipping workflow tests.

The real activities run against the real cluster in tests/activities and tests/e2e; here the
workflow's decisions are checked with hours of pauses skipped. The fake answers to the same
activity names and records every write, so tests can assert on what the cluster would see.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from tests.workflow.fake_hooks import FakeHooks
from tests.workflow.fake_metrics import FakeMetrics
from tests.workflow.fake_router import FakeRouter
from tests.workflow.fake_services import FakeServices
from workflows.models import (
    AttachRequest,
    CanaryTemplateRequest,
    DetachRequest,
    HoldStableRequest,
    HoldStableResult,
    LabelRequest,
    PromoteRequest,
    ReadyRequest,
    RolloutRequest,
    ScaleRequest,
    SetImageRequest,
    StableRevisionRequest,
    WatchRequest,
    WorkloadChange,
    WorkloadRequest,
    WorkloadSnapshot,
    WriteTemplateRequest,
)
from workflows.service_selection import Side
from workflows.step_requests import GrowStableRequest, HeldPromotionRequest, ShiftRequest, ShiftResult


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:12]


class FakeKube:
    """One Deployment (the stable side) and its canary Deployment, in memory."""

    def __init__(self, *, replicas: int = 4, image: str = "registry.local/web:1", exists: bool = True) -> None:
        self.exists = exists
        self.template: dict[str, Any] = {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": image}, {"name": "sidecar", "image": "proxy:1"}]},
        }
        self.replicas = replicas
        self.paused = False
        self.owner: str | None = None
        self.stable_template = copy.deepcopy(self.template)  # what the running stable pods run
        # Stable pods Ready now: a shrink takes pods away at once, new ones count only once a wait
        # for the stable side has seen them (so a route written without that wait is caught).
        self.ready_stable = replicas
        self.stable_stuck = False  # new stable pods never become Ready (a wait for them fails)
        self.canary_template: dict[str, Any] | None = None
        self.canary_replicas = 0
        self.broken_images: set[str] = set()  # canaries with these images never become Ready
        self.unpromotable_images: set[str] = set()  # Ready as a canary, never on the stable pods
        self.on_prepare_stable: Callable[[], None] | None = None  # e.g. a user's edit mid-promotion
        self.stable_log: list[str] = [image]  # every app image the stable pods ever ran, in order
        self.writes: list[tuple[str, Any]] = []
        self.metrics = FakeMetrics()  # what analysis measures: scripted values, real judgement
        self.hooks = FakeHooks()  # what webhooks answer: scripted statuses, every body kept
        # The job's route (traffic.routing istio or gatewayAPI); its writes join ``writes``.
        self.router = FakeRouter(self._ready_canary_pods, lambda kind, value: self.writes.append((kind, value)),
                                 lambda: self.ready_stable)
        # A blue-green job's active and preview Services; their writes join ``writes`` too.
        self.services = FakeServices(self._ready_pods, self._all_ready_pods,
                                     lambda kind, value: self.writes.append((kind, value)))

    # -- test controls ---------------------------------------------------------------------

    def edit_image(self, image: str, container: str = "app") -> None:
        for c in self.template["spec"]["containers"]:
            if c["name"] == container:
                c["image"] = image
        if not self.paused:
            self._run_on_stable_pods(self.template)

    def images(self, template: dict[str, Any] | None = None) -> dict[str, str]:
        source = template if template is not None else self.template
        return {c["name"]: c["image"] for c in source["spec"]["containers"]}

    def snapshot(self) -> WorkloadSnapshot:
        return WorkloadSnapshot(template=copy.deepcopy(self.template), template_hash=template_hash(self.template),
                                images=self.images(), replicas=self.replicas, resource_version="1")

    def _ready_canary_pods(self) -> int:
        image = self.images(self.canary_template)["app"] if self.canary_template else None
        return 0 if image is None or image in self.broken_images else self.canary_replicas

    def _ready_pods(self, side: Side, hash_: str) -> int:
        """Ready pods of the version ``hash_`` in the Deployment ``side`` names."""
        if side is Side.CANARY:
            current = template_hash(self.canary_template) if self.canary_template else None
            return self._ready_canary_pods() if current == hash_ else 0
        return self.replicas if template_hash(self.stable_template) == hash_ else 0

    def _all_ready_pods(self) -> int:
        """Ready pods a Service with the workload's own selector picks: both Deployments'."""
        return self.replicas + self._ready_canary_pods()

    def _require(self, request: WorkloadRequest) -> None:
        if not self.exists:
            raise ApplicationError(f"Deployment {request.namespace}/{request.name} not found",
                                   type="WorkloadNotFound", non_retryable=True)

    # -- the activities ---------------------------------------------------------------------

    def activities(self) -> list[Any]:
        return [self.inspect_workload, self.attach_workload, self.prepare_canary, self.scale_canary,
                self.scale_stable, self.wait_canary_ready, self.promote_stable, self.wait_stable_rolled_out,
                self.pause_stable, self.write_template, self.set_image, self.watch_workload, self.label_workload,
                self.detach_workload, self.hold_stable, self.prepare_stable, self.metrics.measure_metric,
                self.hooks.call_webhook, self.shift_replicas, self.read_sides, self.promote_held,
                self.grow_stable, *self.router.activities(), *self.services.activities()]

    @activity.defn(name="inspect_workload")
    async def inspect_workload(self, request: WorkloadRequest) -> WorkloadSnapshot:
        self._require(request)
        return self.snapshot()

    @activity.defn(name="attach_workload")
    async def attach_workload(self, request: AttachRequest) -> WorkloadSnapshot:
        self._require(request)
        if self.owner not in (None, request.job):
            raise ApplicationError(f"owned by job {self.owner}", type="OwnedByOtherJob", non_retryable=True)
        self.owner, self.paused = request.job, True
        self.writes.append(("attach", request.job))
        return self.snapshot()

    @activity.defn(name="prepare_canary")
    async def prepare_canary(self, request: CanaryTemplateRequest) -> None:
        if self.canary_template is None or template_hash(self.canary_template) != request.template_hash:
            self.canary_template = copy.deepcopy(request.template)
            self.canary_replicas = 0
        self.writes.append(("prepare_canary", self.images(request.template)["app"]))

    @activity.defn(name="scale_canary")
    async def scale_canary(self, request: ScaleRequest) -> None:
        self.canary_replicas = request.replicas
        self.writes.append(("scale_canary", request.replicas))
        self.services.note()

    @activity.defn(name="scale_stable")
    async def scale_stable(self, request: ScaleRequest) -> None:
        self._require(request)
        self.replicas = request.replicas
        self.ready_stable = min(self.ready_stable, request.replicas)
        self.writes.append(("scale_stable", request.replicas))
        self.services.note()

    @activity.defn(name="wait_canary_ready")
    async def wait_canary_ready(self, request: ReadyRequest) -> None:
        image = self.images(self.canary_template)["app"] if self.canary_template else None
        if request.replicas > 0 and image in self.broken_images:
            raise ApplicationError(f"0/{request.replicas} canary pods ready: pod web-canary-x: CrashLoopBackOff",
                                   type="CanaryNotReady")

    @activity.defn(name="promote_stable")
    async def promote_stable(self, request: PromoteRequest) -> None:
        self.replicas, self.paused = request.replicas, False
        self._run_on_stable_pods(self.template)
        self.writes.append(("promote_stable", self.images()["app"]))

    @activity.defn(name="wait_stable_rolled_out")
    async def wait_stable_rolled_out(self, request: RolloutRequest) -> None:
        self._require(request)
        if template_hash(self.stable_template) != request.template_hash:
            raise ApplicationError("stable not rolled out", type="StableNotRolledOut")
        if self.images(self.stable_template)["app"] in self.unpromotable_images:
            raise ApplicationError("stable pods not ready: CrashLoopBackOff", type="StableNotRolledOut")
        if self.stable_stuck and self.ready_stable < request.replicas:
            raise ApplicationError(f"{self.ready_stable} of {request.replicas} stable pods available; pod web-x: "
                                   "Pending (Insufficient cpu)", type="StableNotRolledOut")
        self.ready_stable = max(self.ready_stable, min(request.replicas, self.replicas))

    def _hold(self, template: dict[str, Any], replicas: int) -> HoldStableResult:
        displaced = None
        if template_hash(self.template) != template_hash(template):
            displaced = self.snapshot()
            self.template = copy.deepcopy(template)
        self.replicas, self.paused = replicas, True
        self.ready_stable = min(self.ready_stable, replicas)
        if replicas == 0:
            self.writes.append(("prepare_stable", self.images()["app"]))
        else:
            self._run_on_stable_pods(self.template)
            self.writes.append(("hold_stable", replicas))
        self.services.note()
        return HoldStableResult(displaced=displaced)

    @activity.defn(name="hold_stable")
    async def hold_stable(self, request: HoldStableRequest) -> HoldStableResult:
        self._require(request)
        return self._hold(request.template, request.replicas)

    @activity.defn(name="prepare_stable")
    async def prepare_stable(self, request: StableRevisionRequest) -> HoldStableResult:
        self._require(request)
        result = self._hold(request.template, 0)
        if self.on_prepare_stable is not None:
            hook, self.on_prepare_stable = self.on_prepare_stable, None
            hook()
        return result

    def _run_on_stable_pods(self, template: dict[str, Any]) -> None:
        self.stable_template = copy.deepcopy(template)
        if self.stable_log[-1] != self.images(template)["app"]:
            self.stable_log.append(self.images(template)["app"])

    @activity.defn(name="pause_stable")
    async def pause_stable(self, request: WorkloadRequest) -> None:
        self.paused = True

    @activity.defn(name="write_template")
    async def write_template(self, request: WriteTemplateRequest) -> WorkloadSnapshot:
        self.template = copy.deepcopy(request.template)
        self.writes.append(("write_template", self.images()["app"]))
        return self.snapshot()

    @activity.defn(name="set_image")
    async def set_image(self, request: SetImageRequest) -> WorkloadSnapshot:
        for c in self.template["spec"]["containers"]:
            if request.container in (None, c["name"]):
                c["image"] = request.image
        self.writes.append(("set_image", request.image))
        return self.snapshot()

    @activity.defn(name="label_workload")
    async def label_workload(self, request: LabelRequest) -> None:
        self._require(request)
        self.writes.append(("label", request.job))

    @activity.defn(name="watch_workload")
    async def watch_workload(self, request: WatchRequest) -> WorkloadChange:
        """Only the wait for a missing Deployment to come back (jobs on the shared watch need it)."""
        if not request.known_missing:
            raise ApplicationError("the fake has no watch: use watch=False", non_retryable=True)
        while not self.exists:
            activity.heartbeat()
            await asyncio.sleep(0.05)
        return WorkloadChange(kind="created", snapshot=self.snapshot())

    # -- a whole step, or the held promotion, in one activity: the same writes in the same order --

    @activity.defn(name="shift_replicas")
    async def shift_replicas(self, request: ShiftRequest) -> ShiftResult:
        side = {"namespace": request.namespace, "name": request.name, "job": request.job}
        canary = ScaleRequest(**side, replicas=request.canary)
        if request.prepare is not None:
            await self.prepare_canary(CanaryTemplateRequest(**side, template=request.prepare,
                                                            template_hash=request.template_hash))
        if request.grow:
            await self.scale_canary(canary)
            await self.wait_canary_ready(ReadyRequest(**side, replicas=request.canary,
                                                      template_hash=request.template_hash))
        if request.stable is not None:
            await self.scale_stable(ScaleRequest(**side, replicas=request.stable, known_hash=request.known_hash))
        if not request.grow:
            await self.scale_canary(canary)
        return ShiftResult(canary=request.canary, stable=request.stable)

    @activity.defn(name="grow_stable")
    async def grow_stable(self, request: GrowStableRequest) -> None:
        side = {"namespace": request.namespace, "name": request.name, "job": request.job}
        await self.scale_stable(ScaleRequest(**side, replicas=request.replicas, known_hash=request.known_hash))
        await self.wait_stable_rolled_out(RolloutRequest(**side, replicas=request.replicas,
                                                         template_hash=request.template_hash, held=True))
        self.writes.append(("stable_ready", self.ready_stable))

    @activity.defn(name="read_sides")
    async def read_sides(self, request: WorkloadRequest) -> ShiftResult:
        self._require(request)
        return ShiftResult(canary=self.canary_replicas, stable=self.replicas)

    @activity.defn(name="promote_held")
    async def promote_held(self, request: HeldPromotionRequest) -> HoldStableResult:
        side = {"namespace": request.namespace, "name": request.name, "job": request.job}
        held = {**side, "template": request.template, "template_hash": request.template_hash}
        displaced = (await self.prepare_stable(StableRevisionRequest(**held))).displaced
        grown = await self.hold_stable(HoldStableRequest(**held, replicas=request.replicas))
        displaced = grown.displaced or displaced
        try:
            await self.wait_stable_rolled_out(RolloutRequest(**side, replicas=request.replicas,
                                                             template_hash=request.template_hash, held=True))
        except ApplicationError as error:
            if displaced is None:
                raise
            raise ApplicationError(error.message, displaced.model_dump(mode="json"), type=error.type) from error
        if request.canary_down:
            await self.scale_canary(ScaleRequest(**side, replicas=0))
        return HoldStableResult(displaced=displaced)

    @activity.defn(name="detach_workload")
    async def detach_workload(self, request: DetachRequest) -> None:
        if request.template is not None:
            self.template = copy.deepcopy(request.template)
        self._run_on_stable_pods(self.template)
        self.replicas, self.paused, self.owner = request.replicas, False, None
        self.ready_stable = request.replicas
        self.canary_template, self.canary_replicas = None, 0
        self.writes.append(("detach", request.replicas))
