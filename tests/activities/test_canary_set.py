"""The canary as a ReplicaSet beside the user's Deployment, on the real local cluster.

What a user sees: a release's first step runs the new version in a ReplicaSet the Deployment
never takes; promotion gives that very ReplicaSet (its pods, its uid) to the Deployment; a
rollback, a detach or deleting the workload leave no canary behind; and a workload whose
selector would take such a ReplicaSet still gets a canary Deployment.
"""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from temporalio.exceptions import ApplicationError

from activities import canary_set, errors
from activities.canary_set import Transfer
from activities.informer import DeploymentInformer
from activities.kube import KubeActivities
from activities.progress import Progress
from activities.templates import JOB_KEY, TRACK_LABEL
from tests.activities.test_handover import EndpointWatch, _passes, _promote, _version
from tests.activities.test_kube import JOB, Web, run
from tests.kube_helpers import deployment, eventually
from workflows.models import AttachRequest, CanaryTemplateRequest, DetachRequest, ScaleRequest, WorkloadSnapshot
from workflows.step_requests import HeldPromotionRequest, ShiftRequest

pytestmark = pytest.mark.cluster
NEW = "registry.local/web:2"


@pytest.fixture
def web(kube_api: ApiClient, namespace: str) -> Web:
    return Web(kube_api, namespace)


def _first_step(web: Web, template: dict[str, object], hash_: str, canary: int, stable: int) -> None:
    _passes(web, web.acts.shift_replicas, web.req(ShiftRequest, canary=canary, stable=stable, grow=True,
                                                  template_hash=hash_, prepare=template), errors.CANARY_NOT_READY)


def _set(web: Web, hash_: str) -> client.V1ReplicaSet | None:
    found = web.apps.list_namespaced_replica_set(
        web.ns, field_selector=f"metadata.name={canary_set.set_name('web', hash_)}").items
    return found[0] if found else None


def _canary_deployment(web: Web) -> list[client.V1Deployment]:
    return web.apps.list_namespaced_deployment(web.ns, field_selector="metadata.name=web-canary").items


def test_promotion_gives_the_canary_replica_set_itself_to_the_deployment(web: Web) -> None:
    snap = web.attach()
    template, hash_ = _version(snap, NEW)
    _first_step(web, template, hash_, canary=3, stable=0)
    before = _set(web, hash_)
    assert before is not None and _canary_deployment(web) == []
    pods = {p.metadata.uid for p in web.ready_pods(f"{TRACK_LABEL}=canary")}
    assert len(pods) == 3

    with EndpointWatch(web) as endpoints:
        _promote(web, template, hash_)
    after = _set(web, hash_)
    assert after is not None and after.metadata.uid == before.metadata.uid, "the same ReplicaSet, not a copy"
    [owner] = after.metadata.owner_references
    assert owner.controller and owner.kind == "Deployment" and owner.name == "web"
    assert TRACK_LABEL not in after.metadata.labels and JOB_KEY not in after.spec.template.metadata.labels
    assert {p.metadata.uid for p in web.ready_pods()} == pods, "no pod made or lost"
    assert endpoints.fewest >= 3
    assert [rs.metadata.uid for rs in web.replica_sets()] == [after.metadata.uid]
    # Given back, the Deployment takes that ReplicaSet as its own revision: no rollout.
    d = web.read()
    web.apps.patch_namespaced_deployment("web", web.ns, {"spec": {"paused": False}})
    eventually(lambda: web.read().status.observed_generation > d.metadata.generation, what="the unpause seen")
    assert {p.metadata.uid for p in web.ready_pods()} == pods
    assert [rs.metadata.uid for rs in web.replica_sets()] == [after.metadata.uid]


def test_a_retry_that_lost_its_progress_after_the_transfer_finishes_the_promotion(web: Web) -> None:
    """A worker died right after the transfer, before its heartbeat got out: the next attempt starts over."""
    snap = web.attach()
    template, hash_ = _version(snap, NEW)
    _first_step(web, template, hash_, canary=3, stable=0)
    pods = {p.metadata.uid for p in web.ready_pods(f"{TRACK_LABEL}=canary")}
    request = web.req(HeldPromotionRequest, template=template, template_hash=hash_, replicas=3)

    def halfway(_: object) -> None:
        transfer = Transfer(web.acts, request, Progress({}))
        web.acts._hold(request, template, hash_, 3)
        deployment = web.acts._workload(request)
        for rs in web.acts._replica_sets(request, deployment):
            if rs["metadata"]["name"] != transfer.name:
                web.apps.delete_namespaced_replica_set(rs["metadata"]["name"], web.ns)
        transfer._transfer(deployment)

    run(halfway, None)
    _promote(web, template, hash_)
    assert {p.metadata.uid for p in web.ready_pods()} == pods
    assert web.ready_pods(f"{TRACK_LABEL}=canary") == [], "the labels came off on the retry"


def test_a_rollback_scales_the_canary_replica_set_to_zero(web: Web) -> None:
    snap = web.attach()
    template, hash_ = _version(snap, NEW)
    _first_step(web, template, hash_, canary=2, stable=1)
    assert run(web.acts.read_sides, web.req()).canary == 2

    run(web.acts.scale_stable, web.req(ScaleRequest, replicas=3))
    run(web.acts.scale_canary, web.req(ScaleRequest, replicas=0))
    eventually(lambda: web.ready_pods(f"{TRACK_LABEL}=canary") == [], what="the canary's pods gone")
    found = _set(web, hash_)
    assert found is not None and found.spec.replicas == 0
    assert run(web.acts.read_sides, web.req()).canary == 0
    eventually(lambda: len(web.ready_pods()) == 3, what="3 stable pods")


def test_the_next_version_replaces_the_canary_replica_set(web: Web) -> None:
    """A new release's first step: the old version's canary goes, one canary per job stays."""
    snap = web.attach()
    template, hash_ = _version(snap, NEW)
    _first_step(web, template, hash_, canary=1, stable=2)
    run(web.acts.scale_canary, web.req(ScaleRequest, replicas=0))  # the release interrupted
    newer, newer_hash = _version(snap, "registry.local/web:3")
    _first_step(web, newer, newer_hash, canary=1, stable=2)
    eventually(lambda: _set(web, hash_) is None, what="the old canary ReplicaSet deleted")
    assert [p.spec.containers[0].image for p in web.ready_pods(f"{TRACK_LABEL}=canary")] == ["registry.local/web:3"]
    # A release whose first step does not set the canary up runs it in a Deployment: the set goes.
    run(web.acts.scale_canary, web.req(ScaleRequest, replicas=0))
    run(web.acts.prepare_canary, web.req(CanaryTemplateRequest, template=template, template_hash=hash_))
    eventually(lambda: _set(web, newer_hash) is None, what="the canary ReplicaSet deleted")
    assert len(_canary_deployment(web)) == 1


def test_detach_and_deleting_the_workload_leave_no_canary_replica_set(web: Web) -> None:
    snap = web.attach()
    template, hash_ = _version(snap, NEW)
    _first_step(web, template, hash_, canary=1, stable=2)
    run(web.acts.detach_workload, web.req(DetachRequest, replicas=3, template=snap.template))
    eventually(lambda: _set(web, hash_) is None, what="the canary ReplicaSet deleted on detach")

    snap = web.attach()
    _first_step(web, template, hash_, canary=1, stable=2)
    web.apps.delete_namespaced_deployment("web", web.ns, propagation_policy="Background")
    eventually(lambda: _set(web, hash_) is None, timeout=60, what="the canary garbage-collected with the workload")


def test_a_workload_whose_selector_would_take_a_replica_set_keeps_a_canary_deployment(web: Web) -> None:
    """A selector of expressions only matches the canary ReplicaSet's own labels: the Deployment would adopt it."""
    body = deployment("api", image="registry.local/api:1")
    body["spec"]["selector"] = {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}
    web.apps.create_namespaced_deployment(web.ns, body)
    eventually(lambda: web.read("api").status.ready_replicas == 3, what="3 Ready api pods")
    snap = eventually(lambda: _attached(web, "api"), what="api attached")
    template, hash_ = _version(snap, "registry.local/api:2")
    request = ShiftRequest(namespace=web.ns, name="api", job=JOB, canary=1, stable=2, grow=True,
                           template_hash=hash_, prepare=template)
    _passes(web, web.acts.shift_replicas, request, errors.CANARY_NOT_READY)
    assert web.read("api-canary").spec.replicas == 1
    assert canary_set.list_sets(web.acts, web.ns, JOB) == []


def _attached(web: Web, name: str) -> WorkloadSnapshot | None:
    try:
        return run(web.acts.attach_workload, AttachRequest(namespace=web.ns, name=name, job=JOB))
    except ApplicationError as error:
        if error.type != errors.ROLLOUT_IN_PROGRESS:
            raise
        return None


def test_the_workers_second_informer_keeps_the_canary_replica_set_for_the_waits(web: Web) -> None:
    """It follows the job's canary ReplicaSets by label, until the promotion takes it out of that label."""
    snap = web.attach()
    informer = DeploymentInformer(web.api, None, namespaces=[web.ns], replica_sets=True)
    informer.start()
    try:
        assert informer.synced.wait(10)
        template, hash_ = _version(snap, NEW)
        cached = KubeActivities(web.api, set_cache=informer)
        _passes(web, cached.shift_replicas, web.req(ShiftRequest, canary=3, stable=0, grow=True,
                                                    template_hash=hash_, prepare=template), errors.CANARY_NOT_READY)
        name = canary_set.set_name("web", hash_)
        copy = eventually(lambda: informer.get(web.ns, name), what="the canary ReplicaSet in the informer")
        eventually(lambda: (informer.get(web.ns, name) or {}).get("status", {}).get("readyReplicas") == 3,
                   what="its copy following its status")
        assert copy["metadata"]["labels"][TRACK_LABEL] == "canary"
        _passes(web, cached.promote_held, web.req(HeldPromotionRequest, template=template, template_hash=hash_,
                                                  replicas=3), errors.STABLE_NOT_ROLLED_OUT)
        eventually(lambda: informer.get(web.ns, name) is None, what="the handed-over ReplicaSet out of the informer")
    finally:
        informer.stop()


def test_a_release_costs_the_api_server_no_new_connections(web: Web) -> None:
    """Every answer is read to its end, so its connection goes back to the pool for the next call.

    An answer left unread closes its connection: the next call opened another, a TLS handshake
    and a client certificate check on the API server, eight times per release in a fleet.
    """
    snap = web.attach()
    template, hash_ = _version(snap, NEW)
    pool = web.api.rest_client.pool_manager.connection_from_url(web.api.configuration.host)
    web.read()
    opened = pool.num_connections
    _first_step(web, template, hash_, canary=1, stable=2)
    _passes(web, web.acts.shift_replicas, web.req(ShiftRequest, canary=3, stable=0, grow=True, template_hash=hash_),
            errors.CANARY_NOT_READY)
    _promote(web, template, hash_)
    assert _set(web, hash_) is not None and len(web.ready_pods()) == 3
    assert pool.num_connections == opened, "calls made one after another on one connection"
