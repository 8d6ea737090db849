"""The stable side changes version without a rollout: held paused, emptied, then grown.

These tests pin down the Deployment controller behaviour the promotion relies on (a paused
Deployment scales the one ReplicaSet that has pods, or the one of its template when none has),
on the real local cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.informer import DeploymentInformer
from activities.kube import KubeActivities
from tests.activities.test_kube import Web, failure, run
from tests.kube_helpers import eventually
from workflows.models import (
    HoldStableRequest,
    RolloutRequest,
    StableRevisionRequest,
    WorkloadSnapshot,
    WriteTemplateRequest,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(params=["api-server", "informer"])
def web(request: pytest.FixtureRequest, kube_api: ApiClient, namespace: str) -> Iterator[Web]:
    """Each test twice: reading the API server, and reading the worker's informer as a worker does.

    The informer's copies lag the API server: the writes must still land on the right
    object (a stale copy is a conflict, then a fresh read), and the waits still end.
    """
    web = Web(kube_api, namespace)
    if request.param == "api-server":
        yield web
        return
    informer = DeploymentInformer(kube_api, lambda *_: None, namespaces=[namespace])
    informer.start()
    try:
        assert informer.synced.wait(10), "the informer listed the namespace"
        web.acts = KubeActivities(kube_api, cache=informer)
        yield web
    finally:
        informer.stop()


def _images_of_ready_pods(web: Web) -> list[str]:
    return sorted(p.spec.containers[0].image for p in web.ready_pods("app=web"))


def _edit(web: Web, snap: WorkloadSnapshot, image: str) -> WorkloadSnapshot:
    template = {**snap.template, "spec": {**snap.template["spec"],
                                          "containers": [{**snap.template["spec"]["containers"][0], "image": image}]}}
    result: WorkloadSnapshot = run(web.acts.write_template, web.req(WriteTemplateRequest, template=template))
    return result


def _held(web: Web, snap: WorkloadSnapshot, replicas: int) -> bool:
    try:
        run(web.acts.wait_stable_rolled_out, web.req(RolloutRequest, replicas=replicas,
                                                      template_hash=snap.template_hash, held=True))
    except ApplicationError as error:
        raise AssertionError(error.message) from error
    return True


def test_a_held_deployment_changes_version_without_unpausing_at_full_size(web: Web) -> None:
    old = web.attach()
    new = _edit(web, old, "registry.local/web:2")
    fields = {"template": new.template, "template_hash": new.template_hash}

    first = run(web.acts.prepare_stable, web.req(StableRevisionRequest, **fields))
    assert first.displaced is None
    assert web.read().spec.paused and web.read().spec.replicas == 0
    # Retried, it finds its work done.
    assert run(web.acts.prepare_stable, web.req(StableRevisionRequest, **fields)).displaced is None

    run(web.acts.hold_stable, web.req(HoldStableRequest, replicas=3, **fields))
    eventually(lambda: _held(web, new, 3), what="3 available pods of the new revision")
    assert web.read().spec.paused
    assert _images_of_ready_pods(web) == ["registry.local/web:2"] * 3


def test_an_edit_found_while_holding_is_set_aside_and_never_runs(web: Web) -> None:
    old = web.attach()
    new = _edit(web, old, "registry.local/web:2")
    fields = {"template": new.template, "template_hash": new.template_hash}
    run(web.acts.prepare_stable, web.req(StableRevisionRequest, **fields))
    # The user edits the (paused, empty) Deployment before it grows again.
    edit = _edit(web, new, "registry.local/web:3")

    held = run(web.acts.hold_stable, web.req(HoldStableRequest, replicas=3, **fields))
    assert held.displaced is not None and held.displaced.template_hash == edit.template_hash
    eventually(lambda: _held(web, new, 3), what="the new revision, not the edit, on the pods")
    assert "registry.local/web:3" not in _images_of_ready_pods(web)


def test_holding_goes_back_to_an_older_revision_without_a_rollout(web: Web) -> None:
    old = web.attach()
    new = _edit(web, old, "registry.local/web:2")
    for snap in (new, old):  # promote, then put the old version back, as a failed promotion does
        fields = {"template": snap.template, "template_hash": snap.template_hash}
        run(web.acts.prepare_stable, web.req(StableRevisionRequest, **fields))
        run(web.acts.hold_stable, web.req(HoldStableRequest, replicas=3, **fields))
        eventually(lambda snap=snap: _held(web, snap, 3), what=f"revision {snap.images['app']} held")
    assert _images_of_ready_pods(web) == ["registry.local/web:1"] * 3
    assert web.read().spec.paused


def test_held_rollout_check_names_what_is_missing(web: Web) -> None:
    old = web.attach()
    new = _edit(web, old, "registry.local/web:2")
    error = failure(web.acts.wait_stable_rolled_out, web.req(
        RolloutRequest, replicas=3, template_hash=new.template_hash, held=True))
    assert error.type == errors.STABLE_NOT_ROLLED_OUT
    assert "no ReplicaSet for revision" in error.message
