"""``grow_stable`` (``dynamicStableScale``) on the real local cluster: stable grown, its own pods counted.

Mid-release the user's Deployment is paused holding the canary's template while its pods run
the stable version; the activity must count only those pods, so the route is not sent back to
stable before they serve.
"""

from __future__ import annotations

import pytest
from kubernetes.client import ApiClient
from temporalio.exceptions import ApplicationError

from activities import errors
from tests.activities.test_held_stable import _edit, _images_of_ready_pods
from tests.activities.test_kube import Web, failure, run
from tests.kube_helpers import eventually
from workflows.models import ScaleRequest, WorkloadSnapshot
from workflows.step_requests import GrowStableRequest

pytestmark = pytest.mark.cluster


@pytest.fixture
def web(kube_api: ApiClient, namespace: str) -> Web:
    return Web(kube_api, namespace)


def _grown(web: Web, stable: WorkloadSnapshot, held: WorkloadSnapshot, replicas: int) -> bool:
    """One attempt, as a retry on another worker would make it: the write again, then the check."""
    try:
        run(web.acts.grow_stable, web.req(GrowStableRequest, replicas=replicas, template_hash=stable.template_hash,
                                          known_hash=held.template_hash))
    except ApplicationError as error:
        if error.type != errors.STABLE_NOT_ROLLED_OUT:
            raise
        return False
    return True


def test_stable_grows_back_and_only_its_own_pods_count(web: Web) -> None:
    stable = web.attach()
    held = _edit(web, stable, "registry.local/web:2")  # paused: the template changes, the pods do not
    run(web.acts.scale_stable, web.req(ScaleRequest, replicas=1, known_hash=held.template_hash))
    eventually(lambda: len(web.ready_pods()) == 1, what="stable shrunk to 1 pod")

    eventually(lambda: _grown(web, stable, held, 3), what="3 stable pods available")
    deployment = web.read()
    assert deployment.spec.paused and deployment.spec.replicas == 3
    assert _images_of_ready_pods(web) == ["registry.local/web:1"] * 3

    # The template the paused Deployment holds is not a version any pod runs: never "available".
    error = failure(web.acts.grow_stable, web.req(GrowStableRequest, replicas=3, template_hash=held.template_hash,
                                                   known_hash=held.template_hash))
    assert error.type == errors.STABLE_NOT_ROLLED_OUT and "no ReplicaSet for revision" in error.message
