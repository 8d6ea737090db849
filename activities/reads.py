"""GET one object as the API server's JSON, or None when it does not exist; find a version's ReplicaSet.

Every activity module reads objects raw (``_preload_content=False``: the client's models drop
fields they do not know, and a write built from such a copy would drop them too), and needs
"missing" as an answer, not an error. One helper, so each does it the same way. Likewise the
Services that select one version's pods (blue-green's, a router's stable Service) find its
ReplicaSet one way.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from activities.errors import kube_errors, not_found
from activities.templates import template_hash

Obj = dict[str, Any]
REQUEST_TIMEOUT = 10.0
HASH_LABEL = "pod-template-hash"


def canary_name(name: str) -> str:
    """The canary Deployment's name for workload ``name``."""
    return f"{name}-canary"


def selector_string(selector: Obj) -> str:
    """Write a LabelSelector as the ``labelSelector`` query string the API accepts."""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], ",".join(expr.get("values") or [])
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(terms)


def release(response: Any) -> None:
    """Read a raw answer nobody needs to its end, so its connection goes back to the pool.

    Left unread, the connection is closed with the response, and the next call pays a new TLS
    handshake (its client certificate checked again by the API server): eight per release.
    """
    response.drain_conn()
    response.release_conn()


def read_or_none(read: Callable[..., Any], kind: str, namespace: str, name: str) -> Obj | None:
    """``read(name, namespace)`` (a client's ``read_namespaced_*``) as JSON; None for a 404."""
    with kube_errors(f"read {kind} {namespace}/{name}"):
        try:
            response = read(name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if not_found(error):
                return None
            raise
    data: Obj = json.loads(response.data)
    return data


def version_replica_set(apps: client.AppsV1Api, namespace: str, deployment: Obj,
                        wanted_hash: str) -> tuple[Obj, str] | None:
    """The ReplicaSet of ``deployment`` that runs the pod template hashed ``wanted_hash``, and its pod hash.

    The Deployment controller adds ``pod-template-hash`` to the template it copies into the
    ReplicaSet; without that label the template hashes as the job wrote it. The pod hash is what a
    Service selects to reach that version's pods alone. None until the controller has made it.
    """
    uid = deployment["metadata"]["uid"]
    with kube_errors(f"list ReplicaSets in {namespace}"):
        response = apps.list_namespaced_replica_set(namespace, _preload_content=False,
                                                    _request_timeout=REQUEST_TIMEOUT)
    for rs in json.loads(response.data)["items"]:
        if not any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or []):
            continue
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        pod_hash = ((template.get("metadata") or {}).get("labels") or {}).pop(HASH_LABEL, None)
        if pod_hash and template_hash(template) == wanted_hash:
            return rs, str(pod_hash)
    return None
