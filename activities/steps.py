"""A whole step, or the held promotion, in one heartbeating activity attempt.

Each activity costs history events and a workflow task on the worker and on the Temporal
server; a release of three ``setWeight`` steps used to take sixteen. These do the same writes
and waits in the same order as the single-purpose activities of ``activities/kube.py`` (they
call them), inside one attempt: the waits still read the worker's informer and raise their last
"not yet" just before the progress deadline, every write is idempotent, and the stages done
so far travel in the heartbeat details (``activities/progress.py``), so a retry on another
worker does only what is left. A cancellation (terminate, promote, new rules, delete) arrives
through the heartbeat like any wait's; the workflow waits for the attempt to stop and then
reads what each side runs (:func:`read_sides`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio.exceptions import ApplicationError

from activities import canary_set
from activities.adoption import Handover
from activities.canary_set import Transfer
from activities.progress import tracked
from workflows.models import (
    HoldStableRequest,
    HoldStableResult,
    ReadyRequest,
    RolloutRequest,
    ScaleRequest,
    StableRevisionRequest,
    WorkloadRequest,
)
from workflows.step_requests import GrowStableRequest, HeldPromotionRequest, ShiftRequest, ShiftResult

if TYPE_CHECKING:
    from activities.kube import KubeActivities


def _ref(req: WorkloadRequest) -> dict[str, str]:
    return {"namespace": req.namespace, "name": req.name, "job": req.job}


def shift_replicas(kube: KubeActivities, req: ShiftRequest) -> ShiftResult:
    """Grow the canary, wait until its pods are Ready, shrink stable; or shrink stable, then the canary.

    The release's first step also gives the canary Deployment its template first (``req.prepare``).
    The order is what keeps capacity: new pods Ready before old ones go. ``req.stable`` None
    leaves the stable side as it is (a router's step, the promotion's first stage).
    """
    with tracked() as progress:
        sized = False

        def prepare() -> None:
            nonlocal sized
            if req.prepare is not None:
                sized = kube._prepare_shift_canary(req)

        def canary() -> None:
            if not sized:
                kube._scale_shift_canary(req)

        def ready() -> None:
            kube.wait_canary_ready(ReadyRequest(**_ref(req), replicas=req.canary, template_hash=req.template_hash))

        def stable() -> None:
            if req.stable is not None:
                kube._scale_stable(ScaleRequest(**_ref(req), replicas=req.stable, known_hash=req.known_hash))

        stages = (("prepare", prepare), ("canary", canary), ("ready", ready), ("stable", stable)) if req.grow else (
            ("prepare", prepare), ("stable", stable), ("canary", canary))
        for name, stage in stages:
            if name not in progress.done:
                stage()
                progress.mark(name)
        return ShiftResult(canary=req.canary, stable=req.stable)


def grow_stable(kube: KubeActivities, req: GrowStableRequest) -> None:
    """Scale the stable side to ``req.replicas``, then wait until that many of its pods are available.

    What a router's job with ``dynamicStableScale`` does before weight moves back to stable: the
    route may only send the stable Service what Ready pods can answer. The wait is the held
    promotion's (judged by the stable version's ReplicaSet, whatever template the paused
    Deployment holds), so its last "not yet" names the pod problem, and a retry that finds
    the write done only waits.
    """
    with tracked() as progress:
        if "scaled" not in progress.done:
            kube._scale_stable(ScaleRequest(**_ref(req), replicas=req.replicas, known_hash=req.known_hash))
            progress.mark("scaled")
        kube.wait_stable_rolled_out(RolloutRequest(**_ref(req), replicas=req.replicas,
                                                   template_hash=req.template_hash, held=True))
    if req.service is not None:
        kube.wait_service_endpoints(req.namespace, req.service, req.replicas)


def read_sides(kube: KubeActivities, req: WorkloadRequest) -> ShiftResult:
    """Both sides' ``spec.replicas`` as the API server has them (a missing canary runs none)."""
    workload = kube._workload(req)  # raises WorkloadNotFound
    sets = canary_set.list_sets(kube, req.namespace, req.job)
    if sets:
        canary = sum(int((rs.get("spec") or {}).get("replicas") or 0) for rs in sets)
    else:
        canary = int(((kube._read_canary(req) or {}).get("spec") or {}).get("replicas") or 0)
    return ShiftResult(canary=canary, stable=int(workload["spec"].get("replicas", 1)))


def promote_held(kube: KubeActivities, req: HeldPromotionRequest) -> HoldStableResult:
    """The Deployment on the new version, its pods available; the canary gone (with ``canary_down``).

    The canary already carries all the traffic (the workflow saw to that first). An edit found in
    the Deployment is set aside and returned, as ``hold_stable`` does; when a later stage fails,
    the failure carries it as its first detail, so the workflow still makes it the next release.
    """
    fields = {**_ref(req), "template": req.template, "template_hash": req.template_hash}
    with tracked() as progress:
        # Replica ratio: the canary's ReplicaSet is handed over whole (activities/canary_set.py),
        # a canary Deployment's pods one by one (activities/adoption.py). A router's Services
        # select pods by version, and a job whose analysis tells the canary by its workload name
        # needs new pods (``reuse_pods``): there the Deployment grows pods of its own; so it does
        # for an attempt that began that way on older code.
        reuse = req.canary_down and req.reuse_pods
        whole, by_pod = Transfer(kube, req, progress), Handover(kube, req, progress)
        transfer = reuse and not progress.done & {"emptied", "grown", "orphaned", "adopted"} and whole.possible()
        handover = transfer or (reuse and not progress.done & {"emptied", "grown"} and (
            "held" in progress.done or by_pod.possible()))
        try:
            if transfer:
                whole.run()
            elif handover:
                by_pod.run()
            if "emptied" not in progress.done and not handover:
                progress.keep(kube.prepare_stable(StableRevisionRequest(**fields)))
                progress.mark("emptied")
            if "grown" not in progress.done and not handover:
                progress.keep(kube.hold_stable(HoldStableRequest(**fields, replicas=req.replicas)))
                progress.mark("grown")
            if "rolled-out" not in progress.done:
                kube.wait_stable_rolled_out(RolloutRequest(**_ref(req), replicas=req.replicas,
                                                           template_hash=req.template_hash, held=True))
                progress.mark("rolled-out")
            if req.canary_down and not handover:
                kube.scale_canary(ScaleRequest(**_ref(req), replicas=0))
        except ApplicationError as error:
            if progress.displaced is None:
                raise
            raise ApplicationError(error.message, progress.displaced, type=error.type,
                                   non_retryable=error.non_retryable, category=error.category) from error
        displaced = progress.displaced
    return HoldStableResult.model_validate({"displaced": displaced, "generation": progress.generation})
