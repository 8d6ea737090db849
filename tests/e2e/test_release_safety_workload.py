"""The job outlives its Deployment: a deleted Deployment parks it, a re-created one is taken
over again, and jobs whose names run together with their namespaces never share a workflow."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiClient
from temporalio.client import Client, WorkflowExecutionStatus

from devenv.cluster import READY_DELAY_ANNOTATION
from starter import client as canary
from starter.errors import CanaryError, Conflict
from tests.e2e.conftest import Shop, until
from tests.kube_helpers import deployment
from workflows import names
from workflows.models import JobDetails, OperationRequest, Phase
from workflows.spec import legacy_workflow_id, workflow_id

pytestmark = pytest.mark.cluster
STABLE = "registry.local/web:1"
JOB_ANNOTATION = "canary-delivery.dev/job"


def delete_deployment(shop: Shop) -> None:
    shop.apps.delete_namespaced_deployment("web", shop.namespace)


def recreate_deployment(shop: Shop) -> None:
    """The same Deployment applied again (GitOps, a re-run pipeline): same name, same version."""
    shop.apps.create_namespaced_deployment(shop.namespace, deployment("web", image=STABLE, replicas=4))


def taken_over(shop: Shop) -> bool:
    try:
        workload = shop.workload()
    except k8s.exceptions.ApiException as error:
        if error.status == 404:
            return False
        raise
    return bool(workload.spec.paused) and (workload.metadata.annotations or {}).get(JOB_ANNOTATION) == "web"


async def test_a_deleted_deployment_parks_the_job_instead_of_killing_it(shop: Shop) -> None:
    await shop.attach()
    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == Phase.PAUSED, "the gate")
    delete_deployment(shop)

    missing = await shop.wait(lambda d: d.phase == Phase.WORKLOAD_MISSING, "the job noticing the deletion")
    assert missing.last_error is not None and "web" in missing.last_error, missing.last_error
    with pytest.raises(CanaryError) as refused:
        await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
    assert isinstance(refused.value, Conflict), refused.value
    description = await shop.temporal.get_workflow_handle(workflow_id(shop.namespace, "web")).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    versions = await canary.versions(shop.temporal, shop.namespace, "web")
    assert versions.stable is not None and versions.stable.images == {"app": STABLE}
    assert (await shop.details()).phase == Phase.WORKLOAD_MISSING

    recreate_deployment(shop)
    await until(lambda: asyncio.to_thread(taken_over, shop), bool, "the re-created Deployment taken over",
                timeout=120)
    back = await shop.wait(lambda d: d.phase != Phase.WORKLOAD_MISSING, "the job back at work")
    assert back.phase not in (Phase.FAILED, Phase.ERROR), back


async def test_a_recreated_deployment_is_taken_over_again(shop: Shop) -> None:
    await shop.attach()
    delete_deployment(shop)
    await shop.wait(lambda d: d.phase == Phase.WORKLOAD_MISSING or any(
        e.kind == "workload-deleted" for e in d.events), "the job noticing the deletion")

    recreate_deployment(shop)
    await until(lambda: asyncio.to_thread(taken_over, shop), bool, "the re-created Deployment annotated and paused",
                timeout=120)
    healthy = await shop.wait(lambda d: d.phase == Phase.HEALTHY, "healthy again")
    assert healthy.stable is not None
    workload = shop.workload()
    assert {c.name: c.image for c in workload.spec.template.spec.containers} == healthy.stable.images

    with pytest.raises(CanaryError, match="belongs to canary job 'web'"):
        await canary.apply_job(shop.temporal, shop.spec(name="web-two"))
    assert shop.workload().metadata.annotations[JOB_ANNOTATION] == "web"


async def test_jobs_whose_ids_used_to_collide_run_side_by_side(temporal: Client, kube_api: ApiClient) -> None:
    # Namespace "<p>-b" with job "c" and namespace "<p>" with job "b-c": both were canary-<p>-b-c.
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    pairs = [(f"{prefix}-b", "c"), (prefix, "b-c")]
    core = k8s.CoreV1Api(kube_api)
    shops = []
    for namespace, _ in pairs:
        core.create_namespace({"metadata": {"name": namespace}})
        shops.append(Shop(temporal, kube_api, namespace))
    try:
        for shop, (namespace, job) in zip(shops, pairs, strict=True):
            shop.create_workload()
            await canary.apply_job(temporal, shop.spec(name=job))
        assert len({legacy_workflow_id(namespace, job) for namespace, job in pairs}) == 1  # the old clash
        assert len({workflow_id(namespace, job) for namespace, job in pairs}) == 2

        async def both() -> list[JobDetails]:
            return [await canary.details(temporal, namespace, job) for namespace, job in pairs]

        attached = await until(both, lambda ds: all(d.phase == Phase.HEALTHY for d in ds), "both jobs attached")
        assert [(d.namespace, d.name) for d in attached] == pairs
        for n, shop in enumerate(shops):
            shop.set_image(f"registry.local/web:side-{n}")
        paused = await until(both, lambda ds: all(d.phase == Phase.PAUSED for d in ds), "both releases at the gate")
        assert [d.canary.images["app"] if d.canary else None for d in paused] == [
            "registry.local/web:side-0", "registry.local/web:side-1"]
        for shop in shops:
            assert shop.canary_replicas() == 1
        # An operation on one job leaves the other alone.
        (first_ns, first_job), (second_ns, second_job) = pairs
        await canary.operate(temporal, first_ns, first_job, names.TERMINATE, OperationRequest(actor="e2e"))
        await until(lambda: canary.details(temporal, first_ns, first_job), lambda d: d.phase == Phase.TERMINATED,
                    f"{first_ns}/{first_job} terminated")
        other = await canary.details(temporal, second_ns, second_job)
        assert other.phase == Phase.PAUSED and shops[1].canary_replicas() == 1
    finally:
        for namespace, job in pairs:
            try:
                await temporal.get_workflow_handle(workflow_id(namespace, job)).terminate("test over")
            except Exception:
                pass
            core.delete_namespace(namespace)


async def test_a_release_whose_canary_runs_in_a_replica_set_leaves_a_deployment_of_its_old_name_alone(
        shop: Shop) -> None:
    """The first step sets the canary up as a ReplicaSet: ``web-canary`` of another owner is in nobody's way."""
    await shop.attach(steps=[{"setWeight": 25}, {"setWeight": 100}])
    shop.apps.create_namespaced_deployment(shop.namespace, deployment("web-canary", image="registry.local/other:1",
                                                                      replicas=1))
    shop.set_image("registry.local/web:2")
    done = await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                           and d.stable.images == {"app": "registry.local/web:2"}, "the release promoted")
    assert done.last_error is None
    other = shop.apps.read_namespaced_deployment("web-canary", shop.namespace)
    assert other.spec.replicas == 1 and other.spec.template.spec.containers[0].image == "registry.local/other:1"


async def test_a_foreign_canary_deployment_fails_the_release_before_its_first_step_and_touches_nothing(
        shop: Shop) -> None:
    # A first step that does not set the canary up: the release runs it in ``web-canary``.
    await shop.attach(steps=[{"pause": {"duration": "0s"}}, {"setWeight": 25}, {"setWeight": 100}])
    # Someone else's Deployment under the canary's name (not made by this job).
    shop.apps.create_namespaced_deployment(shop.namespace, deployment("web-canary", image="registry.local/other:1",
                                                                      replicas=1))
    shop.set_image("registry.local/web:2")

    failed = await shop.wait(lambda d: d.phase == Phase.FAILED, "the release refused")
    assert failed.last_error is not None and "web-canary" in failed.last_error, failed.last_error
    assert "not managed by canary job" in failed.last_error, failed.last_error
    assert [step.status.value for step in failed.steps] == ["skipped"] * 3, "no step ran"
    # The stable side still runs every replica of the old version; the other Deployment is as it was.
    assert shop.apps.read_namespaced_deployment("web", shop.namespace).spec.replicas == 4
    assert await asyncio.to_thread(shop.own_images) == [STABLE] * 4
    other = shop.apps.read_namespaced_deployment("web-canary", shop.namespace)
    assert other.spec.replicas == 1 and other.spec.template.spec.containers[0].image == "registry.local/other:1"


async def test_terminate_while_the_first_step_sets_up_the_canary_leaves_stable_serving(shop: Shop) -> None:
    await shop.attach(steps=[{"setWeight": 50}, {"pause": {}}])
    # Pods slow to become Ready: terminate lands while the first step waits for them.
    shop.set_image("registry.local/web:2", annotations={READY_DELAY_ANNOTATION: "3s"})
    await until(lambda: asyncio.to_thread(shop.canary_replicas), lambda n: n > 0, "the canary's pods requested")
    await canary.operate(shop.temporal, shop.namespace, "web", names.TERMINATE, OperationRequest(actor="e2e"))

    ended = await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated")
    assert ended.canary is None or ended.canary.outcome is not None
    await until(lambda: asyncio.to_thread(lambda: (shop.canary_replicas(), shop.own_images())),
                lambda seen: seen == (0, [STABLE] * 4), "stable back at 4 pods of the old version, no canary")
