"""A whole step in one activity attempt, on the real local cluster: the release's first step sets the canary up."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from temporalio.exceptions import ApplicationError

from activities import canary_set, errors
from activities.templates import template_hash
from tests.activities.test_kube import Web, failure, run
from tests.kube_helpers import deployment, eventually
from workflows.models import ScaleRequest, WorkloadSnapshot
from workflows.step_requests import ShiftRequest

pytestmark = pytest.mark.cluster

NEW = "registry.local/web:2"


@pytest.fixture
def web(kube_api: ApiClient, namespace: str) -> Web:
    return Web(kube_api, namespace)


def _shift(web: Web, request: ShiftRequest) -> None:
    """Run the step until it passes, as Temporal retries it (here each try waits only briefly)."""
    def passes() -> bool:
        try:
            run(web.acts.shift_replicas, request)
        except ApplicationError as error:
            if error.type != errors.CANARY_NOT_READY:
                raise
            return False
        return True

    eventually(passes, what=f"the shift to {request.canary} canary pods")


def _new_version(snap: WorkloadSnapshot) -> tuple[dict[str, object], str]:
    template = {**snap.template, "spec": {**snap.template["spec"], "containers": [
        {**snap.template["spec"]["containers"][0], "image": NEW}]}}
    return template, template_hash(template)


def _canary_set(web: Web, hash_: str) -> client.V1ReplicaSet:
    return web.apps.read_namespaced_replica_set(canary_set.set_name("web", hash_), web.ns)


def test_the_first_step_creates_the_canary_on_the_new_template_and_shifts(web: Web) -> None:
    snap = web.attach()
    template, hash_ = _new_version(snap)
    first = web.req(ShiftRequest, canary=1, stable=2, grow=True, template_hash=hash_, prepare=template)

    _shift(web, first)
    canary = _canary_set(web, hash_)
    assert canary.spec.replicas == 1 and canary.spec.template.spec.containers[0].image == NEW
    assert web.read().spec.replicas == 2
    assert [p.spec.containers[0].image for p in web.ready_pods("app=web")].count(NEW) == 1
    # A ReplicaSet of the job's, not a second Deployment; the user's Deployment does not take it.
    assert web.apps.list_namespaced_deployment(web.ns, field_selector="metadata.name=web-canary").items == []
    assert not any(ref.controller for ref in canary.metadata.owner_references or [])
    eventually(lambda: web.read().status.replicas == 2, what="the Deployment counting its own 2 pods only")
    assert not any(ref.controller for ref in _canary_set(web, hash_).metadata.owner_references or [])

    # Run again (a retry, or the next shift while the template is still to be set): the
    # template is already there, so the canary keeps its pods; the shift itself is redone.
    _shift(web, web.req(ShiftRequest, canary=2, stable=1, grow=True, template_hash=hash_, prepare=template))
    assert _canary_set(web, hash_).spec.replicas == 2 and web.read().spec.replicas == 1
    assert [p.spec.containers[0].image for p in web.ready_pods("app=web")].count(NEW) == 2


def test_a_first_step_leaves_a_deployment_named_like_the_old_canary_alone(web: Web) -> None:
    """``web-canary`` of another owner: the canary no longer needs that name, and never touches it."""
    snap = web.attach()
    web.apps.create_namespaced_deployment(web.ns, deployment("web-canary", image="registry.local/other:1"))
    template, hash_ = _new_version(snap)

    _shift(web, web.req(ShiftRequest, canary=1, stable=2, grow=True, template_hash=hash_, prepare=template))
    assert _canary_set(web, hash_).spec.replicas == 1
    other = web.read("web-canary")
    assert other.spec.replicas == 3 and other.spec.template.spec.containers[0].image == "registry.local/other:1"


def test_scaling_the_canary_never_touches_a_deployment_another_owner_runs(web: Web) -> None:
    web.attach()
    web.apps.create_namespaced_deployment(web.ns, deployment("web-canary", image="registry.local/other:1"))
    # Scaling down (a failed release coming to rest) leaves it alone; scaling up is refused.
    run(web.acts.scale_canary, web.req(ScaleRequest, replicas=0))
    assert web.read("web-canary").spec.replicas == 3
    error = failure(web.acts.scale_canary, web.req(ScaleRequest, replicas=2))
    assert error.type == errors.OWNED_BY_OTHER_JOB and error.non_retryable and "web-canary" in error.message
    assert web.read("web-canary").spec.replicas == 3
