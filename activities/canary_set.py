"""The canary as a bare ReplicaSet beside the user's Deployment: what a replica-ratio release runs.

A second Deployment for the canary costs the cluster more than the pods it moves. Its controller
writes the canary Deployment's status on every change of its ReplicaSet (about 27 writes a
release, a third of them conflicts, in ``bench/fleet_bench.py``), and with two Deployments the
cluster alone spends 15-19 CPU-seconds on 50 simultaneous releases against 8-12 for bare
ReplicaSets (``bench/cluster_floor_bench.py``: every controller taken out). On two cores that is
the wall time. Argo Rollouts moves ReplicaSets itself; so does this module, for the canary:

- The ReplicaSet's own labels are the job's and the canary track, not the workload's. The
  Deployment controller claims ReplicaSets by their labels, so it never adopts this one.
- Its selector is the workload's plus a ``pod-template-hash`` of this version, as the
  Deployment controller's are: neither side's ReplicaSet claims the other's pods.
- Its owner reference to the workload is not a controller reference: deleting the workload
  deletes the canary, and nothing else claims it.

At promotion the ReplicaSet changes hands (:class:`Transfer`): one write gives it the workload's
labels and template and makes the Deployment its controller. Its pods keep their owner, so none
is created and none is left without an owner at any moment. The Deployment, paused and emptied of
its other ReplicaSets first, finds the ReplicaSet of its template at its size and leaves it so.

A workload whose selector would match the canary's own labels (a selector of expressions only,
say) keeps the canary Deployment (``usable``).
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.adoption import controller_of, delete, held, max_surge
from activities.errors import kube_errors, not_found
from activities.progress import Progress
from activities.reads import HASH_LABEL, REQUEST_TIMEOUT, read_or_none, release, selector_string
from activities.templates import CANARY_TRACK, HASH_ANNOTATION, JOB_KEY, TRACK_LABEL, canary_template, still_the_jobs

if TYPE_CHECKING:
    from activities.kube import KubeActivities
    from workflows.models import CanaryTemplateRequest
    from workflows.step_requests import HeldPromotionRequest

Obj = dict[str, Any]
POD_HASH_LENGTH = 10
JSON_PATCH = "application/json-patch+json"


def set_name(workload: str, hash_: str) -> str:
    """The canary ReplicaSet of version ``hash_``, named as the canary Deployment's ReplicaSets were.

    A mesh names a pod's workload after the ReplicaSet that made it, less its ``pod-template-hash``
    (Istio's ``destination_workload``): ``<workload>-canary``, which the analysis queries select.
    """
    return f"{workload}-canary-{pod_hash(hash_)}"


def pod_hash(hash_: str) -> str:
    """The ``pod-template-hash`` of the canary's pods of version ``hash_``."""
    return hash_[:POD_HASH_LENGTH]


def set_labels(job: str) -> dict[str, str]:
    """The canary ReplicaSet's own labels (not its pods'): the job's, and the canary track."""
    return {JOB_KEY: job, TRACK_LABEL: CANARY_TRACK}


def sets_selector(job: str) -> str:
    """Selects the job's canary ReplicaSets that have not been handed to the Deployment."""
    return f"{JOB_KEY}={job},{TRACK_LABEL}={CANARY_TRACK}"


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector selects an object with ``labels`` (the API server's rules)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        present = key in labels
        if ((op == "In" and (not present or labels[key] not in values))
                or (op == "NotIn" and present and labels[key] in values)
                or (op == "Exists" and not present) or (op == "DoesNotExist" and present)):
            return False
    return True


def usable(workload: Obj, job: str) -> bool:
    """Whether a canary ReplicaSet stays out of the workload's Deployment (its selector does not take it)."""
    return not selector_matches(workload["spec"]["selector"], set_labels(job))


def is_canary_set(rs: Obj | None, job: str) -> bool:
    """Whether ``rs`` is one of the job's canary ReplicaSets (not yet handed to the Deployment).

    A canary Deployment's ReplicaSets carry the same labels (its pods' labels), but have a controller.
    """
    if rs is None or controller_of(rs) is not None:
        return False
    labels = (rs.get("metadata") or {}).get("labels") or {}
    return labels.get(JOB_KEY) == job and labels.get(TRACK_LABEL) == CANARY_TRACK


def body(workload: Obj, template: Obj, hash_: str, job: str, replicas: int) -> Obj:
    """The canary ReplicaSet of ``template`` for ``workload``, at ``replicas`` pods."""
    spec, meta = workload["spec"], workload["metadata"]
    pods = canary_template(template, hash_, job)
    pods["metadata"]["labels"][HASH_LABEL] = pod_hash(hash_)
    selector = copy.deepcopy(spec["selector"])
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash(hash_)}
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": set_name(meta["name"], hash_), "namespace": meta["namespace"],
            "labels": set_labels(job), "annotations": {HASH_ANNOTATION: hash_},
            # Not a controller reference: deleting the workload garbage-collects the canary.
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                 "name": meta["name"], "uid": meta["uid"]}],
        },
        "spec": {"replicas": replicas, "minReadySeconds": spec.get("minReadySeconds", 0),
                 "selector": selector, "template": pods},
    }


def read_set(kube: KubeActivities, namespace: str, name: str) -> Obj | None:
    """GET a ReplicaSet as server JSON; None when it does not exist."""
    return read_or_none(kube._apps.read_namespaced_replica_set, "ReplicaSet", namespace, name)


def list_sets(kube: KubeActivities, namespace: str, job: str) -> list[Obj]:
    """The job's canary ReplicaSets (any version), not being deleted; a canary Deployment's are not among them."""
    with kube_errors(f"list the canary ReplicaSets of job {job} in {namespace}"):
        items: list[Obj] = json.loads(kube._apps.list_namespaced_replica_set(
            namespace, label_selector=sets_selector(job), _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT).data)["items"]
    return [rs for rs in items if not rs["metadata"].get("deletionTimestamp") and is_canary_set(rs, job)]


def prepare(kube: KubeActivities, req: CanaryTemplateRequest, workload: Obj, replicas: int) -> bool:
    """The canary ReplicaSet of ``req.template_hash`` exists; the job's other canaries are gone.

    A new one is created at ``replicas`` (the first step's size: no second write to scale it),
    and True says so. One that exists already (a retry, the same version again) keeps its size.
    The job's canary of another version and a canary Deployment left by an earlier release are
    deleted: one canary per job is what the other activities count on.
    """
    name = set_name(req.name, req.template_hash)
    ours = False
    for rs in list_sets(kube, req.namespace, req.job):
        if rs["metadata"]["name"] == name:
            ours = True
        else:
            delete(kube._apps.delete_namespaced_replica_set, "ReplicaSet", rs, "Background")
    kube._delete_canary_deployment(req)
    if ours:
        return False
    with kube_errors(f"create ReplicaSet {req.namespace}/{name}"):
        try:
            release(kube._apps.create_namespaced_replica_set(
                req.namespace, body(workload, req.template, req.template_hash, req.job, replicas),
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
        except ApiException as error:
            if error.status != 409:
                raise
            # The name is taken: by a canary of ours made meanwhile (the next attempt finds it),
            # or by something else, which is never written over.
            if not is_canary_set(read_set(kube, req.namespace, name), req.job):
                raise ApplicationError(
                    f"ReplicaSet {req.namespace}/{name} exists and is not canary job {req.job!r}'s canary",
                    type=errors.OWNED_BY_OTHER_JOB, non_retryable=True) from None
            return False
    return True


def scale(kube: KubeActivities, namespace: str, name: str, job: str, replicas: int) -> bool:
    """Set canary ReplicaSet ``name``'s replicas; False when there is no such ReplicaSet of the job.

    The write tests the job's label in the same request, so a ReplicaSet handed to the
    Deployment (or anyone else's) is never scaled here.
    """
    ops = [still_the_jobs(job), {"op": "add", "path": "/spec/replicas", "value": replicas}]
    with kube_errors(f"scale ReplicaSet {namespace}/{name}"):
        try:
            release(kube._apps.patch_namespaced_replica_set(
                name, namespace, ops, _content_type=JSON_PATCH, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT))
        except ApiException as error:
            if not_found(error) or error.status == 422:  # gone, or no longer the job's canary
                return False
            raise
    return True


def scale_all(kube: KubeActivities, namespace: str, job: str, replicas: int) -> bool:
    """Scale the job's canary ReplicaSet (the newest) to ``replicas``, any other to zero; False if none."""
    sets = sorted(list_sets(kube, namespace, job), key=lambda rs: str(rs["metadata"].get("creationTimestamp")))
    for index, rs in enumerate(sets):
        wanted = replicas if index == len(sets) - 1 else 0
        if int((rs.get("spec") or {}).get("replicas", 0)) != wanted:
            scale(kube, namespace, rs["metadata"]["name"], job, wanted)
    return bool(sets)


def ready_problem(rs: Obj | None, replicas: int, hash_: str) -> str | None:
    """What keeps ``replicas`` pods of the canary ReplicaSet from being Ready and available; None when none."""
    if rs is None:
        return None if replicas == 0 else f"the canary ReplicaSet of template {hash_} does not exist"
    meta, spec, status = rs["metadata"], rs.get("spec") or {}, rs.get("status") or {}
    observed = int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
    total = int(status.get("replicas", 0))
    ready, available = int(status.get("readyReplicas", 0)), int(status.get("availableReplicas", 0))
    if replicas == 0:
        if observed and int(spec.get("replicas", 0)) == 0 and total == 0:
            return None
        return f"{total} canary pods left, waiting for none"
    if observed and total == replicas and available >= replicas:
        return None
    return f"{ready} of {replicas} canary pods of template {hash_} ready ({available} available, {total} in all)"


def delete_all(kube: KubeActivities, namespace: str, job: str) -> None:
    """Delete the job's canary ReplicaSets (their pods with them)."""
    for rs in list_sets(kube, namespace, job):
        delete(kube._apps.delete_namespaced_replica_set, "ReplicaSet", rs, "Background")


class Transfer:
    """One promotion's hand-over of the canary ReplicaSet to the user's Deployment.

    Stages, each found done from the cluster's state on a retry that lost its record:
    ``held`` (the paused Deployment holds the new template at its replicas), ``cleared`` (its
    other ReplicaSets deleted: a paused Deployment without ReplicaSets scales none),
    ``transferred`` (the canary ReplicaSet made the Deployment's own) and ``relabeled`` (the
    canary's labels off its pods, so the next release's canary does not count them).
    """

    def __init__(self, kube: KubeActivities, req: HeldPromotionRequest, progress: Progress) -> None:
        """``progress``: the stages a previous attempt finished."""
        self.kube, self.req, self.progress = kube, req, progress
        self.namespace = req.namespace
        self.name = set_name(req.name, req.template_hash)

    def possible(self) -> bool:
        """Whether the release's canary is a ReplicaSet of the job's (or one this promotion already took)."""
        if "transferred" in self.progress.done:
            return True
        rs = read_set(self.kube, self.namespace, self.name)
        return is_canary_set(rs, self.req.job) or self._taken(rs)

    def run(self) -> None:
        """Do what is left of the stages; the wait for the pods to be available is the caller's."""
        req, done = self.req, self.progress.done
        deployment = held(self.kube, req, self.progress)
        if "cleared" not in done:
            for rs in self.kube._replica_sets(req, deployment):
                if rs["metadata"]["name"] != self.name:
                    delete(self.kube._apps.delete_namespaced_replica_set, "ReplicaSet", rs, "Background")
            self.progress.mark("cleared")
        if "transferred" not in done:
            self._transfer(deployment)
            self.progress.mark("transferred")
        if "relabeled" not in done:
            self._relabel()
            self.progress.mark("relabeled")

    def _taken(self, rs: Obj | None) -> bool:
        """Whether ``rs`` is already the Deployment's, with the promoted template (a retry's)."""
        if rs is None:
            return False
        owner = controller_of(rs)
        return owner is not None and owner.get("kind") == "Deployment" and owner.get("name") == self.req.name \
            and self.kube._replica_set_for([rs], self.req.template_hash) is not None

    def _transfer(self, deployment: Obj) -> None:
        """One write: the Deployment's labels, template and size, and the Deployment as controller."""
        rs = read_set(self.kube, self.namespace, self.name)
        if self._taken(rs):
            return
        if not is_canary_set(rs, self.req.job):
            raise ApplicationError(f"{self.namespace}/{self.req.name}: the canary ReplicaSet {self.name} is gone",
                                   type=errors.STABLE_NOT_ROLLED_OUT, non_retryable=True)
        assert rs is not None
        spec, meta = deployment["spec"], deployment["metadata"]
        labels = {**((spec["template"].get("metadata") or {}).get("labels") or {}), HASH_LABEL: pod_hash(
            self.req.template_hash)}
        template = copy.deepcopy(spec["template"])
        template.setdefault("metadata", {})["labels"] = labels
        replicas = self.req.replicas
        ops: list[Obj] = [
            still_the_jobs(self.req.job),  # a retry that finds it taken already stops below
            {"op": "replace", "path": "/metadata/labels", "value": labels},
            {"op": "replace", "path": "/metadata/annotations", "value": {
                # What the Deployment controller would have written on a ReplicaSet of its own.
                "deployment.kubernetes.io/desired-replicas": str(replicas),
                "deployment.kubernetes.io/max-replicas": str(replicas + max_surge(spec, replicas))}},
            {"op": "replace", "path": "/metadata/ownerReferences", "value": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"], "uid": meta["uid"],
                 "controller": True, "blockOwnerDeletion": True}]},
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/spec/replicas", "value": replicas},
        ]
        with kube_errors(f"hand ReplicaSet {self.namespace}/{self.name} to Deployment {self.req.name}"):
            try:
                release(self.kube._apps.patch_namespaced_replica_set(
                    self.name, self.namespace, ops, _content_type=JSON_PATCH, _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT))
            except ApiException as error:
                if error.status != 422 or not self._taken(read_set(self.kube, self.namespace, self.name)):
                    raise

    def _relabel(self) -> None:
        """Take the canary's labels off the pods the Deployment now owns (through the ReplicaSet)."""
        selector = selector_string({"matchLabels": {JOB_KEY: self.req.job, TRACK_LABEL: CANARY_TRACK,
                                                    HASH_LABEL: pod_hash(self.req.template_hash)}})
        for pod in self.kube._pods(self.namespace, selector):
            name = pod["metadata"]["name"]
            with kube_errors(f"relabel pod {self.namespace}/{name}"):
                try:
                    release(self.kube._core.patch_namespaced_pod(
                        name, self.namespace, {"metadata": {"labels": {TRACK_LABEL: None, JOB_KEY: None}}},
                        _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
                except ApiException as error:
                    if not not_found(error):
                        raise
