"""The Kubernetes port: every activity the workflow may call, by name, request and result type.

The workflow cannot import ``activities/`` (it would drag the Kubernetes client into the
sandbox), so the names live here once: the workflow calls through :class:`Activity` values,
``activities/kube.py`` registers its methods under the same names (``activities/metrics``
registers ``measure_metric``, ``activities/webhooks.py`` ``call_webhook``), and a test checks
that the real activities and the test fakes all match this table, signatures included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from workflows.analysis_spec import MEASURE_METRIC_ACTIVITY, MeasureRequest
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
from workflows.routing import RouterRequest, RouterWeights, ServicesRequest, SetWeightRequest
from workflows.service_selection import BlueGreenServices, RestoreRequest, Selection, SelectRequest
from workflows.step_requests import GrowStableRequest, HeldPromotionRequest, ShiftRequest, ShiftResult
from workflows.verdict import Measurement
from workflows.webhook_spec import CALL_WEBHOOK_ACTIVITY, WebhookRequest, WebhookResult

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass(frozen=True)
class Activity(Generic[Req, Res]):
    """One activity: its registered name and the types that cross the Temporal boundary."""

    name: str
    request: type[Req]
    result: type[Res] | None


INSPECT_WORKLOAD = Activity("inspect_workload", WorkloadRequest, WorkloadSnapshot)
ATTACH_WORKLOAD = Activity("attach_workload", AttachRequest, WorkloadSnapshot)
DETACH_WORKLOAD = Activity[DetachRequest, None]("detach_workload", DetachRequest, None)
PREPARE_CANARY = Activity[CanaryTemplateRequest, None]("prepare_canary", CanaryTemplateRequest, None)
SCALE_CANARY = Activity[ScaleRequest, None]("scale_canary", ScaleRequest, None)
WAIT_CANARY_READY = Activity[ReadyRequest, None]("wait_canary_ready", ReadyRequest, None)
SCALE_STABLE = Activity[ScaleRequest, None]("scale_stable", ScaleRequest, None)
HOLD_STABLE = Activity("hold_stable", HoldStableRequest, HoldStableResult)
PREPARE_STABLE = Activity("prepare_stable", StableRevisionRequest, HoldStableResult)
WAIT_STABLE_ROLLED_OUT = Activity[RolloutRequest, None]("wait_stable_rolled_out", RolloutRequest, None)
WRITE_TEMPLATE = Activity("write_template", WriteTemplateRequest, WorkloadSnapshot)
SET_IMAGE = Activity("set_image", SetImageRequest, WorkloadSnapshot)
WATCH_WORKLOAD = Activity("watch_workload", WatchRequest, WorkloadChange)
LABEL_WORKLOAD = Activity[LabelRequest, None]("label_workload", LabelRequest, None)
MEASURE_METRIC = Activity(MEASURE_METRIC_ACTIVITY, MeasureRequest, Measurement)
CALL_WEBHOOK = Activity(CALL_WEBHOOK_ACTIVITY, WebhookRequest, WebhookResult)
# One activity per step (and two for the promotion): what runs on current code does.
SHIFT_REPLICAS = Activity("shift_replicas", ShiftRequest, ShiftResult)
READ_SIDES = Activity("read_sides", WorkloadRequest, ShiftResult)
PROMOTE_HELD = Activity("promote_held", HeldPromotionRequest, HoldStableResult)
# Only a router's job with dynamicStableScale: stable grown back, available, before weight returns.
GROW_STABLE = Activity[GrowStableRequest, None]("grow_stable", GrowStableRequest, None)
# Only runs that started before promotions held the Deployment paused call these two.
PROMOTE_STABLE = Activity[PromoteRequest, None]("promote_stable", PromoteRequest, None)
PAUSE_STABLE = Activity[WorkloadRequest, None]("pause_stable", WorkloadRequest, None)

# Traffic routers (activities/routers/, registered by the worker beside the rest).
CHECK_ROUTER = Activity[RouterRequest, None]("check_router", RouterRequest, None)
PREPARE_ROUTER_SERVICES = Activity[ServicesRequest, None]("prepare_router_services", ServicesRequest, None)
SET_ROUTER_WEIGHT = Activity("set_router_weight", SetWeightRequest, RouterWeights)
READ_ROUTER_WEIGHTS = Activity("read_router_weights", RouterRequest, RouterWeights)
CLEANUP_ROUTER = Activity[RouterRequest, None]("cleanup_router", RouterRequest, None)

ROUTER: tuple[Activity[object, object], ...] = (
    CHECK_ROUTER, PREPARE_ROUTER_SERVICES, SET_ROUTER_WEIGHT, READ_ROUTER_WEIGHTS, CLEANUP_ROUTER,
)  # type: ignore[assignment]

_KUBE = (
    INSPECT_WORKLOAD, ATTACH_WORKLOAD, DETACH_WORKLOAD, PREPARE_CANARY, SCALE_CANARY, WAIT_CANARY_READY,
    SCALE_STABLE, HOLD_STABLE, PREPARE_STABLE, WAIT_STABLE_ROLLED_OUT, WRITE_TEMPLATE, SET_IMAGE,
    WATCH_WORKLOAD, LABEL_WORKLOAD, PROMOTE_STABLE, PAUSE_STABLE, MEASURE_METRIC, CALL_WEBHOOK,
    SHIFT_REPLICAS, READ_SIDES, PROMOTE_HELD, GROW_STABLE,
)
_ALL_BUT_MODES: tuple[Activity[object, object], ...] = (*_KUBE, *ROUTER)  # type: ignore[arg-type]

# Blue-green mode (activities/blue_green.py): aim the active and preview Services at one version.
CHECK_BLUE_GREEN = Activity[BlueGreenServices, None]("check_blue_green", BlueGreenServices, None)
SELECT_PODS = Activity("select_pods", SelectRequest, Selection)
RESTORE_SERVICES = Activity[RestoreRequest, None]("restore_services", RestoreRequest, None)

BLUE_GREEN: tuple[Activity[object, object], ...] = (
    CHECK_BLUE_GREEN, SELECT_PODS, RESTORE_SERVICES,
)  # type: ignore[assignment]
ALL: tuple[Activity[object, object], ...] = (*_ALL_BUT_MODES, *BLUE_GREEN)
