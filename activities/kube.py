"""The activities: the only code that reads or writes Kubernetes objects.

The user's Deployment ``<name>`` is the stable side. While a job holds it, it is paused and
annotated with the job's name: a paused Deployment keeps its current pods (and still scales
them) but does not roll out template edits, so a user's edit becomes the next canary version
instead of a rollout. The canary runs in a second Deployment ``<name>-canary`` whose pods carry
every label of the workload's pods, so the workload's Service sends each Ready pod its share
of the traffic.

Every method is a synchronous activity (the client is urllib3-based) meant for a thread pool.
Deployments are read and written as the API server's own JSON (``_preload_content=False``),
never through the client's models, so no field the client does not know is lost on a
write-back and the template hash sees exactly what the server stores. Every call is
idempotent: a retried activity finds the work done and does nothing more.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities import canary_set, errors, steps
from activities.adoption import discard_orphans
from activities.errors import kube_errors, not_found
from activities.progress import heartbeat
from activities.reads import canary_name, read_or_none, release, selector_string
from activities.templates import (
    CANARY_TRACK,
    HASH_ANNOTATION,
    JOB_KEY,
    KNOWN_ANNOTATION,
    TRACK_LABEL,
    canary_selector,
    canary_template,
    images,
    known_value,
    still_the_jobs,
    template_hash,
    user_template,
)
from workflows import port
from workflows.images import validate_image
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
from workflows.step_requests import GrowStableRequest, HeldPromotionRequest, ShiftRequest, ShiftResult

Obj = dict[str, Any]
FIELD_MANAGER = "canary-delivery"
REQUEST_TIMEOUT = 10.0
# Expected states, not faults ("not Ready yet", "rolling out"): the SDK logs them without a traceback.
BENIGN = ApplicationErrorCategory.BENIGN
# "Not yet" answers of the waits: checked again on the next change instead of failing the attempt.
WAIT_TYPES = frozenset({errors.CANARY_NOT_READY, errors.STABLE_NOT_ROLLED_OUT})
# A wait raises its last "not yet" this long before the activity's deadline, so Temporal records
# that message rather than a bare timeout.
DEADLINE_MARGIN = 1.0
CONFLICT_ATTEMPTS = 5
# How long an activity waits for the Deployment controller to act on a write before it lets
# Temporal retry: it normally answers within milliseconds.
STABLE_SETTLE_SECONDS = 15.0
DEPLOYMENTS, REPLICA_SETS = "deployments", "replicasets"  # what a wait watches
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
WAITING_FAILURES = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                    "CreateContainerError", "InvalidImageName", "RunContainerError")


class DeploymentCache(Protocol):
    """Newest copies of the Deployments jobs hold, kept by one watch (see activities.informer)."""

    synced: threading.Event

    def get(self, namespace: str, name: str) -> Obj | None:
        """The newest copy, or None when there is none (then ask the API server)."""

    def wait_change(self, namespace: str, name: str, version: str | None, timeout: float) -> None:
        """Return once the copy's resourceVersion is other than ``version``, or after ``timeout`` s."""


Reader = Callable[[str, str], "Obj | None"]


def _meta(obj: Obj, field: str) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get(field) or {})


def snapshot(deployment: Obj) -> WorkloadSnapshot:
    """The parts of a Deployment (as server JSON) that the workflow reasons about."""
    spec = deployment.get("spec") or {}
    template = user_template(spec.get("template") or {})
    return WorkloadSnapshot(
        template=template,
        template_hash=template_hash(template),
        images=images(template),
        replicas=int(spec.get("replicas", 1)),
        resource_version=str(deployment["metadata"]["resourceVersion"]),
        uid=str(deployment["metadata"].get("uid") or ""),
        generation=int(deployment["metadata"].get("generation") or 0),
    )


def _known_ops(deployment: Obj, value: str) -> list[Obj]:
    """JSON patch ops that stamp KNOWN_ANNOTATION = ``value`` and keep every other annotation."""
    annotations = {**_meta(deployment, "annotations"), KNOWN_ANNOTATION: value}
    return [{"op": "add", "path": "/metadata/annotations", "value": annotations}]


def pod_problem(pods: list[Obj]) -> str | None:
    """Name the most telling reason why some of ``pods`` are not Ready, if any shows one.

    A container stuck waiting (CrashLoopBackOff, ImagePullBackOff, ...) beats a merely
    not-ready container, which beats an unscheduled pod: the first is what a user must fix.
    """
    found: list[tuple[int, str]] = []
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        name, status = pod["metadata"]["name"], pod.get("status") or {}
        statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for cs in statuses:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason:
                rank = 0 if reason in WAITING_FAILURES else 1
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                found.append((rank, f"pod {name}: container {cs.get('name')} is {reason}{detail}"))
            elif not cs.get("ready"):
                found.append((2, f"pod {name}: container {cs.get('name')} is not ready"))
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                found.append((3, f"pod {name} is not scheduled: {cond.get('message') or cond.get('reason')}"))
        if not statuses and status.get("phase") == "Pending":
            found.append((4, f"pod {name} is Pending"))
    return min(found)[1] if found else None


class KubeActivities:
    """Kubernetes activities around one shared ``ApiClient`` (built once, in the worker)."""

    def __init__(self, api: ApiClient, *, watch_seconds: int = 10, heartbeat_every: float = 0.5,
                 cache: DeploymentCache | None = None, set_cache: DeploymentCache | None = None) -> None:
        """Bind the activities to ``api``.

        ``cache``, ``set_cache``: the worker's informers of the jobs' Deployments and of their
        canary ReplicaSets; the waits read their copies instead of the API server.
        """
        self._apps = client.AppsV1Api(api)
        self._core = client.CoreV1Api(api)
        self._watch_seconds = watch_seconds
        self._heartbeat_every = heartbeat_every
        self._cache = cache
        self._set_cache = set_cache

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, bound to this client: what the worker registers."""
        return [self.inspect_workload, self.attach_workload, self.label_workload, self.detach_workload,
                self.prepare_canary,
                self.scale_canary, self.wait_canary_ready, self.scale_stable, self.hold_stable,
                self.prepare_stable, self.promote_stable, self.pause_stable, self.wait_stable_rolled_out,
                self.write_template, self.set_image, self.watch_workload,
                self.shift_replicas, self.read_sides, self.promote_held, self.grow_stable]

    def wait_service_endpoints(self, namespace: str, service: str, ready: int) -> None:
        """Block (heartbeating) until Service ``service`` has ``ready`` Ready endpoints.

        Pods count as available in their ReplicaSet's status before the endpoints controller
        lists them; a router sends traffic to endpoints. A Service that does not exist has none,
        and its absence is the router's to report: nothing is waited for then. The activity's
        own timeout (the progress deadline) bounds the wait.
        """
        discovery = client.DiscoveryV1Api(self._apps.api_client)
        while True:
            with kube_errors(f"read the endpoints of Service {namespace}/{service}"):
                if self._core_service_missing(namespace, service):
                    return
                slices = discovery.list_namespaced_endpoint_slice(
                    namespace, label_selector=f"kubernetes.io/service-name={service}",
                    _request_timeout=REQUEST_TIMEOUT).items
            found = len({address for piece in slices for endpoint in piece.endpoints or []
                         if endpoint.conditions is not None and endpoint.conditions.ready
                         for address in endpoint.addresses or []})
            if found >= ready:
                return
            heartbeat(f"Service {service}: {found} of {ready} endpoints Ready")
            time.sleep(self._heartbeat_every / 2)

    def _core_service_missing(self, namespace: str, service: str) -> bool:
        return read_or_none(self._core.read_namespaced_service, "Service", namespace, service) is None

    # -- raw API calls: server JSON in, server JSON out ---------------------------------------

    @staticmethod
    def _json(response: Any) -> Obj:
        data: Obj = json.loads(response.data)
        return data

    def _read(self, namespace: str, name: str) -> Obj | None:
        """GET a Deployment; None when it does not exist."""
        return read_or_none(self._apps.read_namespaced_deployment, "Deployment", namespace, name)

    def _workload(self, req: WorkloadRequest) -> Obj:
        """GET the user's Deployment, or fail for good: there is nothing to deliver to."""
        deployment = self._read(req.namespace, req.name)
        if deployment is None:
            raise ApplicationError(
                f"Deployment {req.namespace}/{req.name} not found", type=errors.WORKLOAD_NOT_FOUND,
                non_retryable=True)
        return deployment

    def _patch(self, namespace: str, name: str, body: Any, content_type: str, **kwargs: Any) -> Obj:
        with kube_errors(f"patch Deployment {namespace}/{name}"):
            return self._json(self._apps.patch_namespaced_deployment(
                name, namespace, body, field_manager=FIELD_MANAGER, _content_type=content_type,
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs))

    def _pods(self, namespace: str, selector: str) -> list[Obj]:
        with kube_errors(f"list pods {selector} in {namespace}"):
            items: list[Obj] = self._json(self._core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT))["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    @staticmethod
    def _check_owner(deployment: Obj, job: str, *, what: str) -> None:
        owner = _meta(deployment, "annotations").get(JOB_KEY)
        if owner is not None and owner != job:
            meta = deployment["metadata"]
            raise ApplicationError(
                f"{what} {meta['namespace']}/{meta['name']} belongs to canary job {owner!r}, not {job!r}",
                type=errors.OWNED_BY_OTHER_JOB, non_retryable=True)

    # -- taking over and giving back -----------------------------------------------------------

    @activity.defn(name=port.INSPECT_WORKLOAD.name)
    def inspect_workload(self, req: WorkloadRequest) -> WorkloadSnapshot:
        """Report the Deployment's template, hash, images and replicas."""
        return snapshot(self._workload(req))

    @activity.defn(name=port.ATTACH_WORKLOAD.name)
    def attach_workload(self, req: AttachRequest) -> WorkloadSnapshot:
        """Mark the Deployment as this job's and pause it, so template edits wait for the job.

        The patch carries the resourceVersion that was read, so no other job can take the
        Deployment between the ownership check and the write. The controller's own status
        writes also move resourceVersion on, so a conflict is read again here a few times
        before it is left to the activity's retry policy.
        """
        for attempt in range(CONFLICT_ATTEMPTS):
            deployment = self._workload(req)
            self._check_owner(deployment, req.job, what="Deployment")
            if (_meta(deployment, "annotations").get(JOB_KEY) == req.job and deployment["spec"].get("paused")
                    and _meta(deployment, "labels").get(JOB_KEY) == req.job):
                return snapshot(deployment)
            unfinished = _rollout_unfinished(deployment)
            if unfinished:
                # Paused now, the old pods would keep serving beside the new ones under a job that
                # believes the new template is stable. Retried until the rollout ends.
                raise ApplicationError(f"{req.namespace}/{req.name} is rolling out ({unfinished}); the job takes "
                                       "it over when the rollout completes", type=errors.ROLLOUT_IN_PROGRESS,
                                       category=BENIGN)
            current = snapshot(deployment)
            body = {"metadata": {"annotations": {JOB_KEY: req.job,
                                                 KNOWN_ANNOTATION: known_value(current.template_hash,
                                                                               current.replicas)},
                                 "labels": {JOB_KEY: req.job},
                                 "resourceVersion": deployment["metadata"]["resourceVersion"]},
                    "spec": {"paused": True}}
            try:
                return snapshot(self._patch(req.namespace, req.name, body, MERGE))
            except ApplicationError as error:
                if error.type != errors.KUBERNETES_CONFLICT or attempt == CONFLICT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    @activity.defn(name=port.LABEL_WORKLOAD.name)
    def label_workload(self, req: LabelRequest) -> None:
        """Label a Deployment the job holds, stamping ``known_hash`` as what the job knows.

        For jobs attached before the shared watch existed. The stamp carries the job's own
        belief, never what the Deployment now holds: an edit made before the label lands then
        differs from the stamp, and the shared watch reports it.
        """
        for attempt in range(CONFLICT_ATTEMPTS):
            deployment = self._workload(req)
            self._check_owner(deployment, req.job, what="Deployment")
            replicas = int(deployment["spec"].get("replicas", 1))
            ops: list[Obj] = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": deployment["metadata"]["resourceVersion"]},
                {"op": "add", "path": "/metadata/labels", "value": {**_meta(deployment, "labels"), JOB_KEY: req.job}},
                *_known_ops(deployment, known_value(req.known_hash, replicas)),
            ]
            try:
                self._patch(req.namespace, req.name, ops, JSON_PATCH)
                return
            except ApplicationError as error:
                if error.type not in (errors.KUBERNETES_CONFLICT, errors.KUBERNETES_INVALID) or (
                        attempt == CONFLICT_ATTEMPTS - 1):
                    raise

    @activity.defn(name=port.DETACH_WORKLOAD.name)
    def detach_workload(self, req: DetachRequest) -> None:
        """Give the Deployment back: template, replicas, rolling out by itself; canary removed.

        The Deployment is restored before the canary is deleted, so the stable side is
        scaling up before canary pods go. A Deployment that is already gone is fine.
        """
        deployment = self._read(req.namespace, req.name)
        if deployment is not None:
            self._check_owner(deployment, req.job, what="Deployment")
            try:
                if req.template is not None and template_hash(req.template) != snapshot(deployment).template_hash:
                    ops = [{"op": "replace", "path": "/spec/template", "value": user_template(req.template)}]
                    self._patch(req.namespace, req.name, ops, JSON_PATCH)
                body = {"metadata": {"annotations": {JOB_KEY: None, KNOWN_ANNOTATION: None},
                                     "labels": {JOB_KEY: None}},
                        "spec": {"replicas": req.replicas, "paused": False}}
                self._patch(req.namespace, req.name, body, MERGE)
            except ApplicationError as error:
                if error.type != errors.WORKLOAD_NOT_FOUND:
                    raise  # gone while we worked on it is as good as given back
        self._delete_canary(req)

    def _delete_canary(self, req: WorkloadRequest) -> None:
        discard_orphans(self, req.namespace, req.name, req.job)
        canary_set.delete_all(self, req.namespace, req.job)
        self._delete_canary_deployment(req)

    def _delete_canary_deployment(self, req: WorkloadRequest) -> None:
        """Delete the job's canary Deployment (its pods with it); one of another owner is left alone."""
        name = canary_name(req.name)
        canary = self._read(req.namespace, name)
        if canary is None or _meta(canary, "labels").get(JOB_KEY) != req.job:
            return  # gone already, or not ours to delete
        with kube_errors(f"delete Deployment {req.namespace}/{name}"):
            try:
                self._apps.delete_namespaced_deployment(
                    name, req.namespace, body=client.V1DeleteOptions(
                        preconditions=client.V1Preconditions(uid=canary["metadata"]["uid"]),
                        propagation_policy="Background"),
                    _request_timeout=REQUEST_TIMEOUT)
            except ApiException as error:
                if not not_found(error):
                    raise

    # -- the canary side -----------------------------------------------------------------------

    @activity.defn(name=port.PREPARE_CANARY.name)
    def prepare_canary(self, req: CanaryTemplateRequest) -> None:
        """Make ``<name>-canary`` run the template, at 0 replicas; nothing if it already does.

        A canary ReplicaSet an earlier release left (``activities/canary_set.py``) goes: one
        canary per job is what the other activities count on.
        """
        workload = self._workload(req)
        canary_set.delete_all(self, req.namespace, req.job)
        name = canary_name(req.name)
        canary = self._read(req.namespace, name)
        if canary is not None:
            if _meta(canary, "labels").get(JOB_KEY) != req.job:
                owner = _meta(canary, "labels").get(JOB_KEY)
                raise ApplicationError(
                    f"Deployment {req.namespace}/{name} exists and is not managed by canary job {req.job!r}"
                    + (f" (it belongs to {owner!r})" if owner else ""),
                    type=errors.OWNED_BY_OTHER_JOB, non_retryable=True)
            if _meta(canary, "annotations").get(HASH_ANNOTATION) == req.template_hash and not (
                    canary["spec"].get("paused")):
                return  # a retry, or a second call for the same version: keep its replicas
        spec, meta = workload["spec"], workload["metadata"]
        selector = canary_selector(spec["selector"])
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": req.namespace,
                "labels": {JOB_KEY: req.job, TRACK_LABEL: CANARY_TRACK},
                "annotations": {HASH_ANNOTATION: req.template_hash},
                # Not a controller reference: deleting the workload garbage-collects the canary.
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": meta["name"], "uid": meta["uid"]}],
            },
            "spec": {
                "replicas": 0,
                # A hand-over cut short may have left it paused (activities/adoption.py).
                "paused": False,
                "selector": selector,
                "minReadySeconds": spec.get("minReadySeconds", 0),
                "revisionHistoryLimit": 2,
                "template": canary_template(req.template, req.template_hash, req.job),
            },
        }
        self._patch(req.namespace, name, body, APPLY, force=True)

    @activity.defn(name=port.SCALE_CANARY.name)
    def scale_canary(self, req: ScaleRequest) -> None:
        """Set the canary Deployment's replicas (a missing canary is fine only at 0).

        The write tests the job's label in the same request: a Deployment of that name that
        another owner runs (the release failed on it) is never scaled, not even to zero. At
        zero, canary pods that a stopped hand-over left without an owner go too: they served
        until the stable side was back, which the rollback saw to first.
        """
        if req.replicas == 0:
            discard_orphans(self, req.namespace, req.name, req.job)
        if not canary_set.scale_all(self, req.namespace, req.job, req.replicas):
            self._scale_canary_deployment(req)

    def _scale_canary_deployment(self, req: ScaleRequest) -> None:
        name = canary_name(req.name)
        ops = [still_the_jobs(req.job), {"op": "add", "path": "/spec/replicas", "value": req.replicas}]
        with kube_errors(f"scale Deployment {req.namespace}/{name}"):
            try:
                release(self._apps.patch_namespaced_deployment(
                    name, req.namespace, ops, field_manager=FIELD_MANAGER,
                    _content_type=JSON_PATCH, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
            except ApiException as error:
                if not_found(error) and req.replicas == 0:
                    return
                found = self._read_canary(req) if error.status == 422 else None
                if found is not None and _meta(found, "labels").get(JOB_KEY) != req.job:
                    if req.replicas == 0:
                        return  # not the job's: there is nothing of the job's to scale down
                    raise ApplicationError(
                        f"Deployment {req.namespace}/{name} exists and is not managed by canary job {req.job!r}",
                        type=errors.OWNED_BY_OTHER_JOB, non_retryable=True) from None
                raise

    def _prepare_shift_canary(self, req: ShiftRequest) -> bool:
        """The release's canary, set up by its first step; True when it already has the step's size.

        A canary ReplicaSet (``activities/canary_set.py``), created at the size the step gives
        it; the canary Deployment for a workload whose selector would take that ReplicaSet.
        """
        assert req.prepare is not None
        prepare = CanaryTemplateRequest(namespace=req.namespace, name=req.name, job=req.job,
                                        template=req.prepare, template_hash=req.template_hash)
        workload = self._workload(req)
        if not canary_set.usable(workload, req.job):
            self.prepare_canary(prepare)
            return False
        created = canary_set.prepare(self, prepare, workload, req.canary if req.grow else 0)
        return created and (req.grow or req.canary == 0)

    def _scale_shift_canary(self, req: ShiftRequest) -> None:
        """Scale the release's canary: its ReplicaSet, else its Deployment.

        A canary Deployment is what older code set up, and what a workload whose selector would
        take a ReplicaSet keeps.
        """
        name = canary_set.set_name(req.name, req.template_hash)
        if not canary_set.scale(self, req.namespace, name, req.job, req.canary):
            if req.canary == 0:
                discard_orphans(self, req.namespace, req.name, req.job)
            self._scale_canary_deployment(ScaleRequest(namespace=req.namespace, name=req.name, job=req.job,
                                                       replicas=req.canary))

    # -- a whole step, or the held promotion, in one attempt (activities/steps.py) -------------

    @activity.defn(name=port.SHIFT_REPLICAS.name)
    def shift_replicas(self, req: ShiftRequest) -> ShiftResult:
        """One replica-ratio shift: canary grown, Ready, stable shrunk (or stable, then canary, shrunk)."""
        return steps.shift_replicas(self, req)

    @activity.defn(name=port.READ_SIDES.name)
    def read_sides(self, req: WorkloadRequest) -> ShiftResult:
        """What each side is sized to now: what the job reports after a shift it cut short."""
        return steps.read_sides(self, req)

    @activity.defn(name=port.PROMOTE_HELD.name)
    def promote_held(self, req: HeldPromotionRequest) -> HoldStableResult:
        """The held promotion: Deployment emptied, new ReplicaSet grown and available, canary to zero."""
        return steps.promote_held(self, req)

    @activity.defn(name=port.GROW_STABLE.name)
    def grow_stable(self, req: GrowStableRequest) -> None:
        """Stable scaled to ``replicas`` and that many of its pods available (``dynamicStableScale``)."""
        steps.grow_stable(self, req)

    # -- waits: checked again on every change of the Deployment, until the activity's deadline ------

    def _wait_until(self, check: Callable[[Reader, bool], None], namespace: str, name: str,
                    kind: str = DEPLOYMENTS) -> None:
        """Run ``check`` until it passes, again after every change of Deployment (or ReplicaSet) ``name``.

        ``check(read, last)`` raises a retryable ApplicationError while the condition does not
        hold yet; ``last`` asks it to say in full what is missing (pod problems need a list of
        pods, so only the last "not yet" pays for one). With the worker's informer, ``read``
        answers from its copies and a change wakes this thread; without it, this thread reads
        and watches the API server itself. Either way it heartbeats at least every
        ``heartbeat_every`` seconds: that is how a cancellation arrives, and how a dead worker's
        wait moves to another worker. Shortly before the activity's own deadline the last "not
        yet" is raised, so the message a user reads says what was missing, and no attempt
        fails as a clock.
        """
        deadline = _activity_deadline()
        cache = self._cache if kind == DEPLOYMENTS else self._set_cache
        direct: Reader = self._read if kind == DEPLOYMENTS else self._read_set
        cached = cache is not None and cache.synced.is_set()

        def read_cached(namespace: str, name: str) -> Obj | None:
            # The informer's copy; the API server's answer when it has none (not yet labelled, say).
            assert cache is not None
            return cache.get(namespace, name) or direct(namespace, name)

        read: Reader = read_cached if cached else direct
        while True:
            # What the wait below waits to see change: the informer's copy (none yet: until one
            # arrives, rather than reading the API server in a loop meanwhile), else the object.
            version = _resource_version(cache.get(namespace, name) if cached and cache is not None
                                        else read(namespace, name))
            last = time.monotonic() >= deadline
            try:
                check(read, last)
                return
            except ApplicationError as error:
                if error.type not in WAIT_TYPES or last:
                    raise
                heartbeat(error.message)
            if cached:
                assert cache is not None
                cache.wait_change(namespace, name, version,
                                  min(self._heartbeat_every * 2, max(0.0, deadline - time.monotonic())))
            else:
                self._next_change(namespace, name, version,
                                  min(self._heartbeat_every * 4, deadline - time.monotonic()), kind)

    def _cached_workload(self, req: WorkloadRequest) -> Obj:
        """The informer's copy of the user's Deployment (possibly a little old); else a GET."""
        cached = self._cache.get(req.namespace, req.name) if self._cache is not None else None
        return cached if cached is not None else self._workload(req)

    def _read_set(self, namespace: str, name: str) -> Obj | None:
        return canary_set.read_set(self, namespace, name)

    def _next_change(self, namespace: str, name: str, version: str | None, timeout: float,
                     kind: str = DEPLOYMENTS) -> None:
        """Block until ``name`` (of ``kind``) changes after ``version`` (or is created), at most ``timeout`` s."""
        if timeout <= 0:
            return
        if version is None:  # nothing to watch from: the object does not exist yet
            time.sleep(min(timeout, self._heartbeat_every))
            return
        stream = watch.Watch()
        lister = (self._apps.list_namespaced_deployment if kind == DEPLOYMENTS
                  else self._apps.list_namespaced_replica_set)
        with kube_errors(f"watch {kind} {namespace}/{name}"):
            try:
                for _event in stream.stream(
                        lister, namespace, field_selector=f"metadata.name={name}",
                        resource_version=version, timeout_seconds=max(1, int(timeout)), deserialize=False,
                        _request_timeout=(REQUEST_TIMEOUT, timeout + REQUEST_TIMEOUT)):
                    return  # any event (a change, a bookmark, an expired version): check again
            except ApiException as error:
                if error.status != 410:  # 410 Gone: the version is too old; reading again is the answer
                    raise
            finally:
                stream.stop()

    @activity.defn(name=port.WAIT_CANARY_READY.name)
    def wait_canary_ready(self, req: ReadyRequest) -> None:
        """Return once ``replicas`` canary pods of the template are Ready, watching the canary Deployment.

        Runs until the activity's deadline (the workflow gives it the progress deadline), then
        raises CanaryNotReady saying what is missing; see :meth:`_wait_until`. A canary
        ReplicaSet (``activities/canary_set.py``) is watched instead when the release runs one.
        """
        name = canary_set.set_name(req.name, req.template_hash)
        known = self._set_cache.get(req.namespace, name) if self._set_cache is not None else None
        if canary_set.is_canary_set(known or canary_set.read_set(self, req.namespace, name), req.job):
            self._wait_until(lambda read, last: self._check_set_ready(req, name, read, last), req.namespace, name,
                             REPLICA_SETS)
            return
        self._wait_until(lambda read, last: self._check_canary_ready(req, read, last), req.namespace,
                         canary_name(req.name))

    def _check_canary_ready(self, req: ReadyRequest, read: Reader, last: bool) -> None:
        name = canary_name(req.name)
        canary = read(req.namespace, name)
        if canary is None:
            if req.replicas == 0:
                return
            raise ApplicationError(f"canary Deployment {req.namespace}/{name} does not exist",
                                   type=errors.CANARY_NOT_READY, category=BENIGN)
        meta, spec, status = canary["metadata"], canary["spec"], canary.get("status") or {}
        running_hash = _meta(canary, "annotations").get(HASH_ANNOTATION)
        observed = int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
        total, updated = int(status.get("replicas", 0)), int(status.get("updatedReplicas", 0))
        ready, available = int(status.get("readyReplicas", 0)), int(status.get("availableReplicas", 0))
        if req.replicas == 0:
            if observed and spec.get("replicas") == 0 and total == 0:
                return
            problem = f"{total} canary pods left, waiting for none"
        elif running_hash != req.template_hash:
            problem = f"the canary runs template {running_hash}, not {req.template_hash}"
        elif observed and updated >= req.replicas and available >= req.replicas and total == updated:
            return
        else:
            problem = (f"{min(ready, updated)} of {req.replicas} canary pods of template {req.template_hash} "
                       f"ready ({updated} updated, {total} in all)")
            if last:
                pods = [p for p in self._pods(req.namespace, selector_string(spec["selector"]))
                        if _meta(p, "annotations").get(HASH_ANNOTATION) == req.template_hash]
                reason = pod_problem(pods)
                if reason:
                    problem += f"; {reason}"
        raise ApplicationError(f"{req.namespace}/{name}: {problem}", type=errors.CANARY_NOT_READY, category=BENIGN)

    def _check_set_ready(self, req: ReadyRequest, name: str, read: Reader, last: bool) -> None:
        rs = read(req.namespace, name)
        problem = canary_set.ready_problem(rs if canary_set.is_canary_set(rs, req.job) else None,
                                           req.replicas, req.template_hash)
        if problem is None:
            return
        if last and rs is not None:
            reason = pod_problem(self._pods(req.namespace, selector_string(rs["spec"]["selector"])))
            if reason:
                problem += f"; {reason}"
        raise ApplicationError(f"{req.namespace}/{name}: {problem}", type=errors.CANARY_NOT_READY, category=BENIGN)

    # -- the stable side (the user's Deployment) -----------------------------------------------

    @activity.defn(name=port.SCALE_STABLE.name)
    def scale_stable(self, req: ScaleRequest) -> None:
        """Set the user's Deployment's replicas; paused, it scales the pods it already runs."""
        self._scale_stable(req)

    def _scale_stable(self, req: ScaleRequest) -> int:
        """Scale the user's Deployment (stamping what the job knows); its generation after the write."""
        return _generation(self._patch(req.namespace, req.name, _stamped(
            {"spec": {"replicas": req.replicas}}, req.known_hash, req.replicas), MERGE))

    def _read_canary(self, req: WorkloadRequest) -> Obj | None:
        """GET the canary Deployment; None when it does not exist."""
        return self._read(req.namespace, canary_name(req.name))

    @activity.defn(name=port.PROMOTE_STABLE.name)
    def promote_stable(self, req: PromoteRequest) -> None:
        """Unpause the user's Deployment at ``replicas``: it rolls its new template out itself."""
        self._patch(req.namespace, req.name, _stamped({"spec": {"replicas": req.replicas, "paused": False}},
                                                      req.known_hash, req.replicas), MERGE)

    @activity.defn(name=port.PAUSE_STABLE.name)
    def pause_stable(self, req: WorkloadRequest) -> None:
        """Pause the user's Deployment again, so the next edit waits for the job."""
        self._patch(req.namespace, req.name, {"spec": {"paused": True}}, MERGE)

    @activity.defn(name=port.HOLD_STABLE.name)
    def hold_stable(self, req: HoldStableRequest) -> HoldStableResult:
        """Hold the Deployment paused on ``template`` at ``replicas`` pods.

        Paused, the Deployment scales the one ReplicaSet that has pods (or, when none has,
        the one of its template), so this moves replicas without ever rolling a template out.
        A template of the user's found in its place is set aside and returned: it becomes the
        next release instead of riding along with this one.
        """
        displaced, written = self._hold(req, req.template, req.template_hash, req.replicas)
        return HoldStableResult(displaced=displaced, generation=_generation(written))

    @activity.defn(name=port.PREPARE_STABLE.name)
    def prepare_stable(self, req: StableRevisionRequest) -> HoldStableResult:
        """Empty the paused Deployment and make sure it has a ReplicaSet for ``template``.

        This is how a version reaches the stable pods without a rollout that a concurrent edit
        could join: at zero replicas the Deployment is unpaused just long enough for its
        controller to create the new ReplicaSet (with no pods), then paused again; scaling the
        paused Deployment up afterwards grows exactly that ReplicaSet. Canary pods carry the
        traffic meanwhile. Retried, it finds the ReplicaSet there and only re-checks the hold.
        """
        displaced: WorkloadSnapshot | None = None
        for _ in range(CONFLICT_ATTEMPTS):
            moved, written = self._hold(req, req.template, req.template_hash, 0)
            displaced = moved or displaced
            deployment, rss = self._wait_observed(req, written, lambda d, rss: all(
                int((rs.get("spec") or {}).get("replicas", 0)) == 0 for rs in rss))
            if self._replica_set_for(rss, req.template_hash) is not None:
                return HoldStableResult(displaced=displaced, generation=_generation(deployment))
            if snapshot(deployment).template_hash != req.template_hash or deployment["spec"].get("replicas"):
                continue  # written over in between: hold it again
            try:
                unpaused = self._patch(req.namespace, req.name, [
                    {"op": "test", "path": "/metadata/resourceVersion",
                     "value": deployment["metadata"]["resourceVersion"]},
                    {"op": "add", "path": "/spec/paused", "value": False}], JSON_PATCH)
            except ApplicationError as error:
                if error.type in (errors.KUBERNETES_CONFLICT, errors.KUBERNETES_INVALID):
                    continue
                raise
            try:
                self._wait_observed(req, unpaused, lambda d, rss: self._replica_set_for(
                    rss, req.template_hash) is not None)
            finally:
                self._patch(req.namespace, req.name, {"spec": {"paused": True}}, MERGE)
            # Next round: an edit that landed while unpaused (at zero pods) is set aside.
        raise ApplicationError(f"{req.namespace}/{req.name}: the Deployment kept changing while its "
                               "ReplicaSet was prepared", type=errors.KUBERNETES_CONFLICT)

    def _hold(self, req: WorkloadRequest, template: Obj, hash_: str,
              replicas: int) -> tuple[WorkloadSnapshot | None, Obj]:
        """Patch template, replicas and paused in one write guarded by resourceVersion.

        The first try starts from the informer's copy: the guard turns a stale copy into a
        conflict, and the next tries read the API server. "Already so" is only believed from
        the API server, since a stale copy could say it of a Deployment changed since.
        """
        fresh = self._cache is None
        for attempt in range(CONFLICT_ATTEMPTS + 1):
            deployment = self._workload(req) if fresh else self._cached_workload(req)
            self._check_owner(deployment, req.job, what="Deployment")
            current = snapshot(deployment)
            spec = deployment["spec"]
            if current.template_hash == hash_ and spec.get("replicas") == replicas and spec.get("paused"):
                if not fresh:
                    fresh = True
                    continue
                return None, deployment
            ops: list[Obj] = [{"op": "test", "path": "/metadata/resourceVersion",
                               "value": deployment["metadata"]["resourceVersion"]}]
            displaced = None
            if current.template_hash != hash_:
                displaced = current
                ops.append({"op": "replace", "path": "/spec/template", "value": user_template(template)})
            ops += [{"op": "add", "path": "/spec/replicas", "value": replicas},
                    {"op": "add", "path": "/spec/paused", "value": True},
                    *_known_ops(deployment, known_value(hash_, replicas))]
            try:
                return displaced, self._patch(req.namespace, req.name, ops, JSON_PATCH)
            except ApplicationError as error:
                # A failed "test" is the API server's 422; a moved resourceVersion, a 409.
                if error.type not in (errors.KUBERNETES_CONFLICT, errors.KUBERNETES_INVALID) or (
                        attempt == CONFLICT_ATTEMPTS):
                    raise
                fresh = True
        raise AssertionError("unreachable")

    def _replica_sets(self, req: WorkloadRequest, deployment: Obj) -> list[Obj]:
        """The ReplicaSets the Deployment controls."""
        uid = deployment["metadata"]["uid"]
        selector = selector_string(deployment["spec"]["selector"])
        with kube_errors(f"list ReplicaSets of {req.namespace}/{req.name}"):
            items: list[Obj] = self._json(self._apps.list_namespaced_replica_set(
                req.namespace, label_selector=selector, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT))["items"]
        return [rs for rs in items
                if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or [])]

    @staticmethod
    def _replica_set_for(rss: list[Obj], hash_: str) -> Obj | None:
        for rs in rss:
            template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
            ((template.get("metadata") or {}).get("labels") or {}).pop("pod-template-hash", None)
            if template_hash(template) == hash_:
                return rs
        return None

    def _wait_observed(self, req: WorkloadRequest, written: Obj,
                       done: Callable[[Obj, list[Obj]], bool]) -> tuple[Obj, list[Obj]]:
        """Wait (briefly) until the controller has seen ``written`` and ``done`` holds.

        Short and inside the activity: the controller answers within milliseconds; if it does
        not, the activity fails retryably and Temporal tries again.
        """
        generation = int(written["metadata"].get("generation", 0))
        deadline = time.monotonic() + STABLE_SETTLE_SECONDS
        cache = self._cache if self._cache is not None and self._cache.synced.is_set() else None
        deployment = written
        while True:
            # The controller records observedGeneration after it has scaled or created the
            # ReplicaSets for that generation: only then are they worth a list.
            if int((deployment.get("status") or {}).get("observedGeneration", 0)) >= generation:
                rss = self._replica_sets(req, deployment)
                if done(deployment, rss):
                    return deployment, rss
            if time.monotonic() > deadline:
                raise ApplicationError(
                    f"{req.namespace}/{req.name}: the Deployment controller has not acted on the change "
                    f"within {STABLE_SETTLE_SECONDS:.0f}s", type=errors.STABLE_NOT_ROLLED_OUT, category=BENIGN)
            heartbeat()
            if cache is None or cache.get(req.namespace, req.name) is None:
                time.sleep(0.1)
                deployment = self._workload(req)
                continue
            # Woken by the informer when its copy changes (its status, mostly); at the latest
            # after a short while, since the ReplicaSets' state is not in the copy.
            cache.wait_change(req.namespace, req.name, _resource_version(deployment),
                              min(0.5, max(0.0, deadline - time.monotonic())))
            deployment = self._cached_workload(req)

    @activity.defn(name=port.WAIT_STABLE_ROLLED_OUT.name)
    def wait_stable_rolled_out(self, req: RolloutRequest) -> None:
        """Return once every pod of the user's Deployment runs the template, watching the Deployment.

        Raises StableNotRolledOut at the activity's deadline; see :meth:`_wait_until`.
        """
        self._wait_until(lambda read, last: self._check_rolled_out(req, read, last), req.namespace, req.name)

    def _check_rolled_out(self, req: RolloutRequest, read: Reader, last: bool) -> None:
        deployment = read(req.namespace, req.name)
        if deployment is None:
            deployment = self._workload(req)  # raises WorkloadNotFound
        if req.held:
            self._check_held(req, deployment, last)
            return
        meta, spec, status = deployment["metadata"], deployment["spec"], deployment.get("status") or {}
        current = snapshot(deployment).template_hash
        observed = int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
        total, updated = int(status.get("replicas", 0)), int(status.get("updatedReplicas", 0))
        available = int(status.get("availableReplicas", 0))
        if (observed and current == req.template_hash and spec.get("replicas") == req.replicas
                and updated == available == total == req.replicas):
            return
        if current != req.template_hash:
            problem = f"the Deployment's template is {current}, not {req.template_hash}"
        else:
            problem = (f"{updated} of {req.replicas} pods updated, {available} available, {total} in all"
                       + ("; the Deployment is paused" if spec.get("paused") else ""))
            for cond in status.get("conditions") or []:
                if cond.get("reason") == "ProgressDeadlineExceeded":
                    problem += f"; {cond.get('message')}"
            stable_pods = f"{selector_string(spec['selector'])},!{TRACK_LABEL}"
            reason = pod_problem(self._pods(req.namespace, stable_pods)) if last else None
            if reason:
                problem += f"; {reason}"
        raise ApplicationError(f"{req.namespace}/{req.name}: {problem}", type=errors.STABLE_NOT_ROLLED_OUT,
                               category=BENIGN)

    def _check_held(self, req: RolloutRequest, deployment: Obj, last: bool) -> None:
        """Pass once the ReplicaSet of ``template_hash`` has every pod available and no other has pods.

        Judged by ReplicaSet, not by the Deployment's template: held paused, the Deployment may
        already carry the user's next edit, which must not count as (or block) this version.
        The Deployment's own counts (all its pods, all available) must agree first: until they
        do the ReplicaSets are not worth a list.
        """
        status = deployment.get("status") or {}
        pods_now, available_now = int(status.get("replicas", 0)), int(status.get("availableReplicas", 0))
        if not last and (pods_now != req.replicas or available_now < req.replicas):
            raise ApplicationError(f"{req.namespace}/{req.name}: {available_now} of {req.replicas} pods available, "
                                   f"{pods_now} in all", type=errors.STABLE_NOT_ROLLED_OUT, category=BENIGN)
        rss = self._replica_sets(req, deployment)
        ours = self._replica_set_for(rss, req.template_hash)
        others = sum(int((rs.get("status") or {}).get("replicas", 0)) for rs in rss if rs is not ours)
        if ours is not None:
            spec, status = ours.get("spec") or {}, ours.get("status") or {}
            available = int(status.get("availableReplicas", 0))
            # Counts of an older generation (a scale down not yet seen, say) say nothing of this one.
            observed = int(status.get("observedGeneration", 0)) >= int(ours["metadata"].get("generation", 0))
            if (observed and int(spec.get("replicas", 0)) == req.replicas == int(status.get("replicas", 0))
                    and available >= req.replicas and others == 0):
                return
            problem = f"{available} of {req.replicas} pods of revision {req.template_hash} available"
            if others:
                problem += f", {others} pods of other revisions left"
            pods = [p for p in self._pods(req.namespace, selector_string(deployment["spec"]["selector"]))
                    if any(ref.get("uid") == ours["metadata"]["uid"]
                           for ref in p["metadata"].get("ownerReferences") or [])] if last else []
            reason = pod_problem(pods)
            if reason:
                problem += f"; {reason}"
        else:
            problem = f"the Deployment has no ReplicaSet for revision {req.template_hash}"
        raise ApplicationError(f"{req.namespace}/{req.name}: {problem}", type=errors.STABLE_NOT_ROLLED_OUT,
                               category=BENIGN)

    @activity.defn(name=port.WRITE_TEMPLATE.name)
    def write_template(self, req: WriteTemplateRequest) -> WorkloadSnapshot:
        """Replace the Deployment's pod template wholesale (a merge would keep stale keys)."""
        return self._write_own_template(req, lambda _: user_template(req.template))

    def _write_own_template(self, req: WorkloadRequest, change: Callable[[Obj], Obj]) -> WorkloadSnapshot:
        """Write ``change(current template)`` and stamp it as known, in one guarded write."""
        for attempt in range(CONFLICT_ATTEMPTS):
            deployment = self._workload(req)
            template = change(deployment["spec"]["template"])
            replicas = int(deployment["spec"].get("replicas", 1))
            ops: list[Obj] = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": deployment["metadata"]["resourceVersion"]},
                {"op": "replace", "path": "/spec/template", "value": template},
                *_known_ops(deployment, known_value(template_hash(template), replicas)),
            ]
            try:
                return snapshot(self._patch(req.namespace, req.name, ops, JSON_PATCH))
            except ApplicationError as error:
                if error.type not in (errors.KUBERNETES_CONFLICT, errors.KUBERNETES_INVALID) or (
                        attempt == CONFLICT_ATTEMPTS - 1):
                    raise
        raise AssertionError("unreachable")

    @activity.defn(name=port.SET_IMAGE.name)
    def set_image(self, req: SetImageRequest) -> WorkloadSnapshot:
        """Set one container's image, or every container's, as ``kubectl set image`` does."""
        try:
            validate_image(req.image)
        except ValueError as error:
            raise ApplicationError(str(error), type=errors.INVALID_REQUEST, non_retryable=True) from error
        deployment = self._workload(req)
        names = list(images(deployment["spec"]["template"]))
        if req.container is not None and req.container not in names:
            raise ApplicationError(
                f"Deployment {req.namespace}/{req.name} has no container {req.container!r}; "
                f"its containers are: {', '.join(names)}", type=errors.INVALID_REQUEST, non_retryable=True)
        targets = set(names if req.container is None else [req.container])

        def with_image(template: Obj) -> Obj:
            # Only the named containers' images change, as `kubectl set image` does.
            result = user_template(template)
            for container in (result.get("spec") or {}).get("containers") or []:
                if container.get("name") in targets:
                    container["image"] = req.image
            return result

        return self._write_own_template(req, with_image)

    # -- watching ------------------------------------------------------------------------------

    @activity.defn(name=port.WATCH_WORKLOAD.name)
    def watch_workload(self, req: WatchRequest) -> WorkloadChange:
        """Return as soon as the Deployment's template or replicas differ from what the job knows.

        The watch runs in a helper thread; this thread only waits for its answer and
        heartbeats every ``heartbeat_every`` seconds, so a cancellation (delivered through the
        heartbeat, raised into this thread) ends the activity within that time even while the
        watch connection is idle. On a retry the Deployment is listed again: comparing its
        current state is what counts, and replaying old events could report a stale version.
        """
        progress: dict[str, str] = {"resourceVersion": ""}
        stop = threading.Event()
        result: Future[WorkloadChange] = Future()

        def run() -> None:
            try:
                result.set_result(self._watch_until_change(req, progress, stop))
            except BaseException as error:  # handed to the activity thread
                result.set_exception(error)

        threading.Thread(target=run, name=f"watch-{req.namespace}-{req.name}", daemon=True).start()
        try:
            while True:
                try:
                    return result.result(timeout=self._heartbeat_every)
                except FutureTimeout:
                    activity.heartbeat(progress["resourceVersion"])
        finally:
            stop.set()  # the helper exits at its next event or stream timeout

    def _watch_until_change(self, req: WatchRequest, progress: dict[str, str],
                            stop: threading.Event) -> WorkloadChange:
        while not stop.is_set():
            with kube_errors(f"watch Deployment {req.namespace}/{req.name}"):
                change = self._list_and_watch(req, progress, stop)
            if change is not None:
                return change
        raise ApplicationError("watch stopped", type=errors.KUBERNETES_UNAVAILABLE)

    def _list_and_watch(self, req: WatchRequest, progress: dict[str, str],
                        stop: threading.Event) -> WorkloadChange | None:
        """List, compare, then follow watch requests; None means "list again" (410 Gone) or stop."""
        field_selector = f"metadata.name={req.name}"
        listed = self._json(self._apps.list_namespaced_deployment(
            req.namespace, field_selector=field_selector, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT))
        items = listed.get("items") or []
        change = self._compare(req, items[0] if items else None)
        if change is not None:
            return change
        progress["resourceVersion"] = str(listed["metadata"]["resourceVersion"])
        while not stop.is_set():
            try:
                for event in watch.Watch().stream(
                        self._apps.list_namespaced_deployment, req.namespace, field_selector=field_selector,
                        resource_version=progress["resourceVersion"], timeout_seconds=self._watch_seconds,
                        allow_watch_bookmarks=True, deserialize=False,
                        _request_timeout=(REQUEST_TIMEOUT, self._watch_seconds + REQUEST_TIMEOUT)):
                    if stop.is_set():
                        return None
                    change = self._on_event(req, event, progress)
                    if change is not None:
                        return change
            except ApiException as error:
                if error.status == 410:  # Gone: our resourceVersion is too old, so list again
                    return None
                raise
        return None

    def _on_event(self, req: WatchRequest, event: Obj, progress: dict[str, str]) -> WorkloadChange | None:
        """Remember where the watch is, and report the event if it changes what the job knows."""
        obj = event.get("object") or {}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            progress["resourceVersion"] = str(version)
        if event.get("type") == "DELETED":
            return None if req.known_missing else WorkloadChange(kind="deleted")
        if event.get("type") in ("ADDED", "MODIFIED"):
            return self._compare(req, obj)
        return None  # BOOKMARK: only the resourceVersion moves on

    @staticmethod
    def _compare(req: WatchRequest, deployment: Obj | None) -> WorkloadChange | None:
        if deployment is None:
            return None if req.known_missing else WorkloadChange(kind="deleted")
        current = snapshot(deployment)
        if req.known_missing:
            return WorkloadChange(kind="created", snapshot=current)
        if current.template_hash != req.known_hash:
            return WorkloadChange(kind="template", snapshot=current)
        if req.known_replicas is not None and current.replicas != req.known_replicas:
            return WorkloadChange(kind="replicas", snapshot=current)
        return None


def _resource_version(deployment: Obj | None) -> str | None:
    return None if deployment is None else str(deployment["metadata"]["resourceVersion"])


def _stamped(body: Obj, known_hash: str | None, replicas: int) -> Obj:
    """A merge patch ``body`` that also stamps what the job knows (unless it said nothing)."""
    if known_hash is None:
        return body
    return {**body, "metadata": {"annotations": {KNOWN_ANNOTATION: known_value(known_hash, replicas)}}}


def _generation(deployment: Obj) -> int:
    return int((deployment.get("metadata") or {}).get("generation") or 0)


def _rollout_unfinished(deployment: dict[str, Any]) -> str | None:
    """Why pausing the Deployment now would freeze two versions side by side, or None.

    Pods of another template still running (a rollout under way) is the reason; a first rollout
    whose pods are all of the current template is not, since a paused Deployment keeps scaling
    that one ReplicaSet. A rollout stuck past its progress deadline does not count: waiting would
    never end, and a new release replaces what runs.
    """
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    if spec.get("paused"):
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return None
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    if (status.get("observedGeneration") or 0) < generation:
        return "the controller has not seen its latest spec yet"
    updated, total = status.get("updatedReplicas") or 0, status.get("replicas") or 0
    if total > updated:
        return f"{total - updated} pods of an older template still running, {updated} updated"
    return None


def _activity_deadline() -> float:
    """When (``time.monotonic()``) the running activity must give its answer, less a margin."""
    info = activity.info()
    now = datetime.now(UTC)
    ends = []
    if info.start_to_close_timeout:
        ends.append(info.started_time + info.start_to_close_timeout)
    if info.schedule_to_close_timeout:
        ends.append(info.scheduled_time + info.schedule_to_close_timeout)
    if not ends:
        return time.monotonic()
    return time.monotonic() + (min(ends) - now).total_seconds() - DEADLINE_MARGIN
