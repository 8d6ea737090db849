"""A release from edit to promotion: steps, pauses, weights, versions (time-skipping)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.workflow.conftest import Job, job_spec
from workflows import names
from workflows.models import Outcome, Phase, StepStatus, Trigger


async def test_attach_makes_the_running_version_stable(start_job) -> None:
    job: Job = await start_job()
    details = await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    assert details.stable is not None
    assert details.stable.revision == 1
    assert details.stable.images == {"app": "registry.local/web:1", "sidecar": "proxy:1"}
    assert details.stable.trigger == Trigger.ATTACH
    assert details.canary is None
    assert details.steps == []
    assert job.kube.paused and job.kube.owner == "web"
    assert ("scale_canary", 1) not in job.kube.writes


async def test_edit_runs_every_step_then_promotes(start_job) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")

    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "first pause")
    assert paused.current_step == 1
    assert paused.weight == 25
    assert paused.canary_replicas == 1 and job.kube.canary_replicas == 1 and job.kube.replicas == 3
    assert paused.canary is not None and paused.canary.images["app"] == "registry.local/web:2"
    assert paused.canary.trigger == Trigger.EDIT
    assert [s.status for s in paused.steps] == [StepStatus.SUCCEEDED, StepStatus.RUNNING,
                                                StepStatus.PENDING, StepStatus.PENDING]
    assert paused.pause_remaining is not None
    assert timedelta(minutes=59) < paused.pause_remaining <= timedelta(hours=1)

    # The hour-long pause passes in skipped time; the next pause waits for `continue`.
    await job.env.sleep(3601)
    gate = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "the manual gate")
    assert gate.weight == 50 and job.kube.canary_replicas == 2 and job.kube.replicas == 2
    assert gate.pause_remaining is None

    result = await job.operate(names.CONTINUE)
    assert "continuing" in result.message
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "promotion")
    assert done.stable is not None and done.stable.revision == 2
    assert done.stable.images["app"] == "registry.local/web:2"
    assert done.canary is None and done.weight == 0
    assert all(s.status == StepStatus.SUCCEEDED for s in done.steps)
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4 and job.kube.paused
    assert job.kube.images(job.kube.stable_template)["app"] == "registry.local/web:2"

    versions = await job.versions()
    assert [(v.revision, v.outcome) for v in versions.history] == [(2, Outcome.PROMOTED), (1, Outcome.PROMOTED)]
    assert versions.history[0].finished is not None


async def test_a_last_step_at_100_percent_hands_its_ready_canary_straight_to_promotion(start_job) -> None:
    job: Job = await start_job(spec=job_spec(steps=[{"setWeight": 50}, {"setWeight": 100}]))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                              and d.stable.revision == 2, "promotion")
    assert done.canary is None and job.kube.canary_replicas == 0 and job.kube.replicas == 4
    # The 100% step grew the canary to all 4 replicas and waited for them; the promotion goes
    # straight to moving the Deployment, without growing (and waiting for) the canary again.
    assert job.kube.writes.count(("scale_canary", 4)) == 1


async def test_a_pause_after_the_100_percent_step_still_checks_the_canary_before_promotion(start_job) -> None:
    job: Job = await start_job(spec=job_spec(steps=[{"setWeight": 100}, {"pause": {}}]))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the pause after 100%")
    await job.operate(names.CONTINUE)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                       and d.stable.revision == 2, "promotion")
    assert job.kube.writes.count(("scale_canary", 4)) == 2


async def test_canary_that_never_becomes_ready_is_rolled_back(start_job) -> None:
    job: Job = await start_job(spec=job_spec(progressDeadline="4s"))
    job.kube.broken_images.add("registry.local/web:broken")
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:broken")

    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "automatic rollback", timeout=60)
    assert failed.last_error is not None
    assert "CrashLoopBackOff" in failed.last_error
    assert failed.steps[0].status == StepStatus.FAILED
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4
    assert failed.stable is not None and failed.stable.revision == 1
    versions = await job.versions()
    assert versions.history[0].outcome == Outcome.FAILED
    assert "CrashLoopBackOff" in (versions.history[0].reason or "")


async def test_a_newer_edit_replaces_the_running_canary(start_job) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "first pause")
    await job.edit_image("registry.local/web:3")
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.canary is not None
                                and d.canary.images["app"] == "registry.local/web:3", "the new canary")
    assert paused.current_step == 1
    assert paused.canary is not None and paused.canary.revision == 3
    versions = await job.versions()
    assert versions.history[0].revision == 2 and versions.history[0].outcome == Outcome.SUPERSEDED


async def test_editing_back_to_stable_ends_the_release_without_a_new_one(start_job) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "first pause")
    await job.edit_image("registry.local/web:1")
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "back to stable")
    assert done.canary is None and done.stable is not None and done.stable.revision == 1
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4


async def test_changes_outside_the_pod_template_start_no_release(start_job) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    job.kube.replicas = 6
    await job.handle.signal(names.WORKLOAD_CHANGED)
    details = await job.wait_for(lambda d: d.replicas == 6, "the new size")
    assert details.phase == Phase.HEALTHY and details.canary is None


async def test_a_missing_deployment_fails_the_job_with_the_reason(start_job) -> None:
    from temporalio.client import WorkflowFailureError

    from tests.workflow.fake_kube import FakeKube

    job: Job = await start_job(FakeKube(exists=False))
    with pytest.raises(WorkflowFailureError) as error:
        await job.handle.result()
    assert error.value.cause.message == "workload: Deployment shop/web not found"
