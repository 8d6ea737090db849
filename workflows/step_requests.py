"""Requests and results of the activities that do a whole step (or the promotion) in one attempt.

A step used to be three activities (scale canary, wait for it, scale stable) and the promotion
six; each costs history events and workflow tasks on the worker and on the Temporal server,
which is what a fleet of simultaneous releases pays for. These messages let one heartbeating
activity do the same work in the same order; the workflow keeps every decision (which sizes,
in which order, what a failure means).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from workflows.models import HoldStableResult, PodTemplate, WorkloadRequest


class ShiftRequest(WorkloadRequest):
    """Move both sides to ``canary`` and ``stable`` pods without losing capacity.

    ``grow``: the canary grows first and its pods must be Ready before the stable side shrinks;
    otherwise the stable side shrinks first and the canary after it (nothing to wait for).
    ``stable`` None leaves the stable side alone (a router splits the traffic, or a promotion
    grows the canary to full size before the Deployment changes version).
    """

    canary: int = Field(ge=0)
    stable: int | None = Field(default=None, ge=0)
    grow: bool
    template_hash: str  # the canary's: only its pods count as Ready
    # The template hash the job believes the user's Deployment holds, stamped with the stable
    # write so the shared watch does not report the job's own change back to it.
    known_hash: str | None = None
    # The release's first step: the canary Deployment is given this template (``prepare_canary``,
    # at zero pods) in the same attempt, before it grows. A retry finds it done.
    prepare: PodTemplate | None = None


class GrowStableRequest(WorkloadRequest):
    """The stable side to ``replicas`` pods and, before the activity returns, that many available.

    A router's job with ``dynamicStableScale`` runs a stable side sized to its weight; before any
    weight moves back to it, it grows and its pods must serve first. Only pods of the stable
    version (``template_hash``) count: paused mid-release, the Deployment already holds the
    canary's template, which must not pass for stable pods.
    """

    replicas: int = Field(ge=0)
    template_hash: str
    known_hash: str | None = None  # stamped with the write, as in ``ShiftRequest``
    # The router's stable Service: its Ready endpoints (what a mesh or an ingress sends to) must
    # count ``replicas`` too; the endpoints controller lags the ReplicaSet's status under load.
    service: str | None = None


class ShiftResult(BaseModel):
    """What each side is sized to now (the Deployments' ``spec.replicas``)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    canary: int
    stable: int | None = None  # None: the shift left the stable side alone


class HeldPromotionRequest(WorkloadRequest):
    """The held promotion of the user's Deployment to ``template``, once the canary carries all traffic.

    Emptied (still paused) with a ReplicaSet for ``template``, grown to ``replicas``, its pods
    available; then, when ``canary_down``, the canary to zero (a router's job leaves that to
    the workflow, which moves the route first).
    """

    template: PodTemplate
    template_hash: str
    replicas: int = Field(ge=0)
    canary_down: bool = True
    # The canary's pods may become the Deployment's own (no pod made to promote). Not when the
    # job's analysis tells canary from stable by the mesh's workload name: a pod reports the
    # name of the ReplicaSet that made it for its whole life, so handed over it would go on
    # counting as the next release's canary.
    reuse_pods: bool = True


HeldPromotionResult = HoldStableResult
"""What the promotion set aside (a user's edit made meanwhile) and the Deployment's generation.

When the promotion fails after setting an edit aside, the failure's first detail is that
edit (a ``WorkloadSnapshot`` as JSON), so it still becomes the next release.
"""
