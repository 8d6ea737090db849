"""The held promotion without new pods: the canary's pods become the Deployment's own.

Promoting by growing the Deployment's new ReplicaSet creates as many pods again as the canary
already runs, and the API server, the scheduler and every kubelet pay for each of them: a
release of four replicas made eight pods where Argo Rollouts makes four. In replica-ratio mode
the canary's pods already run the promoted template and carry every label of the workload's
pods, so they are handed over instead, in stages that each survive a retry:

1. ``held``: the paused Deployment holds the new template at its replicas. Paused, it rolls
   nothing out; its old ReplicaSet keeps the stable pods.
2. ``cleared``: the Deployment's ReplicaSets are deleted (their pods with them). A paused
   Deployment without ReplicaSets creates none and scales none.
3. ``orphaned``: the canary Deployment, then its ReplicaSets, are deleted with propagation
   ``Orphan``: the canary's pods keep running, owned by nobody.
4. ``adopted``: a ReplicaSet of the new template, owned by the Deployment, at its replicas,
   selecting the canary pods' ``pod-template-hash``. Its controller adopts the orphans and
   creates no pod; the Deployment's controller finds the ReplicaSet of its own template at its
   own size and leaves it so.
5. ``relabeled``: the pods lose the canary's labels, and count as the Deployment's own.

Stage 2 is what makes stage 4 safe: while the Deployment had any other ReplicaSet, its
controller would scale one of them to its replicas, or both proportionally. The price is the
Deployment's revision history: ``kubectl rollout undo`` is refused on the paused Deployment
anyway, and the job keeps every version's template.

Between stages 3 and 4 (well under a second) the pods have no owner, and a cancellation would
leave them so: it is held back until stage 4 is done. Pods still orphaned after a failure
carry the job's label and the canary's track; they serve while the rollback brings the stable
version back, and :func:`discard_orphans` deletes them when the canary is scaled to zero after
that, or when the job lets go.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError, CancelledError

from activities import errors
from activities.errors import kube_errors, not_found
from activities.progress import Progress, heartbeat
from activities.reads import HASH_LABEL, canary_name, selector_string
from activities.templates import CANARY_TRACK, HASH_ANNOTATION, JOB_KEY, TRACK_LABEL, canary_selector
from workflows.models import HoldStableResult

if TYPE_CHECKING:
    from activities.kube import KubeActivities
    from workflows.step_requests import HeldPromotionRequest

Obj = dict[str, Any]
# The garbage collector orphans dependents within milliseconds; this bounds a stuck one.
ORPHAN_SECONDS = 20.0
REQUEST_TIMEOUT = 10.0


def controller_of(obj: Obj) -> Obj | None:
    """The owner reference that controls ``obj``, if any."""
    return next((ref for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("controller")), None)


def canary_pods_selector(job: str) -> str:
    """The canary's pods of ``job`` that have not been handed over (yet)."""
    return f"{JOB_KEY}={job},{TRACK_LABEL}={CANARY_TRACK}"


def discard_orphans(kube: KubeActivities, namespace: str, name: str, job: str) -> int:
    """Delete the job's canary pods that nobody owns (a hand-over that stopped halfway); how many.

    A canary Deployment left paused is the sign of one stopped while its ReplicaSets were being
    deleted: their pods become orphans only when that is done, so it is waited for first.
    """
    canary = kube._read(namespace, canary_name(name))
    if canary is not None and canary["spec"].get("paused"):
        deadline = time.monotonic() + ORPHAN_SECONDS
        while any(rs["metadata"].get("deletionTimestamp") for rs in canary_replica_sets(kube, namespace, canary)):
            if time.monotonic() > deadline:
                break
            heartbeat("waiting for the canary's ReplicaSets to be deleted")
            time.sleep(0.1)
    orphans = [pod for pod in kube._pods(namespace, canary_pods_selector(job)) if controller_of(pod) is None]
    for pod in orphans:
        delete(kube._core.delete_namespaced_pod, "pod", pod)
    return len(orphans)


def canary_replica_sets(kube: KubeActivities, namespace: str, owner: Obj) -> list[Obj]:
    """The ReplicaSets the canary selector of ``owner`` (the workload or the canary Deployment) selects."""
    selector = selector_string(canary_selector(owner["spec"]["selector"]))
    with kube_errors(f"list the canary's ReplicaSets in {namespace}"):
        items: list[Obj] = kube._json(kube._apps.list_namespaced_replica_set(
            namespace, label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))["items"]
    return items


def delete(call: Any, kind: str, obj: Obj, propagation: str | None = None) -> None:
    """Delete ``obj`` (``call`` is the client's ``delete_namespaced_*``), only if it is still that object.

    The uid precondition keeps a retry from deleting a namesake made since; gone already is done.
    """
    meta = obj["metadata"]
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=meta["uid"]),
                                     propagation_policy=propagation)
    with kube_errors(f"delete {kind} {meta['namespace']}/{meta['name']}"):
        try:
            call(meta["name"], meta["namespace"], body=options, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if not not_found(error) and error.status != 409:  # 409: the uid differs, so ours is gone
                raise


def held(kube: KubeActivities, req: HeldPromotionRequest, progress: Progress) -> Obj:
    """A hand-over's first stage, ``held``, once: the paused Deployment holds the new template at its replicas.

    Returns the Deployment (as written, or read again when a previous attempt held it).
    """
    if "held" in progress.done:
        return kube._workload(req)
    displaced, deployment = kube._hold(req, req.template, req.template_hash, req.replicas)
    progress.keep(HoldStableResult(displaced=displaced, generation=int(deployment["metadata"].get("generation", 0))))
    progress.mark("held")
    return deployment


class Handover:
    """One promotion's hand-over of the canary's pods to the user's Deployment."""

    def __init__(self, kube: KubeActivities, req: HeldPromotionRequest, progress: Progress) -> None:
        """``progress``: the stages a previous attempt finished (each is also safe to repeat)."""
        self.kube, self.req, self.progress = kube, req, progress
        self.namespace = req.namespace
        self._cancelled = False

    def possible(self) -> bool:
        """Whether the canary's pods carry the job's label (canaries set up by older code do not).

        A canary that is gone already is a retry's: the stages find what is left to do.
        """
        canary = self.kube._read(self.namespace, canary_name(self.req.name))
        labels = ((canary or {}).get("spec", {}).get("template", {}).get("metadata") or {}).get("labels") or {}
        return canary is None or labels.get(JOB_KEY) == self.req.job

    def run(self) -> None:
        """Do what is left of stages 1 to 5; the wait for the pods to be available is the caller's."""
        done = self.progress.done
        deployment = held(self.kube, self.req, self.progress)
        if "cleared" not in done:
            self._clear(deployment)
            self.progress.mark("cleared")
        # From here to the adoption the canary's pods may have no owner: no cancellation lands.
        if "orphaned" not in done:
            self._orphan(deployment)
            self._mark("orphaned")
        if "adopted" not in done:
            pod_hash = self._adopt(deployment)
            # The ReplicaSet controller claims the orphans on its first sync: until then they
            # would look like pods nobody will ever take. (Orphans of another hash, from a second
            # canary ReplicaSet of the same version, never will: the relabelling deletes them.)
            self._until(lambda: not any(_pod_hash(pod) == pod_hash for pod in self._orphans()),
                        "the Deployment's new ReplicaSet adopting the canary's pods")
            self._mark("adopted")
        if self._cancelled:
            raise CancelledError("cancelled while the canary's pods changed owner")
        if "relabeled" not in done:
            self._relabel()
            self.progress.mark("relabeled")

    # -- the stages ---------------------------------------------------------------------------------

    def _clear(self, deployment: Obj) -> None:
        """Delete the Deployment's ReplicaSets, all but one already adopting the canary's pods."""
        for rs in self.kube._replica_sets(self.req, deployment):
            if self._is_adopter(rs):
                continue  # a retry after stage 4
            delete(self.kube._apps.delete_namespaced_replica_set, "ReplicaSet", rs, "Background")

    def _is_adopter(self, rs: Obj) -> bool:
        labels = (((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        return (TRACK_LABEL not in labels and self.kube._replica_set_for([rs], self.req.template_hash) is not None
                and int((rs.get("spec") or {}).get("replicas", 0)) > 0)

    def _orphan(self, deployment: Obj) -> None:
        """Delete the canary's ReplicaSets leaving their pods to nobody, then the canary Deployment.

        The canary Deployment is paused first, so it makes no new ReplicaSet meanwhile. The
        ReplicaSets go while it still owns them: an orphaned ReplicaSet that carries the
        workload's labels would be adopted by the user's Deployment, one being deleted is not.
        """
        name = canary_name(self.req.name)
        canary = self.kube._read(self.namespace, name)
        if canary is not None and (canary["metadata"].get("labels") or {}).get(JOB_KEY) == self.req.job:
            if not canary["spec"].get("paused"):
                with kube_errors(f"pause Deployment {self.namespace}/{name}"):
                    self.kube._apps.patch_namespaced_deployment(name, self.namespace, {"spec": {"paused": True}},
                                                                _request_timeout=REQUEST_TIMEOUT)
            for rs in canary_replica_sets(self.kube, self.namespace, deployment):
                if self._owned_by(rs, canary):
                    delete(self.kube._apps.delete_namespaced_replica_set, "ReplicaSet", rs, "Orphan")
            self._until(lambda: not any(self._owned_by(rs, canary)
                                        for rs in canary_replica_sets(self.kube, self.namespace, deployment)),
                        "the canary's ReplicaSets gone, their pods orphaned")
            delete(self.kube._apps.delete_namespaced_deployment, "Deployment", canary, "Background")

    @staticmethod
    def _owned_by(obj: Obj, owner: Obj) -> bool:
        return bool((controller_of(obj) or {}).get("uid") == owner["metadata"]["uid"])

    def _orphans(self) -> list[Obj]:
        pods = self.kube._pods(self.namespace, canary_pods_selector(self.req.job))
        return [pod for pod in pods if controller_of(pod) is None
                and (pod["metadata"].get("annotations") or {}).get(HASH_ANNOTATION) == self.req.template_hash]

    def _adopt(self, deployment: Obj) -> str:
        """Create the Deployment's ReplicaSet of the new template around the orphaned canary pods; its pod hash."""
        for rs in self.kube._replica_sets(self.req, deployment):
            if self._is_adopter(rs):
                return str(rs["spec"]["selector"].get("matchLabels", {}).get(HASH_LABEL, ""))
        hashes = Counter(found for found in map(_pod_hash, self._orphans()) if found)
        # The orphans came from the canary's ReplicaSet of this version (the most of them, should
        # there be two); without any (all gone meanwhile) the new ReplicaSet makes the pods itself.
        pod_hash = hashes.most_common(1)[0][0] if hashes else self.req.template_hash[:10]
        spec, meta = deployment["spec"], deployment["metadata"]
        template = {**spec["template"], "metadata": {
            **(spec["template"].get("metadata") or {}),
            "labels": {**((spec["template"].get("metadata") or {}).get("labels") or {}), HASH_LABEL: pod_hash}}}
        selector = dict(spec["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
        replicas, name = self.req.replicas, f"{self.req.name}-{pod_hash}"
        body: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": name, "namespace": self.namespace,
                "labels": template["metadata"]["labels"],
                # What the Deployment controller would have written on a ReplicaSet of its own.
                "annotations": {"deployment.kubernetes.io/desired-replicas": str(replicas),
                                "deployment.kubernetes.io/max-replicas": str(replicas + max_surge(spec, replicas))},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {"replicas": replicas, "minReadySeconds": spec.get("minReadySeconds", 0),
                     "selector": selector, "template": template},
        }
        with kube_errors(f"create ReplicaSet {self.namespace}/{name}"):
            try:
                self.kube._apps.create_namespaced_replica_set(self.namespace, body, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as error:
                if error.status != 409:
                    raise
                raise ApplicationError(  # a ReplicaSet of that name that is not this version's: try again
                    f"ReplicaSet {self.namespace}/{name} exists", type=errors.KUBERNETES_CONFLICT
                ) from None
        return pod_hash

    def _relabel(self) -> None:
        """Take the canary's labels off the pods the Deployment now owns; delete any it did not adopt.

        A pod left without an owner (it was not Ready to be adopted, say) would serve the
        workload's Service with nobody to replace or remove it.
        """
        for pod in self.kube._pods(self.namespace, canary_pods_selector(self.req.job)):
            if controller_of(pod) is None:
                delete(self.kube._core.delete_namespaced_pod, "pod", pod)
                continue
            name = pod["metadata"]["name"]
            with kube_errors(f"relabel pod {self.namespace}/{name}"):
                try:
                    self.kube._core.patch_namespaced_pod(
                        name, self.namespace, {"metadata": {"labels": {TRACK_LABEL: None, JOB_KEY: None}}},
                        _request_timeout=REQUEST_TIMEOUT)
                except ApiException as error:
                    if not not_found(error):
                        raise

    # -- waiting inside the window ------------------------------------------------------------------

    def _mark(self, stage: str) -> None:
        self.progress.done.add(stage)
        self._beat()

    def _beat(self, message: str | None = None) -> None:
        """Heartbeat, holding a cancellation back until the pods have an owner again."""
        try:
            self.progress.beat(message)
        except CancelledError:
            self._cancelled = True

    def _until(self, check: Any, what: str) -> None:
        deadline = time.monotonic() + ORPHAN_SECONDS
        while not check():
            if time.monotonic() > deadline:
                raise ApplicationError(f"{self.namespace}/{self.req.name}: waited {ORPHAN_SECONDS:.0f}s for {what}",
                                       type=errors.STABLE_NOT_ROLLED_OUT)
            self._beat(f"waiting for {what}")
            time.sleep(0.1)


def _pod_hash(pod: Obj) -> str:
    return str((pod["metadata"].get("labels") or {}).get(HASH_LABEL, ""))


def max_surge(spec: Obj, replicas: int) -> int:
    """The Deployment's maxSurge in pods (25 % rounded up when unset), as its controller counts it."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return -(-replicas * int(surge[:-1]) // 100)
    return int(surge)
