"""A whole step in one activity attempt, on the real local cluster: the release's first step sets the canary up."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiClient
from temporalio.exceptions import ApplicationError

from activities import errors
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


def test_the_first_step_creates_the_canary_on_the_new_template_and_shifts(web: Web) -> None:
    snap = web.attach()
    template, hash_ = _new_version(snap)
    first = web.req(ShiftRequest, canary=1, stable=2, grow=True, template_hash=hash_, prepare=template)

    _shift(web, first)
    canary = web.read("web-canary")
    assert canary.spec.replicas == 1 and canary.spec.template.spec.containers[0].image == NEW
    assert web.read().spec.replicas == 2
    assert [p.spec.containers[0].image for p in web.ready_pods("app=web")].count(NEW) == 1

    # Run again (a retry, or the next shift while the template is still to be set): the
    # template is already there, so the canary keeps its pods; the shift itself is redone.
    _shift(web, web.req(ShiftRequest, canary=2, stable=1, grow=True, template_hash=hash_, prepare=template))
    assert web.read("web-canary").spec.replicas == 2 and web.read().spec.replicas == 1
    assert [p.spec.containers[0].image for p in web.ready_pods("app=web")].count(NEW) == 2


def test_a_first_step_refuses_a_canary_deployment_that_another_owner_runs(web: Web) -> None:
    snap = web.attach()
    web.apps.create_namespaced_deployment(web.ns, deployment("web-canary", image="registry.local/other:1"))
    template, hash_ = _new_version(snap)

    error = failure(web.acts.shift_replicas, web.req(ShiftRequest, canary=1, stable=2, grow=True,
                                                     template_hash=hash_, prepare=template))
    assert error.type == errors.OWNED_BY_OTHER_JOB and error.non_retryable
    assert "web-canary" in error.message
    # Nothing moved: the stable side keeps every pod, the other Deployment its image.
    assert web.read().spec.replicas == 3
    assert web.read("web-canary").spec.template.spec.containers[0].image == "registry.local/other:1"


def test_scaling_the_canary_never_touches_a_deployment_another_owner_runs(web: Web) -> None:
    web.attach()
    web.apps.create_namespaced_deployment(web.ns, deployment("web-canary", image="registry.local/other:1"))
    # Scaling down (a failed release coming to rest) leaves it alone; scaling up is refused.
    run(web.acts.scale_canary, web.req(ScaleRequest, replicas=0))
    assert web.read("web-canary").spec.replicas == 3
    error = failure(web.acts.scale_canary, web.req(ScaleRequest, replicas=2))
    assert error.type == errors.OWNED_BY_OTHER_JOB and error.non_retryable and "web-canary" in error.message
    assert web.read("web-canary").spec.replicas == 3
