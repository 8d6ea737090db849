"""The Kubernetes activities against the real local cluster.

Covers: attach (pause, annotate, pods keep serving, missing and foreign Deployments), edits of
a paused Deployment, the canary Deployment (ready gate, Service endpoints, crash diagnosis),
promotion of the stable side, set_image validation, and detach.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import errors
from activities.kube import KubeActivities
from activities.templates import HASH_ANNOTATION, JOB_KEY, TRACK_LABEL, template_hash
from devenv.cluster import READY_DELAY_ANNOTATION, SIMULATE_LABEL
from tests.kube_helpers import deployment, eventually, service
from workflows.models import (
    AttachRequest,
    CanaryTemplateRequest,
    DetachRequest,
    PromoteRequest,
    ReadyRequest,
    RolloutRequest,
    ScaleRequest,
    SetImageRequest,
    WorkloadRequest,
    WorkloadSnapshot,
    WriteTemplateRequest,
)

pytestmark = pytest.mark.cluster
R = TypeVar("R")
JOB = "job-a"


def run(fn: Callable[[Any], R], request: Any) -> R:
    return ActivityEnvironment().run(fn, request)


def failure(fn: Callable[[Any], Any], request: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        run(fn, request)
    return info.value


class Web:
    """The workload under test: Deployment and Service ``web`` with 3 Ready pods."""

    def __init__(self, api: ApiClient, namespace: str, *, image: str = "registry.local/web:1") -> None:
        self.ns, self.api = namespace, api
        self.apps, self.core = client.AppsV1Api(api), client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.acts = KubeActivities(api)
        self.apps.create_namespaced_deployment(namespace, deployment("web", image=image))
        self.core.create_namespaced_service(namespace, service("web", selector={"app": "web"}))
        eventually(lambda: len(self.ready_pods()) == 3, what="3 Ready web pods")

    def req(self, cls: type[R] = WorkloadRequest, **fields: Any) -> R:  # type: ignore[assignment]
        return cls(namespace=self.ns, name="web", job=JOB, **fields)

    def read(self, name: str = "web") -> client.V1Deployment:
        return self.apps.read_namespaced_deployment(name, self.ns)

    def ready_pods(self, selector: str = "app=web") -> list[client.V1Pod]:
        return [p for p in self.core.list_namespaced_pod(self.ns, label_selector=selector).items
                if p.metadata.deletion_timestamp is None
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]

    def replica_sets(self) -> list[client.V1ReplicaSet]:
        return [rs for rs in self.apps.list_namespaced_replica_set(self.ns).items
                if rs.metadata.owner_references and rs.metadata.owner_references[0].name == "web"]

    def ready_endpoints(self) -> int:
        slices = self.discovery.list_namespaced_endpoint_slice(
            self.ns, label_selector="kubernetes.io/service-name=web").items
        return sum(len(e.addresses) for s in slices for e in s.endpoints or [] if e.conditions.ready)

    def attach(self) -> WorkloadSnapshot:
        """Attach as the job does: retried while the Deployment's own rollout is under way."""
        return eventually(lambda: _attached_or_none(self), timeout=30, interval=0.2, what="the attach")

    def start_canary(self, snap: WorkloadSnapshot, replicas: int = 1) -> None:
        run(self.acts.prepare_canary, self.req(CanaryTemplateRequest, template=snap.template,
                                               template_hash=snap.template_hash))
        run(self.acts.scale_canary, self.req(ScaleRequest, replicas=replicas))


@pytest.fixture
def web(kube_api: ApiClient, namespace: str) -> Web:
    return Web(kube_api, namespace)


def test_attach_pauses_and_annotates_and_the_pods_keep_serving(web: Web) -> None:
    pods_before = {p.metadata.name for p in web.ready_pods()}
    snap = web.attach()
    d = web.read()
    assert d.spec.paused is True
    assert d.metadata.annotations[JOB_KEY] == JOB
    assert snap.replicas == 3 and snap.images == {"app": "registry.local/web:1"}
    # The hash of the client's own (sanitized) view of the template is the same.
    assert snap.template_hash == template_hash(web.api.sanitize_for_serialization(d.spec.template))
    assert int(snap.resource_version) <= int(d.metadata.resource_version)
    time.sleep(1)
    assert {p.metadata.name for p in web.ready_pods()} == pods_before
    eventually(lambda: web.ready_endpoints() == 3, what="3 ready endpoints")
    generation = web.read().metadata.generation
    again = web.attach()
    assert again.template_hash == snap.template_hash
    assert web.read().metadata.generation == generation, "a second attach changes nothing"


def test_attach_waits_for_a_rollout_in_progress_to_finish(web: Web) -> None:
    # Paused mid-rollout, the old version would keep serving beside the new one under a job that
    # takes the new template for stable: the attach is refused (retryably) until the rollout ends.
    web.apps.patch_namespaced_deployment("web", web.ns, {"spec": {"template": {
        "metadata": {"annotations": {READY_DELAY_ANNOTATION: "3s"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/web:2"}]}}}})
    error = failure(web.acts.attach_workload, web.req(AttachRequest))
    assert error.type == errors.ROLLOUT_IN_PROGRESS and not error.non_retryable
    assert "rolling out" in error.message and "takes it over when the rollout completes" in error.message
    assert not web.read().spec.paused
    snap = eventually(lambda: _attached_or_none(web), timeout=60, interval=0.5, what="the attach after the rollout")
    assert snap.images == {"app": "registry.local/web:2"}
    assert {p.spec.containers[0].image for p in web.ready_pods()} == {"registry.local/web:2"}


def _attached_or_none(web: Web) -> WorkloadSnapshot | None:
    try:
        return run(web.acts.attach_workload, web.req(AttachRequest))
    except ApplicationError as error:
        assert error.type == errors.ROLLOUT_IN_PROGRESS, error
        return None


def test_attach_of_a_missing_deployment_is_workload_not_found(web: Web) -> None:
    error = failure(web.acts.attach_workload, AttachRequest(namespace=web.ns, name="nope", job=JOB))
    assert error.type == errors.WORKLOAD_NOT_FOUND and error.non_retryable
    assert f"{web.ns}/nope" in error.message


def test_attach_of_a_deployment_held_by_another_job_is_refused(web: Web) -> None:
    web.apps.patch_namespaced_deployment("web", web.ns, {"metadata": {"annotations": {JOB_KEY: "job-b"}}})
    error = failure(web.acts.attach_workload, web.req(AttachRequest))
    assert error.type == errors.OWNED_BY_OTHER_JOB and error.non_retryable
    assert "job-b" in error.message
    assert not web.read().spec.paused


def test_editing_a_paused_deployment_changes_the_hash_but_rolls_nothing_out(web: Web) -> None:
    before = web.attach()
    after = run(web.acts.set_image, web.req(SetImageRequest, image="registry.local/web:2"))
    assert after.template_hash != before.template_hash
    assert after.images == {"app": "registry.local/web:2"}
    # resourceVersion moves on with the controller's status updates; the rest must match.
    current = run(web.acts.inspect_workload, web.req())
    assert current.model_dump(exclude={"resource_version"}) == after.model_dump(exclude={"resource_version"})
    # A paused Deployment still scales the ReplicaSet it runs.
    run(web.acts.scale_stable, web.req(ScaleRequest, replicas=4))
    eventually(lambda: len(web.ready_pods()) == 4, what="4 Ready pods after scaling the paused Deployment")
    time.sleep(1)
    assert len(web.replica_sets()) == 1
    assert {p.spec.containers[0].image for p in web.ready_pods()} == {"registry.local/web:1"}


def test_canary_becomes_ready_and_the_service_serves_both_tracks(web: Web) -> None:
    web.attach()
    snap = run(web.acts.set_image, web.req(SetImageRequest, image="registry.local/web:2"))
    run(web.acts.prepare_canary, web.req(CanaryTemplateRequest, template=snap.template,
                                         template_hash=snap.template_hash))
    canary = web.read("web-canary")
    assert canary.spec.replicas == 0
    assert canary.metadata.labels[JOB_KEY] == JOB
    assert canary.metadata.annotations[HASH_ANNOTATION] == snap.template_hash
    assert canary.spec.selector.match_labels == {"app": "web", TRACK_LABEL: "canary"}
    owner = canary.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == ("Deployment", "web", web.read().metadata.uid)
    assert not owner.controller, "a controller reference would make the two Deployments fight"
    ready = web.req(ReadyRequest, replicas=1, template_hash=snap.template_hash)
    assert failure(web.acts.wait_canary_ready, ready).type == errors.CANARY_NOT_READY

    run(web.acts.scale_canary, web.req(ScaleRequest, replicas=1))
    run(web.acts.prepare_canary, web.req(CanaryTemplateRequest, template=snap.template,
                                         template_hash=snap.template_hash))
    assert web.read("web-canary").spec.replicas == 1, "preparing the same version again keeps replicas"

    def canary_ready() -> bool:
        try:
            run(web.acts.wait_canary_ready, ready)
        except ApplicationError as error:
            assert error.type == errors.CANARY_NOT_READY and not error.non_retryable
            raise AssertionError(error.message) from error
        return True

    eventually(canary_ready, what="wait_canary_ready to pass")
    canary_pods = web.ready_pods(f"app=web,{TRACK_LABEL}=canary")
    assert [p.spec.containers[0].image for p in canary_pods] == ["registry.local/web:2"]
    eventually(lambda: web.ready_endpoints() == 4, what="4 ready endpoints: 3 stable + 1 canary")
    assert len(web.ready_pods()) == 4
    # The selectors overlap, but each Deployment only counts the ReplicaSets it controls.
    assert web.read().status.replicas == 3 and web.read("web-canary").status.replicas == 1

    run(web.acts.scale_canary, web.req(ScaleRequest, replicas=0))
    gone = web.req(ReadyRequest, replicas=0, template_hash=snap.template_hash)
    eventually(lambda: canary_ready_for(web, gone), what="the canary to have no pods")
    eventually(lambda: web.ready_endpoints() == 3, what="3 ready endpoints again")


def canary_ready_for(web: Web, request: ReadyRequest) -> bool:
    try:
        run(web.acts.wait_canary_ready, request)
    except ApplicationError as error:
        raise AssertionError(error.message) from error
    return True


def test_a_crashing_canary_is_not_ready_and_says_why(web: Web) -> None:
    snap = web.attach()
    template = {**snap.template, "metadata": {**snap.template["metadata"],
                                              "labels": {"app": "web", SIMULATE_LABEL: "crash"}}}
    crash = run(web.acts.write_template, web.req(WriteTemplateRequest, template=template))
    assert crash.template["metadata"]["labels"][SIMULATE_LABEL] == "crash"
    web.start_canary(crash)
    ready = web.req(ReadyRequest, replicas=1, template_hash=crash.template_hash)

    def reports_crash() -> str:
        error = failure(web.acts.wait_canary_ready, ready)
        assert error.type == errors.CANARY_NOT_READY
        assert "CrashLoopBackOff" in error.message, error.message
        return error.message

    message = eventually(reports_crash, what="CanaryNotReady naming CrashLoopBackOff")
    assert "0 of 1 canary pods" in message and "pod web-canary-" in message
    assert len(web.ready_pods()) == 3, "the stable pods are untouched"


def test_promote_rolls_the_new_template_out_on_the_stable_deployment(web: Web) -> None:
    web.attach()
    snap = run(web.acts.set_image, web.req(SetImageRequest, image="registry.local/web:2"))
    rolled = web.req(RolloutRequest, replicas=3, template_hash=snap.template_hash)
    not_yet = failure(web.acts.wait_stable_rolled_out, rolled)
    assert not_yet.type == errors.STABLE_NOT_ROLLED_OUT and not not_yet.non_retryable
    assert "paused" in not_yet.message

    run(web.acts.promote_stable, web.req(PromoteRequest, replicas=3))
    assert not web.read().spec.paused

    def rolled_out() -> bool:
        try:
            run(web.acts.wait_stable_rolled_out, rolled)
        except ApplicationError as error:
            raise AssertionError(error.message) from error
        return True

    eventually(rolled_out, timeout=60, what="the stable rollout")
    run(web.acts.pause_stable, web.req())
    assert web.read().spec.paused is True
    assert {p.spec.containers[0].image for p in web.ready_pods()} == {"registry.local/web:2"}
    assert len(web.ready_pods()) == 3
    assert [rs.spec.replicas for rs in web.replica_sets() if rs.spec.replicas] == [3]
    wrong = web.req(RolloutRequest, replicas=3, template_hash="000000000000")
    assert "not 000000000000" in failure(web.acts.wait_stable_rolled_out, wrong).message


def test_set_image_refuses_unknown_containers_and_bad_images(web: Web) -> None:
    web.attach()
    unknown = failure(web.acts.set_image,
                      web.req(SetImageRequest, image="registry.local/web:2", container="db"))
    assert unknown.type == errors.INVALID_REQUEST and unknown.non_retryable
    assert "'db'" in unknown.message and "app" in unknown.message
    bad = failure(web.acts.set_image, web.req(SetImageRequest, image="registry.local/Web:2"))
    assert bad.type == errors.INVALID_REQUEST and "lowercase" in bad.message
    named = run(web.acts.set_image, web.req(SetImageRequest, image="registry.local/web:3", container="app"))
    assert named.images == {"app": "registry.local/web:3"}


def test_write_template_replaces_the_whole_template(web: Web) -> None:
    snap = web.attach()
    labelled = {**snap.template, "metadata": {"labels": {"app": "web", "extra": "yes"}}}
    with_extra = run(web.acts.write_template, web.req(WriteTemplateRequest, template=labelled))
    assert with_extra.template["metadata"]["labels"] == {"app": "web", "extra": "yes"}
    back = run(web.acts.write_template, web.req(WriteTemplateRequest, template=snap.template))
    assert back.template == snap.template and back.template_hash == snap.template_hash


def test_detach_gives_the_deployment_back(web: Web) -> None:
    original = web.attach()
    snap = run(web.acts.set_image, web.req(SetImageRequest, image="registry.local/web:2"))
    web.start_canary(snap)
    eventually(lambda: len(web.ready_pods(f"{TRACK_LABEL}=canary")) == 1, what="a Ready canary pod")
    run(web.acts.scale_stable, web.req(ScaleRequest, replicas=2))

    detach = web.req(DetachRequest, template=original.template, replicas=3)
    run(web.acts.detach_workload, detach)
    run(web.acts.detach_workload, detach)  # idempotent
    d = web.read()
    assert not d.spec.paused and d.spec.replicas == 3
    assert JOB_KEY not in (d.metadata.annotations or {})
    assert run(web.acts.inspect_workload, web.req()).template_hash == original.template_hash
    assert web.apps.list_namespaced_deployment(web.ns, field_selector="metadata.name=web-canary").items == []
    eventually(lambda: not web.ready_pods(f"{TRACK_LABEL}=canary") and len(web.ready_pods()) == 3,
               what="3 stable pods and no canary pod")
    assert len(web.replica_sets()) == 1, "writing back the running template rolls nothing out"

    # Given back, the Deployment rolls out an edit by itself again.
    web.apps.patch_namespaced_deployment("web", web.ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "registry.local/web:9"}]}}}})
    eventually(lambda: {p.spec.containers[0].image for p in web.ready_pods()} == {"registry.local/web:9"}
               and len(web.ready_pods()) == 3, timeout=60, what="a normal rollout after detach")


def test_detach_of_a_deleted_deployment_still_removes_the_canary(web: Web) -> None:
    snap = web.attach()
    web.start_canary(snap)
    web.apps.delete_namespaced_deployment("web", web.ns, propagation_policy="Orphan")
    assert web.read("web-canary") is not None  # orphaned: no garbage collector took it
    run(web.acts.detach_workload, web.req(DetachRequest, template=None, replicas=3))
    names = [d.metadata.name for d in web.apps.list_namespaced_deployment(web.ns).items
             if d.metadata.deletion_timestamp is None]
    assert names == []
