"""Create a Service the job owns: labelled with the job, owned by the workload's Deployment.

Blue-green's preview Service and a router's stable and canary Services are made the same way,
so deleting the Deployment (or the job) takes them along, and the job can tell its own Services
from the user's by the label.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from activities.errors import kube_errors
from activities.templates import JOB_KEY

Obj = dict[str, Any]
FIELD_MANAGER = "canary-delivery"
REQUEST_TIMEOUT = 10.0


def create_job_service(core: client.CoreV1Api, namespace: str, name: str, *, job: str, workload: Obj,
                       selector: dict[str, str], ports: list[Obj],
                       annotations: dict[str, str] | None = None) -> bool:
    """Create Service ``name``; False when it exists already (created meanwhile, by a retried attempt)."""
    meta = workload["metadata"]
    metadata: Obj = {"name": name, "namespace": namespace, "labels": {JOB_KEY: job},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": meta["name"], "uid": meta["uid"]}]}
    if annotations:
        metadata["annotations"] = annotations
    body = {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {"selector": selector, "ports": ports}}
    with kube_errors(f"create Service {namespace}/{name}"):
        try:
            core.create_namespaced_service(namespace, body, field_manager=FIELD_MANAGER,
                                           _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status != 409:
                raise
            return False
    return True
