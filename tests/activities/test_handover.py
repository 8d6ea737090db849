"""The promotion hands the canary Deployment's pods to the user's Deployment, on the real local cluster.

A canary Deployment is what a release runs when its first step does not set the canary up
(and what older code ran); a canary ReplicaSet changes hands whole (``tests/activities/test_canary_set.py``).

What a user sees: the pods that served as the canary are the Deployment's pods afterwards (no
pod is created or deleted to promote), the workload's Service never loses its Ready endpoints,
and a hand-over cut short, finished by a retry or given up, leaves no pod without an owner.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client import ApiClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import errors
from activities.adoption import Handover
from activities.progress import Progress
from activities.templates import JOB_KEY, TRACK_LABEL, template_hash
from tests.activities.test_kube import JOB, Web, run
from tests.kube_helpers import eventually
from workflows.models import (
    CanaryTemplateRequest,
    HoldStableRequest,
    RolloutRequest,
    ScaleRequest,
    StableRevisionRequest,
    WorkloadSnapshot,
)
from workflows.step_requests import HeldPromotionRequest, ShiftRequest

pytestmark = pytest.mark.cluster


@pytest.fixture
def web(kube_api: ApiClient, namespace: str) -> Web:
    return Web(kube_api, namespace)


def _version(snap: WorkloadSnapshot, image: str) -> tuple[dict[str, object], str]:
    template = {**snap.template, "spec": {**snap.template["spec"], "containers": [
        {**snap.template["spec"]["containers"][0], "image": image}]}}
    return template, template_hash(template)


def _passes(web: Web, fn: Callable[[Any], Any], request: object, retry: str) -> object:
    """Run an activity until it passes, as Temporal retries it: each attempt gets the last one's heartbeat details."""
    details: list[Any] = []

    def attempt() -> object:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, heartbeat_details=list(details))
        env.on_heartbeat = lambda *beat: details.__setitem__(slice(None), list(beat))
        try:
            return env.run(fn, request) or True
        except ApplicationError as error:
            if error.type != retry:
                raise
            return None

    return eventually(attempt, what=f"{getattr(fn, '__name__', fn)} to pass")


def _canary_takes_all(web: Web, template: dict[str, object], hash_: str, *, first: bool,
                      deployment: bool = True) -> set[str]:
    """The canary at 3 Ready pods of ``template``, stable at 0: where a promotion starts; the canary pods' uids.

    ``deployment``: the canary runs in a canary Deployment (as it does when the release's first
    step does not set it up, and as older code ran it), else in a ReplicaSet.
    """
    if first and deployment:
        run(web.acts.prepare_canary, web.req(CanaryTemplateRequest, template=template, template_hash=hash_))
    prepare = template if first and not deployment else None
    _passes(web, web.acts.shift_replicas, web.req(ShiftRequest, canary=3, stable=0, grow=True,
                                                  template_hash=hash_, prepare=prepare),
            errors.CANARY_NOT_READY)
    return {p.metadata.uid for p in web.ready_pods(f"{TRACK_LABEL}=canary")}


def _promote(web: Web, template: dict[str, object], hash_: str) -> None:
    request = web.req(HeldPromotionRequest, template=template, template_hash=hash_, replicas=3)
    _passes(web, web.acts.promote_held, request, errors.STABLE_NOT_ROLLED_OUT)


def _stop_after_orphaning(web: Web, template: dict[str, object], hash_: str) -> None:
    """A hand-over's first three stages, as an attempt that stops (its worker dies) right after them."""
    request = web.req(HeldPromotionRequest, template=template, template_hash=hash_, replicas=3)

    def halfway(_: object) -> None:
        handover = Handover(web.acts, request, Progress({}))
        web.acts._hold(request, template, hash_, 3)
        deployment = web.acts._workload(request)
        handover._clear(deployment)
        handover._orphan(deployment)

    run(halfway, None)


class EndpointWatch:
    """The fewest Ready endpoints the workload's Service had while it ran."""

    def __init__(self, web: Web) -> None:
        self.web, self.fewest, self._stop = web, 99, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.fewest = min(self.fewest, self.web.ready_endpoints())

    def __enter__(self) -> EndpointWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def test_the_canary_pods_become_the_deployments_own_pods(web: Web) -> None:
    snap = web.attach()
    for round_, image in enumerate(("registry.local/web:2", "registry.local/web:3")):
        template, hash_ = _version(snap, image)
        canary = _canary_takes_all(web, template, hash_, first=True, deployment=round_ == 0)
        assert len(canary) == 3
        with EndpointWatch(web) as endpoints:
            _promote(web, template, hash_)
        pods = web.ready_pods()
        assert {p.metadata.uid for p in pods} == canary, f"round {round_}: the same pods, none made or lost"
        assert all(TRACK_LABEL not in p.metadata.labels and JOB_KEY not in p.metadata.labels for p in pods)
        assert {p.spec.containers[0].image for p in pods} == {image}
        assert endpoints.fewest >= 3, "the Service kept every Ready endpoint while the pods changed owner"
        d = web.read()
        assert d.spec.paused is True and d.spec.replicas == 3 and d.spec.template.spec.containers[0].image == image
        [rs] = web.replica_sets()
        assert rs.spec.replicas == 3 and {p.metadata.owner_references[0].uid for p in pods} == {rs.metadata.uid}
        assert d.status.updated_replicas == d.status.available_replicas == 3
        assert web.apps.list_namespaced_deployment(web.ns, field_selector="metadata.name=web-canary").items == []
        assert web.apps.list_namespaced_replica_set(web.ns, label_selector=f"{TRACK_LABEL}=canary").items == []
        # Given back, the Deployment takes its own ReplicaSet as it is: no rollout, same pods.
    d = web.read()
    web.apps.patch_namespaced_deployment("web", web.ns, {"spec": {"paused": False}})
    eventually(lambda: web.read().status.observed_generation > d.metadata.generation, what="the unpause seen")
    assert {p.metadata.uid for p in web.ready_pods()} == canary
    assert [rs.spec.replicas for rs in web.replica_sets()] == [3]


def test_a_retry_that_lost_its_progress_finishes_the_hand_over(web: Web) -> None:
    """A worker died right after the canary's pods were orphaned, before its heartbeat got out."""
    snap = web.attach()
    template, hash_ = _version(snap, "registry.local/web:2")
    canary = _canary_takes_all(web, template, hash_, first=True)
    _stop_after_orphaning(web, template, hash_)
    orphans = web.ready_pods(f"{TRACK_LABEL}=canary")
    assert {p.metadata.uid for p in orphans} == canary and all(not p.metadata.owner_references for p in orphans)

    _promote(web, template, hash_)  # a new attempt, from the start
    assert {p.metadata.uid for p in web.ready_pods()} == canary
    assert [rs.spec.replicas for rs in web.replica_sets()] == [3]


def test_a_hand_over_given_up_halfway_leaves_no_pod_without_an_owner(web: Web) -> None:
    """The release fails there: the orphans serve until the stable version is back, then go with the canary."""
    snap = web.attach()
    template, hash_ = _version(snap, "registry.local/web:2")
    _canary_takes_all(web, template, hash_, first=True)
    _stop_after_orphaning(web, template, hash_)
    orphans = {p.metadata.uid for p in web.ready_pods(f"{JOB_KEY}={JOB}")}
    assert len(orphans) == 3
    # The rollback: the stable version back on the Deployment's pods, then the canary to zero.
    stable = {"template": snap.template, "template_hash": snap.template_hash}
    run(web.acts.prepare_stable, web.req(StableRevisionRequest, **stable))
    run(web.acts.hold_stable, web.req(HoldStableRequest, **stable, replicas=3))
    assert {p.metadata.uid for p in web.ready_pods(f"{JOB_KEY}={JOB}")} == orphans, "serving meanwhile"
    _passes(web, web.acts.wait_stable_rolled_out, web.req(RolloutRequest, replicas=3,
                                                          template_hash=snap.template_hash, held=True),
            errors.STABLE_NOT_ROLLED_OUT)
    run(web.acts.scale_canary, web.req(ScaleRequest, replicas=0))
    eventually(lambda: web.ready_pods(f"{JOB_KEY}={JOB}") == [], what="the orphans deleted")
    assert {p.spec.containers[0].image for p in web.ready_pods()} == {"registry.local/web:1"}


def test_a_canary_set_up_by_older_code_is_promoted_the_old_way(web: Web) -> None:
    """Its pods lack the job's label, so a stopped hand-over could not find them: the Deployment grows its own."""
    snap = web.attach()
    template, hash_ = _version(snap, "registry.local/web:2")
    _canary_takes_all(web, template, hash_, first=True)
    web.apps.patch_namespaced_deployment("web-canary", web.ns, [
        {"op": "remove", "path": "/spec/template/metadata/labels/" + JOB_KEY.replace("/", "~1")}])
    eventually(lambda: len(web.ready_pods(f"{TRACK_LABEL}=canary,!{JOB_KEY}")) == 3
               and not web.ready_pods(f"{JOB_KEY}={JOB}"), what="the canary on older code's template")
    canary = {p.metadata.uid for p in web.ready_pods(f"{TRACK_LABEL}=canary")}

    _promote(web, template, hash_)
    eventually(lambda: not web.ready_pods(f"{TRACK_LABEL}=canary"), what="the canary scaled down")
    own = web.ready_pods(f"app=web,!{TRACK_LABEL}")
    assert len(own) == 3 and not {p.metadata.uid for p in own} & canary
    assert web.read("web-canary").spec.replicas == 0


def test_a_canary_left_paused_by_a_stopped_hand_over_runs_the_next_release(web: Web) -> None:
    """Stopped after the canary Deployment was paused and its ReplicaSets orphaned, then rolled back."""
    snap = web.attach()
    template, hash_ = _version(snap, "registry.local/web:2")
    _canary_takes_all(web, template, hash_, first=True)

    def halfway() -> None:
        web.apps.patch_namespaced_deployment("web-canary", web.ns, {"spec": {"paused": True}})
        for rs in web.apps.list_namespaced_replica_set(web.ns, label_selector=f"{TRACK_LABEL}=canary").items:
            web.apps.delete_namespaced_replica_set(rs.metadata.name, web.ns, propagation_policy="Orphan")

    run(lambda _: halfway(), None)
    run(web.acts.scale_canary, web.req(ScaleRequest, replicas=0))  # the rollback's last write
    # Gone, not only terminating: a ReplicaSet of the same hash could count them as its own meanwhile.
    eventually(lambda: web.core.list_namespaced_pod(web.ns, label_selector=f"{TRACK_LABEL}=canary").items == [],
               what="the orphans deleted")
    # The same version again (a rollback to it, say): its first step brings the canary up.
    _canary_takes_all(web, template, hash_, first=True)
    eventually(lambda: len(web.ready_pods(f"{TRACK_LABEL}=canary")) == 3, what="3 Ready canary pods")
    assert web.read("web-canary").spec.paused is not True


def test_a_stray_canary_pod_of_another_replica_set_is_not_waited_for(web: Web) -> None:
    """An orphan the new ReplicaSet cannot select (another pod hash) is deleted, not waited for until the deadline."""
    snap = web.attach()
    template, hash_ = _version(snap, "registry.local/web:2")
    canary = _canary_takes_all(web, template, hash_, first=True)
    model = web.core.read_namespaced_pod(web.ready_pods(f"{TRACK_LABEL}=canary")[0].metadata.name, web.ns)
    web.core.create_namespaced_pod(web.ns, {
        "metadata": {"name": "web-canary-stray", "annotations": model.metadata.annotations,
                     "labels": {**model.metadata.labels, "pod-template-hash": "stray"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/web:2"}]}})

    _promote(web, template, hash_)
    assert {p.metadata.uid for p in web.ready_pods()} == canary
    eventually(lambda: web.core.list_namespaced_pod(web.ns, field_selector="metadata.name=web-canary-stray").items
               == [], what="the stray pod deleted")
