"""Pure helpers on pod templates: identity (hash), images, the canary's template.

Deterministic and free of ``kubernetes`` imports, so the hash can be tested on its own.
Templates are the plain JSON mappings the API server returns (camelCase keys), never client model objects.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from workflows.models import PodTemplate

PREFIX = "canary-delivery.dev/"
JOB_KEY = PREFIX + "job"
TRACK_LABEL = PREFIX + "track"
HASH_ANNOTATION = PREFIX + "template-hash"
CANARY_TRACK = "canary"
# On the user's Deployment: "<template hash>/<replicas>" as the job last wrote or acknowledged them.
# The worker's shared watch reports a Deployment to its job only when its spec differs from this,
# so the job's own writes are never echoed back to it and a quiet fleet costs no signals.
KNOWN_ANNOTATION = PREFIX + "known"
# Selects the Deployments jobs hold and their canary Deployments (both carry the job label).
WATCH_SELECTOR = JOB_KEY

# Only the keys this project writes are ignored by the hash. Other ``canary-delivery.dev/*``
# keys (the local cluster's ``simulate`` label, ``ready-delay`` annotation) are the user's
# and change what the pods do, so editing them must count as a new version.
_OWN_LABELS = frozenset({JOB_KEY, TRACK_LABEL})
_OWN_ANNOTATIONS = frozenset({JOB_KEY, HASH_ANNOTATION})


def user_template(template: PodTemplate) -> PodTemplate:
    """Return a copy of ``template`` without server noise and without the keys we add.

    ``creationTimestamp: null`` appears in templates read back from the API server, and a
    labels or annotations map left empty is dropped because the server omits empty maps.
    """
    result = copy.deepcopy(template)
    metadata = dict(result.get("metadata") or {})
    metadata.pop("creationTimestamp", None)
    for field, own in (("labels", _OWN_LABELS), ("annotations", _OWN_ANNOTATIONS)):
        kept = {k: v for k, v in (metadata.get(field) or {}).items() if k not in own}
        if kept:
            metadata[field] = kept
        else:
            metadata.pop(field, None)
    if metadata:
        result["metadata"] = metadata
    else:
        result.pop("metadata", None)
    return result


def template_hash(template: PodTemplate) -> str:
    """Identify a pod template: sha256 of its canonical JSON, first 12 hex characters.

    The stable Deployment and the canary Deployment running the same version give the same
    hash, because the canary's own label and annotation are left out.
    """
    canonical = json.dumps(user_template(template), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def known_value(hash_: str, replicas: int) -> str:
    """The KNOWN_ANNOTATION value for a Deployment spec of ``hash_`` at ``replicas``."""
    return f"{hash_}/{replicas}"


def images(template: PodTemplate) -> dict[str, str]:
    """Map each (non-init) container name to its image: what a user calls "the version"."""
    containers = (template.get("spec") or {}).get("containers") or []
    return {str(c.get("name")): str(c.get("image", "")) for c in containers}


def still_the_jobs(job: str) -> dict[str, Any]:
    """A JSON-patch ``test`` of the job's label: the write applies only while the object is still the job's."""
    return {"op": "test", "path": "/metadata/labels/" + JOB_KEY.replace("~", "~0").replace("/", "~1"), "value": job}


def canary_selector(selector: dict[str, Any]) -> dict[str, Any]:
    """The canary Deployment's selector: the workload's, narrowed to the canary's track."""
    narrowed = dict(selector)
    narrowed["matchLabels"] = {**(selector.get("matchLabels") or {}), TRACK_LABEL: CANARY_TRACK}
    return narrowed


def canary_template(template: PodTemplate, hash_: str, job: str) -> PodTemplate:
    """The canary Deployment's pod template: ``template`` plus the canary track, the job and the hash.

    The pods keep every label of the workload, so the workload's Service selects them too:
    that is what turns replica counts into a traffic share. The job's label finds them while
    the promotion hands them to the workload (``activities/adoption.py``).
    """
    result = user_template(template)
    metadata = result.setdefault("metadata", {})
    metadata["labels"] = {**metadata.get("labels", {}), TRACK_LABEL: CANARY_TRACK, JOB_KEY: job}
    metadata["annotations"] = {**metadata.get("annotations", {}), HASH_ANNOTATION: hash_}
    return result


# --- image references (the grammar of distribution/reference) ------------------------------
