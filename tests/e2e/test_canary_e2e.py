"""Canary releases end to end: dev server, worker, real cluster, the client the CLI uses."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from devenv.cluster import SIMULATE_LABEL
from starter import client as canary
from starter.errors import CanaryError
from tests.e2e.conftest import Shop, until
from workflows import names
from workflows.models import (
    OperationRequest,
    Outcome,
    Phase,
    RollbackRequest,
    StepStatus,
    Trigger,
    UpdateRulesRequest,
    UpdateVersionRequest,
)
from workflows.spec import workflow_id

pytestmark = pytest.mark.cluster
HISTORIES = Path(__file__).resolve().parents[1] / "histories"


async def record_history(shop: Shop, name: str) -> None:
    """Keep this run's history for the replay test (RECORD_HISTORIES=1): the watch path included."""
    if os.environ.get("RECORD_HISTORIES"):
        history = await shop.temporal.get_workflow_handle(workflow_id(shop.namespace, "web")).fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_edit_is_delivered_as_a_canary_and_promoted(shop: Shop) -> None:
    attached = await shop.attach()
    assert attached.stable is not None and attached.stable.images == {"app": "registry.local/web:1"}
    workload = shop.workload()
    assert workload.spec.paused is True
    assert workload.metadata.annotations["canary-delivery.dev/job"] == "web"
    # The canary's pods (same version now) leave the Service moments after the job scaled it to zero.
    await until(lambda: asyncio.to_thread(shop.ready_images), lambda images: images == ["registry.local/web:1"] * 4,
                "web:1 on the 4 stable pods alone", timeout=30)

    shop.set_image("registry.local/web:2")
    paused = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "first pause")
    assert paused.canary is not None and paused.canary.trigger == Trigger.EDIT
    # 25 % of 4 replicas: one canary pod beside three stable ones, all behind the Service.
    assert shop.ready_images() == ["registry.local/web:1"] * 3 + ["registry.local/web:2"]
    assert len(shop.pods("canary")) == 1
    await until(lambda: asyncio.to_thread(shop.endpoint_count), lambda n: n == 4, "4 ready endpoints")

    await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
    done = await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                           "promotion")
    assert all(s.status == StepStatus.SUCCEEDED for s in done.steps)
    # The canary's pods (same version now) leave the Service moments after the job scaled it to zero.
    await until(lambda: asyncio.to_thread(shop.ready_images), lambda images: images == ["registry.local/web:2"] * 4,
                "web:2 on the 4 stable pods alone", timeout=30)
    assert shop.pods("canary") == []
    workload = shop.workload()
    assert workload.spec.paused is True and workload.spec.replicas == 4
    versions = await canary.versions(shop.temporal, shop.namespace, "web")
    assert [(v.revision, v.outcome) for v in versions.history] == [(2, Outcome.PROMOTED), (1, Outcome.PROMOTED)]
    await record_history(shop, "e2e-release-with-watch")


async def test_a_crashing_canary_is_rolled_back_automatically(shop: Shop) -> None:
    await shop.attach(progressDeadline="5s")
    shop.set_image("registry.local/web:bad", labels={SIMULATE_LABEL: "crash"})
    failed = await shop.wait(lambda d: d.phase == Phase.FAILED, "automatic rollback")
    assert failed.last_error is not None and "CrashLoopBackOff" in failed.last_error
    # The canary was scaled to zero before the job said failed; its pods go as the controller acts.
    await until(lambda: asyncio.to_thread(shop.pods, "canary"), lambda pods: pods == [], "no canary pods")
    # The canary's pods (same version now) leave the Service moments after the job scaled it to zero.
    await until(lambda: asyncio.to_thread(shop.ready_images), lambda images: images == ["registry.local/web:1"] * 4,
                "web:1 on the 4 stable pods alone", timeout=30)
    assert shop.workload().spec.replicas == 4


async def test_terminate_returns_all_traffic_to_stable(shop: Shop) -> None:
    await shop.attach()
    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == Phase.PAUSED, "pause")
    result = await canary.operate(shop.temporal, shop.namespace, "web", names.TERMINATE,
                                  OperationRequest(reason="latency", actor="e2e"))
    assert "terminating" in result.message
    done = await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated")
    assert done.canary is None
    await until(lambda: asyncio.to_thread(shop.ready_images), lambda images: images == ["registry.local/web:1"] * 4,
                "stable only")
    with pytest.raises(CanaryError, match="no release is running"):
        await canary.operate(shop.temporal, shop.namespace, "web", names.TERMINATE, OperationRequest())


async def test_update_version_promote_and_rollback_to_a_historical_version(shop: Shop) -> None:
    await shop.attach()
    with pytest.raises(CanaryError, match="must be lowercase"):
        await canary.operate(shop.temporal, shop.namespace, "web", names.UPDATE_VERSION,
                             UpdateVersionRequest(image="registry.local/Web:2"))
    await canary.operate(shop.temporal, shop.namespace, "web", names.UPDATE_VERSION,
                         UpdateVersionRequest(image="registry.local/web:2"))
    paused = await shop.wait(lambda d: d.phase == Phase.PAUSED, "release of the new image")
    assert paused.canary is not None and paused.canary.trigger == Trigger.UPDATE_VERSION
    assert shop.workload().spec.template.spec.containers[0].image == "registry.local/web:2"
    await canary.operate(shop.temporal, shop.namespace, "web", names.PROMOTE, OperationRequest())
    await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable.revision == 2, "promoted")
    # The canary's pods (same version now) leave the Service moments after the job scaled it to zero.
    await until(lambda: asyncio.to_thread(shop.ready_images), lambda images: images == ["registry.local/web:2"] * 4,
                "web:2 on the 4 stable pods alone", timeout=30)

    with pytest.raises(CanaryError, match="unknown revision 7"):
        await canary.operate(shop.temporal, shop.namespace, "web", names.ROLLBACK, RollbackRequest(revision=7))
    await canary.operate(shop.temporal, shop.namespace, "web", names.ROLLBACK,
                         RollbackRequest(revision=1, skip_steps=True))
    back = await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable.revision == 3, "fast rollback")
    assert back.stable is not None and back.stable.trigger == Trigger.ROLLBACK
    assert back.stable.images == {"app": "registry.local/web:1"}
    # The canary's pods (same version now) leave the Service moments after the job scaled it to zero.
    await until(lambda: asyncio.to_thread(shop.ready_images), lambda images: images == ["registry.local/web:1"] * 4,
                "web:1 on the 4 stable pods alone", timeout=30)


async def test_update_rules_applies_to_the_running_release(shop: Shop) -> None:
    await shop.attach()
    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == Phase.PAUSED, "pause")
    await canary.operate(shop.temporal, shop.namespace, "web", names.UPDATE_RULES, UpdateRulesRequest(
        rules={"steps": [{"setWeight": 25}, {"setWeight": 75}, {"pause": {}}]}))
    gate = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.weight == 75, "75 %")
    assert gate.canary_replicas == 3
    assert len(shop.pods("canary")) == 3
    assert shop.workload().spec.replicas == 1


async def test_delete_gives_back_a_plain_serving_deployment(shop: Shop) -> None:
    await shop.attach()
    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == Phase.PAUSED, "pause")
    await canary.operate(shop.temporal, shop.namespace, "web", names.DELETE, OperationRequest())
    handle = shop.temporal.get_workflow_handle(workflow_id(shop.namespace, "web"))
    assert await handle.result() == "deleted"
    workload = shop.workload()
    assert not workload.spec.paused
    assert "canary-delivery.dev/job" not in (workload.metadata.annotations or {})
    assert workload.spec.template.spec.containers[0].image == "registry.local/web:1"
    assert shop.apps.list_namespaced_deployment(shop.namespace).items.__len__() == 1
    await until(lambda: asyncio.to_thread(shop.ready_images), lambda images: images == ["registry.local/web:1"] * 4,
                "the stable version serving")
    # A plain Deployment again: an edit rolls out by itself.
    shop.set_image("registry.local/web:3")
    await until(lambda: asyncio.to_thread(shop.ready_images), lambda images: images == ["registry.local/web:3"] * 4,
                "a normal rollout")


async def test_attaching_a_missing_deployment_is_refused(shop: Shop) -> None:
    with pytest.raises(CanaryError, match=r"workload: Deployment .*/web not found"):
        await shop.apply()


async def test_a_deployment_delivered_by_another_job_is_refused(shop: Shop) -> None:
    await shop.attach()
    other = shop.spec(name="web-two")
    with pytest.raises(CanaryError, match="belongs to canary job 'web', not 'web-two'"):
        await canary.apply_job(shop.temporal, other)
    assert shop.workload().metadata.annotations["canary-delivery.dev/job"] == "web"


async def test_jobs_can_be_found_by_phase_with_the_temporal_cli(shop: Shop, dev_server) -> None:
    from devenv.temporal import temporal_cli

    await shop.attach()
    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == Phase.PAUSED, "pause")
    address = dev_server.client.service_client.config.target_host
    query = f"CanaryPhase='paused' AND CanaryNamespace='{shop.namespace}'"

    async def listed() -> str:
        process = await asyncio.create_subprocess_exec(
            str(temporal_cli()), "workflow", "list", "--address", address, "--query", query, "-o", "json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
        return out.decode()

    found = await until(listed, lambda out: workflow_id(shop.namespace, "web") in out, "the paused job listed")
    assert "CanaryJobWorkflow" in found
    jobs = await canary.list_jobs(shop.temporal, namespace=shop.namespace, phase="paused")
    assert [j.name for j in jobs] == ["web"]
