"""An in-memory cluster that behaves like what the real activities see, for property tests.

``fake_kube.FakeKube`` answers the workflow's calls; this fake also models the consequences
the release-safety invariants are about: which pod template the user's Deployment's *own*
pods run (and how they got it), whether it is paused, the canary Deployment that deleting
the user's Deployment garbage-collects, and how pods of each image behave. Every activity
answers to the same name, takes the same request model and raises the same error type as
its twin in ``activities/kube.py`` in the same situation, so the workflow cannot tell the
difference; a test can then ask the fake what really ran.

Image tags choose pod behaviour: ``registry.local/web:<kind>-<version>`` where ``kind`` is
``good`` (Ready at once), ``crash`` (CrashLoopBackOff, never Ready), ``never`` (running but
never Ready) or ``late<N>`` (Ready only on poll attempt N+1: the canary's readiness poll and
the Deployment's own roll-out alike). Any other tag is good.

All state lives on the event loop that runs the worker: the activities are ``async`` and the
test mutates the fake from coroutines on the same loop, so no lock is needed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.templates import images, template_hash, user_template
from tests.workflow.fake_hooks import FakeHooks
from tests.workflow.fake_metrics import FakeMetrics
from tests.workflow.fake_router import FakeRouter
from tests.workflow.fake_services import FakeServices
from workflows.analysis_spec import MEASURE_METRIC_ACTIVITY, MeasureRequest
from workflows.images import validate_image
from workflows.models import (
    AttachRequest,
    CanaryTemplateRequest,
    DetachRequest,
    HoldStableRequest,
    HoldStableResult,
    LabelRequest,
    PodTemplate,
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
from workflows.step_requests import GrowStableRequest, HeldPromotionRequest, ShiftRequest, ShiftResult
from workflows.verdict import Measurement
from workflows.webhook_spec import CALL_WEBHOOK_ACTIVITY, WebhookRequest, WebhookResult

_KIND = re.compile(r":(good|crash|never|late(\d+))-[^:/]*$")


@dataclass(frozen=True)
class PodBehaviour:
    """How the pods of one image behave: Ready at once, never, or after ``polls`` failed polls."""

    kind: str  # "good", "crash", "never" or "late"
    polls: int = 0

    def ready(self, attempt: int) -> bool:
        """Whether pods of this image are Ready when polled for the ``attempt``-th time."""
        if self.kind == "good":
            return True
        if self.kind == "late":
            return attempt > self.polls
        return False

    def problem(self, pod: str) -> str:
        """What ``kubectl describe`` would blame, as the real activities report it."""
        if self.kind == "crash":
            return f"pod {pod}: container app is CrashLoopBackOff: back-off restarting failed container"
        return f"pod {pod}: container app is not ready"


def behaviour_of(image: str) -> PodBehaviour:
    """The behaviour an image's tag asks for (see the module docstring)."""
    match = _KIND.search(image)
    if match is None:
        return PodBehaviour("good")
    if match.group(2) is not None:
        return PodBehaviour("late", int(match.group(2)))
    return PodBehaviour(match.group(1))


def template_behaviour(template: PodTemplate) -> PodBehaviour:
    """The worst behaviour among a template's containers: one crashing container fails the pod."""
    found = [behaviour_of(image) for image in images(template).values()]
    order = {"crash": 0, "never": 1, "late": 2, "good": 3}
    return min(found, key=lambda b: (order[b.kind], -b.polls), default=PodBehaviour("good"))


@dataclass(frozen=True)
class StablePodsEntry:
    """A pod template reached the user's Deployment's own pods: when (rule number), how, why."""

    step: int
    template_hash: str
    images: dict[str, str]
    why: str
    owner: str | None  # the job annotation on the Deployment at that moment
    ready: bool  # whether those pods became Ready (a crashing roll-out still reached the pods)


@dataclass
class Deployment:
    """The user's Deployment as far as the job can tell, plus what its own pods run."""

    template: PodTemplate
    replicas: int
    uid: int
    paused: bool = False
    owner: str | None = None
    # The template the Deployment's own (stable) pods run, and how many of them are Ready.
    pods_template: PodTemplate = field(default_factory=dict)
    ready_pods: int = 0
    # A roll-out that has started but not finished, with how many polls it has seen.
    rolling: PodTemplate | None = None
    generation: int = 1


@dataclass
class CanaryDeployment:
    """``<name>-canary``: created by the job, owned (for garbage collection) by the user's Deployment."""

    template: PodTemplate
    template_hash: str
    job: str
    owner_uid: int
    replicas: int = 0


class FakeCluster:
    """One namespace holding the user's Deployment ``web`` and its canary, in memory."""

    def __init__(self, *, image: str = "registry.local/web:good-0", replicas: int = 4) -> None:
        self.step = 0  # set by the test: which rule is running, for the stable-pods log
        self._uids = 0
        self.deployment: Deployment | None = None
        self.canary: CanaryDeployment | None = None
        self.stable_log: list[StablePodsEntry] = []
        self.calls: list[tuple[str, int]] = []  # (activity, attempt): what the workflow asked for
        self.metrics = FakeMetrics()
        self.hooks = FakeHooks()
        self.router = FakeRouter(self._ready_canary_pods, lambda kind, value: None,
                                 lambda: self.deployment.ready_pods if self.deployment else 0)
        # Blue-green Services: this fake models release safety, not Services; every pod counts as Ready.
        self.services = FakeServices(lambda side, hash_: 1, lambda: 1, lambda kind, value: None)
        self.create(self.initial_template(image), replicas, why="initial")

    @staticmethod
    def initial_template(image: str) -> PodTemplate:
        return {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]}}

    # -- the user's side ---------------------------------------------------------------------

    def create(self, template: PodTemplate, replicas: int, *, why: str = "created by the user") -> None:
        """``kubectl apply`` of a fresh Deployment: no annotation, not paused, its pods start at once."""
        self._uids += 1
        self.deployment = Deployment(template=copy.deepcopy(template), replicas=replicas, uid=self._uids)
        self._roll_out(why)

    def delete(self) -> None:
        """``kubectl delete deploy/web``: the canary goes with it (ownerReference)."""
        deployment, self.deployment = self.deployment, None
        if deployment is not None and self.canary is not None and self.canary.owner_uid == deployment.uid:
            self.canary = None

    def edit_image(self, image: str, container: str = "app") -> None:
        """``kubectl set image``: an unpaused Deployment rolls the new template out by itself."""
        deployment = self._require_user_object()
        for c in deployment.template["spec"]["containers"]:
            if c["name"] == container:
                c["image"] = image
        self._touched("edited by the user")

    def _require_user_object(self) -> Deployment:
        if self.deployment is None:
            raise LookupError("the Deployment does not exist")
        return self.deployment

    # -- what really runs ----------------------------------------------------------------------

    def snapshot(self) -> WorkloadSnapshot:
        deployment = self._require_user_object()
        template = user_template(deployment.template)
        return WorkloadSnapshot(template=template, template_hash=template_hash(template), images=images(template),
                                replicas=deployment.replicas, resource_version=str(deployment.generation))

    def stable_hash(self) -> str | None:
        """Hash of the template the user's Deployment's own pods run (None: no Deployment)."""
        return template_hash(self.deployment.pods_template) if self.deployment else None

    def _touched(self, why: str) -> None:
        """The spec changed: a paused Deployment holds its pods, an unpaused one rolls out."""
        deployment = self._require_user_object()
        deployment.generation += 1
        if not deployment.paused:
            self._roll_out(why)

    def _roll_out(self, why: str) -> None:
        """Start rolling the Deployment's template onto its own pods; good images finish at once."""
        deployment = self._require_user_object()
        target = user_template(deployment.template)
        running = template_hash(deployment.pods_template) if deployment.pods_template else None
        rolling = template_hash(deployment.rolling) if deployment.rolling is not None else None
        new = template_hash(target)
        if new == rolling:
            return  # already on its way
        if new == running:
            deployment.rolling = None  # back to what the Ready pods still run: nothing new reaches them
            return
        behaviour = template_behaviour(target)
        finished = behaviour.kind == "good"
        self.stable_log.append(StablePodsEntry(
            step=self.step, template_hash=new, images=images(target), why=why, owner=deployment.owner,
            ready=finished))
        if finished:
            deployment.pods_template, deployment.rolling = target, None
            deployment.ready_pods = deployment.replicas
        else:
            deployment.rolling = target

    def _advance_rollout(self, attempt: int, *, held: bool = False) -> None:
        """A roll-out poll: a late roll-out finishes once enough polls have passed."""
        deployment = self._require_user_object()
        if deployment.rolling is not None and (held or not deployment.paused) and template_behaviour(
                deployment.rolling).ready(attempt):
            deployment.pods_template, deployment.rolling = deployment.rolling, None
            deployment.ready_pods = deployment.replicas

    # -- errors, as the real activities raise them ----------------------------------------------

    def _workload(self, req: WorkloadRequest) -> Deployment:
        if self.deployment is None:
            raise ApplicationError(f"Deployment {req.namespace}/{req.name} not found",
                                   type=errors.WORKLOAD_NOT_FOUND, non_retryable=True)
        return self.deployment

    def _patch_target(self, req: WorkloadRequest) -> Deployment:
        """A PATCH of a missing Deployment is a 404, which ``kube_errors`` maps to WorkloadNotFound."""
        if self.deployment is None:
            raise ApplicationError(f"patch Deployment {req.namespace}/{req.name}: deployments.apps "
                                   f"\"{req.name}\" not found (HTTP 404)", type=errors.WORKLOAD_NOT_FOUND,
                                   non_retryable=True)
        return self.deployment

    @staticmethod
    def _check_owner(deployment: Deployment, req: WorkloadRequest) -> None:
        if deployment.owner is not None and deployment.owner != req.job:
            raise ApplicationError(f"Deployment {req.namespace}/{req.name} belongs to canary job "
                                   f"{deployment.owner!r}, not {req.job!r}", type=errors.OWNED_BY_OTHER_JOB,
                                   non_retryable=True)

    def _log_call(self, name: str) -> None:
        self.calls.append((name, activity.info().attempt))

    def _ready_canary_pods(self) -> int:
        canary = self.canary
        if canary is None or not template_behaviour(canary.template).ready(1):
            return 0
        return canary.replicas

    # -- the activities ------------------------------------------------------------------------

    def activities(self) -> list[Callable[..., Any]]:
        """Every ``@activity.defn`` method of this class, bound, and the router's: adding one is adding a method."""
        return [*(getattr(self, name) for name in dir(type(self))
                  if hasattr(getattr(type(self), name), "__temporal_activity_definition")),
                *self.router.activities(), *self.services.activities()]

    @activity.defn(name=MEASURE_METRIC_ACTIVITY)
    async def measure_metric(self, req: MeasureRequest) -> Measurement:
        return await self.metrics.measure_metric(req)

    @activity.defn(name=CALL_WEBHOOK_ACTIVITY)
    async def call_webhook(self, req: WebhookRequest) -> WebhookResult:
        return await self.hooks.call_webhook(req)

    @activity.defn(name="inspect_workload")
    async def inspect_workload(self, req: WorkloadRequest) -> WorkloadSnapshot:
        self._log_call("inspect_workload")
        self._workload(req)
        return self.snapshot()

    @activity.defn(name="attach_workload")
    async def attach_workload(self, req: AttachRequest) -> WorkloadSnapshot:
        self._log_call("attach_workload")
        deployment = self._workload(req)
        self._check_owner(deployment, req)
        deployment.owner, deployment.paused = req.job, True
        deployment.generation += 1
        return self.snapshot()

    @activity.defn(name="detach_workload")
    async def detach_workload(self, req: DetachRequest) -> None:
        self._log_call("detach_workload")
        deployment = self.deployment
        if deployment is not None:
            self._check_owner(deployment, req)
            if req.template is not None:
                deployment.template = user_template(req.template)
            deployment.replicas, deployment.paused, deployment.owner = req.replicas, False, None
            self._touched("detach: the job gave the Deployment back")
        if self.canary is not None and self.canary.job == req.job:
            self.canary = None

    @activity.defn(name="prepare_canary")
    async def prepare_canary(self, req: CanaryTemplateRequest) -> None:
        self._log_call("prepare_canary")
        deployment = self._workload(req)
        if self.canary is not None:
            if self.canary.job != req.job:
                raise ApplicationError(f"Deployment {req.namespace}/{req.name}-canary exists and is not managed "
                                       f"by canary job {req.job!r}", type=errors.OWNED_BY_OTHER_JOB,
                                       non_retryable=True)
            if self.canary.template_hash == req.template_hash:
                return
        self.canary = CanaryDeployment(template=user_template(req.template), template_hash=req.template_hash,
                                       job=req.job, owner_uid=deployment.uid)

    @activity.defn(name="scale_canary")
    async def scale_canary(self, req: ScaleRequest) -> None:
        self._log_call("scale_canary")
        if self.canary is None:
            if req.replicas == 0:
                return
            raise ApplicationError(f"scale Deployment {req.namespace}/{req.name}-canary: not found (HTTP 404)",
                                   type=errors.WORKLOAD_NOT_FOUND, non_retryable=True)
        self.canary.replicas = req.replicas

    @activity.defn(name="wait_canary_ready")
    async def wait_canary_ready(self, req: ReadyRequest) -> None:
        self._log_call("wait_canary_ready")
        name = f"{req.namespace}/{req.name}-canary"
        canary = self.canary
        if canary is None:
            if req.replicas == 0:
                return
            raise ApplicationError(f"canary Deployment {name} does not exist", type=errors.CANARY_NOT_READY)
        if req.replicas == 0:
            if canary.replicas == 0:
                return
            raise ApplicationError(f"{name}: {canary.replicas} canary pods left, waiting for none",
                                   type=errors.CANARY_NOT_READY)
        if canary.template_hash != req.template_hash:
            raise ApplicationError(f"{name}: the canary runs template {canary.template_hash}, not "
                                   f"{req.template_hash}", type=errors.CANARY_NOT_READY)
        behaviour = template_behaviour(canary.template)
        if canary.replicas >= req.replicas and behaviour.ready(activity.info().attempt):
            return
        raise ApplicationError(f"{name}: 0 of {req.replicas} canary pods of template {req.template_hash} ready; "
                               f"{behaviour.problem(req.name + '-canary-0')}", type=errors.CANARY_NOT_READY)

    @activity.defn(name="scale_stable")
    async def scale_stable(self, req: ScaleRequest) -> None:
        self._log_call("scale_stable")
        deployment = self._patch_target(req)
        deployment.replicas = req.replicas
        deployment.ready_pods = req.replicas if deployment.rolling is None else min(deployment.ready_pods,
                                                                                   req.replicas)
        self._touched("scaled by the job")

    @activity.defn(name="promote_stable")
    async def promote_stable(self, req: PromoteRequest) -> None:
        self._log_call("promote_stable")
        deployment = self._patch_target(req)
        deployment.replicas, deployment.paused = req.replicas, False
        self._touched("promotion: the job unpaused the Deployment")

    @activity.defn(name="pause_stable")
    async def pause_stable(self, req: WorkloadRequest) -> None:
        self._log_call("pause_stable")
        deployment = self._patch_target(req)
        deployment.paused = True
        deployment.generation += 1

    def _hold(self, req: HoldStableRequest | StableRevisionRequest, replicas: int) -> HoldStableResult:
        """The paused Deployment on ``req.template`` at ``replicas``: its pods run that template."""
        deployment = self._patch_target(req)
        self._check_owner(deployment, req)
        displaced = None
        if template_hash(user_template(deployment.template)) != req.template_hash:
            displaced = self.snapshot()
            deployment.template = user_template(req.template)
        deployment.replicas, deployment.paused = replicas, True
        deployment.generation += 1
        if replicas == 0:
            deployment.ready_pods, deployment.rolling = 0, None
        elif template_hash(deployment.pods_template) != req.template_hash or deployment.ready_pods < replicas:
            target = user_template(req.template)
            finished = template_behaviour(target).kind == "good"
            self.stable_log.append(StablePodsEntry(
                step=self.step, template_hash=req.template_hash, images=images(target),
                why="promotion: the job grew the held, paused Deployment", owner=deployment.owner, ready=finished))
            if finished:
                deployment.pods_template, deployment.rolling, deployment.ready_pods = target, None, replicas
            else:
                deployment.rolling = target
        return HoldStableResult(displaced=displaced)

    @activity.defn(name="prepare_stable")
    async def prepare_stable(self, req: StableRevisionRequest) -> HoldStableResult:
        self._log_call("prepare_stable")
        return self._hold(req, 0)

    @activity.defn(name="hold_stable")
    async def hold_stable(self, req: HoldStableRequest) -> HoldStableResult:
        self._log_call("hold_stable")
        return self._hold(req, req.replicas)

    @activity.defn(name="wait_stable_rolled_out")
    async def wait_stable_rolled_out(self, req: RolloutRequest) -> None:
        self._log_call("wait_stable_rolled_out")
        deployment = self._workload(req)
        self._advance_rollout(activity.info().attempt, held=req.held)
        if req.held:
            # Judged by what the pods run, as the real check judges by ReplicaSet.
            running = template_hash(deployment.pods_template) if deployment.pods_template else None
            if running == req.template_hash and deployment.rolling is None and deployment.replicas == req.replicas:
                return
            raise ApplicationError(f"{req.namespace}/{req.name}: 0 of {req.replicas} pods of revision "
                                   f"{req.template_hash} available", type=errors.STABLE_NOT_ROLLED_OUT)
        current = template_hash(user_template(deployment.template))
        running = template_hash(deployment.pods_template)
        if (current == req.template_hash and running == current and deployment.rolling is None
                and deployment.replicas == req.replicas):
            return
        if current != req.template_hash:
            problem = f"the Deployment's template is {current}, not {req.template_hash}"
        else:
            problem = f"0 of {req.replicas} pods updated" + (
                "; the Deployment is paused" if deployment.paused else "")
            if deployment.rolling is not None:
                problem += "; " + template_behaviour(deployment.rolling).problem(f"{req.name}-0")
        raise ApplicationError(f"{req.namespace}/{req.name}: {problem}", type=errors.STABLE_NOT_ROLLED_OUT)

    # -- a whole step, or the held promotion, in one activity: the same writes in the same order --

    @activity.defn(name="shift_replicas")
    async def shift_replicas(self, req: ShiftRequest) -> ShiftResult:
        self._log_call("shift_replicas")
        side = {"namespace": req.namespace, "name": req.name, "job": req.job}
        canary = ScaleRequest(**side, replicas=req.canary)
        if req.prepare is not None:
            await self.prepare_canary(CanaryTemplateRequest(**side, template=req.prepare,
                                                            template_hash=req.template_hash))
        if req.grow:
            await self.scale_canary(canary)
            await self.wait_canary_ready(ReadyRequest(**side, replicas=req.canary, template_hash=req.template_hash))
        if req.stable is not None:
            await self.scale_stable(ScaleRequest(**side, replicas=req.stable, known_hash=req.known_hash))
        if not req.grow:
            await self.scale_canary(canary)
        return ShiftResult(canary=req.canary, stable=req.stable)

    @activity.defn(name="grow_stable")
    async def grow_stable(self, req: GrowStableRequest) -> None:
        self._log_call("grow_stable")
        side = {"namespace": req.namespace, "name": req.name, "job": req.job}
        await self.scale_stable(ScaleRequest(**side, replicas=req.replicas, known_hash=req.known_hash))
        await self.wait_stable_rolled_out(RolloutRequest(**side, replicas=req.replicas,
                                                         template_hash=req.template_hash, held=True))

    @activity.defn(name="read_sides")
    async def read_sides(self, req: WorkloadRequest) -> ShiftResult:
        self._log_call("read_sides")
        deployment = self._workload(req)
        return ShiftResult(canary=self.canary.replicas if self.canary is not None else 0,
                           stable=deployment.replicas)

    @activity.defn(name="promote_held")
    async def promote_held(self, req: HeldPromotionRequest) -> HoldStableResult:
        self._log_call("promote_held")
        side = {"namespace": req.namespace, "name": req.name, "job": req.job}
        held = {**side, "template": req.template, "template_hash": req.template_hash}
        displaced = (await self.prepare_stable(StableRevisionRequest(**held))).displaced
        displaced = (await self.hold_stable(HoldStableRequest(**held, replicas=req.replicas))).displaced or displaced
        try:
            await self.wait_stable_rolled_out(RolloutRequest(**side, replicas=req.replicas,
                                                             template_hash=req.template_hash, held=True))
        except ApplicationError as error:
            if displaced is None:
                raise
            raise ApplicationError(error.message, displaced.model_dump(mode="json"), type=error.type,
                                   non_retryable=error.non_retryable) from error
        if req.canary_down:
            await self.scale_canary(ScaleRequest(**side, replicas=0))
        return HoldStableResult(displaced=displaced)

    @activity.defn(name="write_template")
    async def write_template(self, req: WriteTemplateRequest) -> WorkloadSnapshot:
        self._log_call("write_template")
        deployment = self._workload(req)
        deployment.template = user_template(req.template)
        self._touched("the job wrote a template (rollback)")
        return self.snapshot()

    @activity.defn(name="set_image")
    async def set_image(self, req: SetImageRequest) -> WorkloadSnapshot:
        self._log_call("set_image")
        try:
            validate_image(req.image)
        except ValueError as error:
            raise ApplicationError(str(error), type=errors.INVALID_REQUEST, non_retryable=True) from error
        deployment = self._workload(req)
        names = list(images(deployment.template))
        if req.container is not None and req.container not in names:
            raise ApplicationError(f"Deployment {req.namespace}/{req.name} has no container {req.container!r}; "
                                   f"its containers are: {', '.join(names)}", type=errors.INVALID_REQUEST,
                                   non_retryable=True)
        for c in deployment.template["spec"]["containers"]:
            if req.container in (None, c["name"]):
                c["image"] = req.image
        self._touched("the job set an image (update-version)")
        return self.snapshot()

    @activity.defn(name="label_workload")
    async def label_workload(self, req: LabelRequest) -> None:
        self._log_call("label_workload")
        self._check_owner(self._workload(req), req)

    @activity.defn(name="watch_workload")
    async def watch_workload(self, req: WatchRequest) -> WorkloadChange:
        self._log_call("watch_workload")
        raise ApplicationError("the fake cluster has no watch: start jobs with watch=False",
                               type=errors.INVALID_REQUEST, non_retryable=True)
