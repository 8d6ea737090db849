"""The blue-green Service activities: aim the active and preview Services at one version's pods.

A Service selector is a plain label map, and blue and green pods carry the same workload labels,
so the job narrows a Service to one version by adding that version's ReplicaSet
``pod-template-hash`` to the Service's own selector (what Argo Rollouts does with its own hash
label). Each version's ReplicaSet has its own hash, whichever Deployment runs it, so the switch
is exact and is one write: a JSON patch guarded by the resourceVersion it read.

The user's selector is recorded on the Service itself (annotation ``canary-delivery.dev/selector``)
in the same write that first narrows it, so a retried or restarted activity never mistakes a
narrowed selector for the user's, and ``restore_services`` can always give it back. A preview
Service the job creates carries the job label and an ownerReference to the Deployment, and is
deleted with the job; a user's preview Service is narrowed and restored like the active one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities import errors
from activities.errors import kube_errors, not_found
from activities.job_services import create_job_service
from activities.reads import HASH_LABEL, canary_name, read_or_none, version_replica_set
from activities.routers.base import config_error
from activities.templates import JOB_KEY, PREFIX
from workflows import port
from workflows.service_selection import BlueGreenServices, RestoreRequest, Selection, SelectRequest, Side

Obj = dict[str, Any]
FIELD_MANAGER = "canary-delivery"
REQUEST_TIMEOUT = 10.0
CONFLICT_ATTEMPTS = 5
JSON_PATCH = "application/json-patch+json"
# The user's own selector of a Service the job has narrowed, as JSON.
SELECTOR_ANNOTATION = PREFIX + "selector"
_PORT_KEYS = ("name", "port", "targetPort", "protocol", "appProtocol")


class BlueGreenActivities:
    """Blue-green activities around one shared ``ApiClient`` (built once, in the worker)."""

    def __init__(self, api: ApiClient) -> None:
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)

    def all(self) -> list[Callable[..., Any]]:
        """Every blue-green activity, bound to this client: what the worker registers."""
        return [self.check_blue_green, self.select_pods, self.restore_services]

    # -- the activities ------------------------------------------------------------------------

    @activity.defn(name=port.CHECK_BLUE_GREEN.name)
    def check_blue_green(self, req: BlueGreenServices) -> None:
        """Refuse Services that cannot carry a blue-green release, naming the field; writes nothing."""
        active = self._service(req.namespace, req.active_service)
        field = "blueGreen.activeService"
        if active is None:
            raise config_error(field, f"Service {req.namespace}/{req.active_service} not found; the active "
                               "Service (the one users hit) must exist before the job is applied")
        selector = _own_selector(active)
        if not selector:
            raise config_error(field, f"Service {req.namespace}/{req.active_service} has no selector; the job "
                               "switches it between versions by its selector")
        deployment = self._deployment(req.namespace, req.workload)
        if deployment is not None:
            labels = ((deployment["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
            if any(labels.get(key) != value for key, value in selector.items()):
                raise config_error(field, f"Service {req.namespace}/{req.active_service} (selector "
                                   f"{_labels(selector)}) does not select the pods of Deployment {req.workload}")
        if req.preview_service is not None:
            preview = self._service(req.namespace, req.preview_service)
            if preview is not None and not _ours(preview, req.job) and not _own_selector(preview):
                raise config_error("blueGreen.previewService", f"Service {req.namespace}/{req.preview_service} "
                                   "has no selector; the job aims it at the new version by its selector")

    @activity.defn(name=port.SELECT_PODS.name)
    def select_pods(self, req: SelectRequest) -> Selection:
        """Aim the Service at the ReplicaSet of ``template_hash`` in the ``side`` Deployment, in one write.

        Only once that ReplicaSet has ``ready`` available pods; until then it says "not yet"
        (retryable) and the Service keeps selecting what it did.
        """
        field = "blueGreen.previewService" if req.service == req.preview_service else "blueGreen.activeService"
        pod_hash = self._pod_template_hash(req)
        for attempt in range(CONFLICT_ATTEMPTS):
            service = self._service(req.namespace, req.service)
            if service is None:
                if req.service != req.preview_service:
                    raise config_error(field, f"Service {req.namespace}/{req.service} not found")
                return self._create_preview(req, pod_hash)
            base = _own_selector(service)
            wanted = {**base, HASH_LABEL: pod_hash}
            if (service.get("spec") or {}).get("selector") == wanted and _recorded(service) is not None:
                return Selection(service=req.service, selector=wanted, pod_template_hash=pod_hash)
            annotations = {**_meta(service, "annotations"), SELECTOR_ANNOTATION: json.dumps(base, sort_keys=True)}
            ops: list[Obj] = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": service["metadata"]["resourceVersion"]},
                {"op": "replace", "path": "/spec/selector", "value": wanted},
                {"op": "add", "path": "/metadata/annotations", "value": annotations},
            ]
            try:
                written = self._patch(req.namespace, req.service, ops)
            except ApplicationError as error:
                if error.type not in (errors.KUBERNETES_CONFLICT, errors.KUBERNETES_INVALID) or (
                        attempt == CONFLICT_ATTEMPTS - 1):
                    raise
                continue
            return Selection(service=req.service, selector=dict(written["spec"].get("selector") or {}),
                             pod_template_hash=pod_hash)
        raise AssertionError("unreachable")

    @activity.defn(name=port.RESTORE_SERVICES.name)
    def restore_services(self, req: RestoreRequest) -> None:
        """Give every Service the job narrowed its own selector back; on delete, remove the job's preview."""
        names = [req.active_service] + ([req.preview_service] if req.preview_service else [])
        for name in names:
            service = self._service(req.namespace, name)
            if service is None:
                continue
            if name == req.preview_service and _ours(service, req.job) and req.remove_preview:
                self._delete(req.namespace, service)
                continue
            self._restore(req.namespace, name)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _json(response: Any) -> Obj:
        data: Obj = json.loads(response.data)
        return data

    def _service(self, namespace: str, name: str) -> Obj | None:
        return read_or_none(self._core.read_namespaced_service, "Service", namespace, name)

    def _deployment(self, namespace: str, name: str) -> Obj | None:
        return read_or_none(self._apps.read_namespaced_deployment, "Deployment", namespace, name)

    def _patch(self, namespace: str, name: str, ops: list[Obj]) -> Obj:
        with kube_errors(f"patch Service {namespace}/{name}"):
            return self._json(self._core.patch_namespaced_service(
                name, namespace, ops, field_manager=FIELD_MANAGER, _content_type=JSON_PATCH,
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT))

    def _delete(self, namespace: str, service: Obj) -> None:
        name = service["metadata"]["name"]
        with kube_errors(f"delete Service {namespace}/{name}"):
            try:
                self._core.delete_namespaced_service(
                    name, namespace, body=client.V1DeleteOptions(
                        preconditions=client.V1Preconditions(uid=service["metadata"]["uid"])),
                    _request_timeout=REQUEST_TIMEOUT)
            except ApiException as error:
                if not not_found(error):
                    raise

    def _restore(self, namespace: str, name: str) -> None:
        """The Service's own selector back, and the record of it gone, in one guarded write."""
        for attempt in range(CONFLICT_ATTEMPTS):
            service = self._service(namespace, name)
            if service is None:
                return
            recorded = _recorded(service)
            if recorded is None:
                return  # never narrowed, or given back already
            annotations = {k: v for k, v in _meta(service, "annotations").items() if k != SELECTOR_ANNOTATION}
            ops: list[Obj] = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": service["metadata"]["resourceVersion"]},
                {"op": "replace", "path": "/spec/selector", "value": recorded},
                {"op": "add", "path": "/metadata/annotations", "value": annotations},
            ]
            try:
                self._patch(namespace, name, ops)
                return
            except ApplicationError as error:
                if error.type not in (errors.KUBERNETES_CONFLICT, errors.KUBERNETES_INVALID) or (
                        attempt == CONFLICT_ATTEMPTS - 1):
                    raise
        raise AssertionError("unreachable")

    def _pod_template_hash(self, req: SelectRequest) -> str:
        """The ``pod-template-hash`` of the ReplicaSet that runs the version, once it has its pods."""
        name = req.workload if req.side is Side.STABLE else canary_name(req.workload)
        deployment = self._deployment(req.namespace, name)
        if deployment is None:
            if req.side is Side.STABLE:
                raise ApplicationError(f"Deployment {req.namespace}/{name} not found",
                                       type=errors.WORKLOAD_NOT_FOUND, non_retryable=True)
            raise _not_yet(f"canary Deployment {req.namespace}/{name} does not exist yet")
        found = version_replica_set(self._apps, req.namespace, deployment, req.template_hash)
        if found is None:
            raise _not_yet(f"Deployment {req.namespace}/{name} has no ReplicaSet for revision {req.template_hash} yet")
        rs, pod_hash = found
        available = int((rs.get("status") or {}).get("availableReplicas") or 0)
        if available < req.ready:
            raise _not_yet(f"{available} of {req.ready} pods of revision {req.template_hash} in "
                           f"Deployment {name} available; Service {req.service} is switched once they are")
        return pod_hash

    def _create_preview(self, req: SelectRequest, pod_hash: str) -> Selection:
        """A preview Service like the active one (ports, the user's selector) narrowed to the new version."""
        active = self._service(req.namespace, req.active_service)
        if active is None:
            raise config_error("blueGreen.activeService", f"Service {req.namespace}/{req.active_service} not found")
        workload = self._deployment(req.namespace, req.workload)
        if workload is None:
            raise ApplicationError(f"Deployment {req.namespace}/{req.workload} not found",
                                   type=errors.WORKLOAD_NOT_FOUND, non_retryable=True)
        base = _own_selector(active)
        selector = {**base, HASH_LABEL: pod_hash}
        ports = [{k: p[k] for k in _PORT_KEYS if k in p} for p in (active.get("spec") or {}).get("ports") or []]
        created = create_job_service(self._core, req.namespace, req.service, job=req.job, workload=workload,
                                     selector=selector, ports=ports,
                                     annotations={SELECTOR_ANNOTATION: json.dumps(base, sort_keys=True)})
        if not created:  # created meanwhile (a retried attempt): the next attempt aims it
            raise _not_yet(f"Service {req.namespace}/{req.service} was created meanwhile")
        return Selection(service=req.service, selector=selector, pod_template_hash=pod_hash)


def _meta(obj: Obj, field: str) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get(field) or {})


def _recorded(service: Obj) -> dict[str, str] | None:
    """The user's selector the job recorded when it first narrowed the Service (None: not narrowed)."""
    text = _meta(service, "annotations").get(SELECTOR_ANNOTATION)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None


def _own_selector(service: Obj) -> dict[str, str]:
    """The Service's selector as its owner wrote it: the record if the job narrowed it, else as it is."""
    recorded = _recorded(service)
    if recorded is not None:
        return recorded
    selector = dict((service.get("spec") or {}).get("selector") or {})
    # Only the job narrows by ReplicaSet hash: one found without its record (removed by hand) is not the user's.
    selector.pop(HASH_LABEL, None)
    return selector


def _ours(service: Obj, job: str) -> bool:
    return _meta(service, "labels").get(JOB_KEY) == job


def _labels(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _not_yet(message: str) -> ApplicationError:
    """A retryable "not yet": the controller or the pods have not caught up."""
    return ApplicationError(message, type=errors.STABLE_NOT_ROLLED_OUT, category=ApplicationErrorCategory.BENIGN)
