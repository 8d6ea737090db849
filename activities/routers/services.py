"""The stable and canary Services a router sends traffic to, created by the job when missing.

A Service selector is a plain label map: it can say "the canary track" but not "without the
canary track". So the canary Service selects the workload's labels plus
``canary-delivery.dev/track: canary`` (the canary Deployment's pods), and the stable Service
the workload's labels plus the ``pod-template-hash`` of the stable version's ReplicaSet (the
user's Deployment's pods of that version), as Argo Rollouts does. The workflow names the
stable version, so the stable Service moves only when a promotion's pods are up.

With Istio's ``destinationRule`` there are no such Services: the DestinationRule's two subsets
get the same labels instead (stable: ``pod-template-hash``; canary: the track label).

A Service the user made (no job label) is theirs: used as it is, never changed or deleted.
The ones the job makes carry the job label and an ownerReference to the Deployment (deleting
the Deployment removes them) and go away when the job is deleted.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities import errors
from activities.errors import kube_errors, not_found
from activities.job_services import create_job_service
from activities.reads import HASH_LABEL, read_or_none, version_replica_set
from activities.routers.base import FIELD_MANAGER, REQUEST_TIMEOUT, Obj, config_error
from activities.routers.istio import Subsets
from activities.templates import CANARY_TRACK, JOB_KEY, TRACK_LABEL
from workflows.routing import RouterRequest, ServicesRequest

_PORT_KEYS = ("name", "port", "targetPort", "protocol", "appProtocol")


class RouterServices:
    """Create, aim and remove the job's stable and canary Services."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)

    def ensure(self, req: ServicesRequest) -> None:
        """Create the missing Services; aim the job's stable Service (or stable subset) at ``stable_template_hash``."""
        deployment = self._deployment(req)
        labels = _workload_labels(deployment)
        pod_hash = self._pod_template_hash(req, deployment)
        if req.traffic.subsets is not None:
            # The rule's host selects the workload's pods; each subset narrows them to one side.
            Subsets(self._api, req.namespace, req.traffic.subsets).aim(
                {HASH_LABEL: pod_hash}, {TRACK_LABEL: CANARY_TRACK})
        stable = {**labels, HASH_LABEL: pod_hash}
        canary = {**labels, TRACK_LABEL: CANARY_TRACK}
        for field, name, selector in (("traffic.stableService", req.traffic.stable_service, stable),
                                      ("traffic.canaryService", req.traffic.canary_service, canary)):
            if name is None:
                continue  # subsets, not Services, stand for the two sides
            existing = self._read(req.namespace, name)
            if existing is None:
                self._create(req, deployment, field, name, selector)
            elif (existing["metadata"].get("labels") or {}).get(JOB_KEY) == req.job and (
                    existing["spec"].get("selector") != selector):
                ops = [{"op": "test", "path": "/metadata/resourceVersion",
                        "value": existing["metadata"]["resourceVersion"]},
                       {"op": "replace", "path": "/spec/selector", "value": selector}]
                with kube_errors(f"aim Service {req.namespace}/{name}"):
                    self._core.patch_namespaced_service(
                        name, req.namespace, ops, field_manager=FIELD_MANAGER,
                        _content_type="application/json-patch+json", _request_timeout=REQUEST_TIMEOUT)

    def remove(self, req: RouterRequest) -> None:
        """Delete the Services this job created; the user's stay."""
        for name in (req.traffic.stable_service, req.traffic.canary_service):
            if name is None:
                continue
            service = self._read(req.namespace, name)
            if service is None or (service["metadata"].get("labels") or {}).get(JOB_KEY) != req.job:
                continue
            with kube_errors(f"delete Service {req.namespace}/{name}"):
                try:
                    self._core.delete_namespaced_service(
                        name, req.namespace, body=client.V1DeleteOptions(
                            preconditions=client.V1Preconditions(uid=service["metadata"]["uid"])),
                        _request_timeout=REQUEST_TIMEOUT)
                except ApiException as error:
                    if not not_found(error):
                        raise

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _json(response: Any) -> Obj:
        data: Obj = json.loads(response.data)
        return data

    def _deployment(self, req: RouterRequest) -> Obj:
        with kube_errors(f"read Deployment {req.namespace}/{req.workload}"):
            return self._json(self._apps.read_namespaced_deployment(
                req.workload, req.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))

    def _read(self, namespace: str, name: str) -> Obj | None:
        return read_or_none(self._core.read_namespaced_service, "Service", namespace, name)

    def _pod_template_hash(self, req: ServicesRequest, deployment: Obj) -> str:
        """The ``pod-template-hash`` of the Deployment's ReplicaSet running the stable version."""
        found = version_replica_set(self._apps, req.namespace, deployment, req.stable_template_hash)
        if found is not None:
            return found[1]
        # The Deployment controller makes it within moments of a template write: try again.
        raise ApplicationError(
            f"Deployment {req.namespace}/{req.workload} has no ReplicaSet for revision {req.stable_template_hash} "
            "yet; the stable Service selects its pods", type=errors.STABLE_NOT_ROLLED_OUT,
            category=ApplicationErrorCategory.BENIGN)

    def _ports(self, req: RouterRequest, deployment: Obj, field: str) -> list[Obj]:
        """The ports of a Service already selecting the workload's pods, else the containers' ports."""
        labels = ((deployment["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        with kube_errors(f"list Services in {req.namespace}"):
            services = self._json(self._core.list_namespaced_service(
                req.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))["items"]
        for service in sorted(services, key=lambda s: str(s["metadata"]["name"])):
            selector = (service.get("spec") or {}).get("selector") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()) and service["spec"].get("ports"):
                return [{k: p[k] for k in _PORT_KEYS if k in p} for p in service["spec"]["ports"]]
        ports = [{"name": p["name"], "port": p["containerPort"], "targetPort": p["containerPort"],
                  "protocol": p.get("protocol", "TCP")} if p.get("name") else
                 {"port": p["containerPort"], "targetPort": p["containerPort"], "protocol": p.get("protocol", "TCP")}
                 for c in (deployment["spec"]["template"].get("spec") or {}).get("containers") or []
                 for p in c.get("ports") or []]
        if not ports:
            raise config_error(field, (
                f"the Service is missing, and neither a Service selecting {req.workload}'s pods nor its "
                "containers name a port to give it; create the Service, or declare containerPorts"))
        return ports

    def _create(self, req: RouterRequest, deployment: Obj, field: str, name: str, selector: dict[str, str]) -> None:
        # Created meanwhile (a retried attempt): the next call aims it.
        create_job_service(self._core, req.namespace, name, job=req.job, workload=deployment, selector=selector,
                           ports=self._ports(req, deployment, field))


def _workload_labels(deployment: Obj) -> dict[str, str]:
    """The labels every pod of the workload carries: its selector's, else its template's own."""
    match = dict((deployment["spec"].get("selector") or {}).get("matchLabels") or {})
    if match:
        return match
    labels = ((deployment["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
    return {k: v for k, v in labels.items() if k not in (JOB_KEY, TRACK_LABEL)}
