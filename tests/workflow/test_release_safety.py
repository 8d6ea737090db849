"""The edges where a release used to break its promise (time-skipping, fake cluster).

Each test is one way a version could reach the stable pods without passing its steps, a gate
could open without its `continue`, or the job could die; docs/design.md lists the invariants.
"""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError

from tests.workflow.conftest import HOPS, Job, job_spec
from workflows import names
from workflows.models import (
    OperationRequest,
    Outcome,
    Phase,
    StepStatus,
    UpdateRulesRequest,
    UpdateVersionRequest,
)


async def _attached(start_job, **kwargs) -> Job:
    job: Job = await start_job(**kwargs)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    return job


async def _rejection(job: Job, operation: str, request: OperationRequest) -> WorkflowUpdateFailedError:
    with pytest.raises(WorkflowUpdateFailedError) as error:
        await job.operate(operation, request)
    return error.value


async def _running(job: Job) -> bool:
    return (await job.handle.describe()).status == WorkflowExecutionStatus.RUNNING


async def test_a_failed_promotion_puts_the_stable_version_back_paused(start_job) -> None:
    job = await _attached(start_job, spec=job_spec(steps=[{"setWeight": 25}], progressDeadline="3s"))
    job.kube.unpromotable_images.add("registry.local/web:2")
    await job.edit_image("registry.local/web:2")
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "the failed promotion", timeout=30)
    assert failed.stable is not None and failed.stable.revision == 1
    assert failed.last_error is not None and "promotion failed" in failed.last_error
    assert job.kube.paused and job.kube.images()["app"] == "registry.local/web:1"
    assert job.kube.images(job.kube.stable_template)["app"] == "registry.local/web:1"
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4
    # The next edit is a canary again, never a rollout onto the stable pods.
    await job.edit_image("registry.local/web:3")
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                       and d.stable.images["app"] == "registry.local/web:3", "the next release, promoted")
    # web:2 reached the stable pods only by its promotion, which put web:1 back when it failed.
    assert job.kube.stable_log[:3] == ["registry.local/web:1", "registry.local/web:2", "registry.local/web:1"]


async def test_an_edit_during_the_promotion_is_the_next_release(start_job) -> None:
    job = await _attached(start_job, spec=job_spec(steps=[{"setWeight": 25}, {"pause": {}}]))
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the gate")
    # The user edits the Deployment while the promotion is emptying it.
    job.kube.on_prepare_stable = lambda: job.kube.edit_image("registry.local/web:3")
    await job.operate(names.CONTINUE)
    nxt = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.canary is not None
                             and d.canary.images["app"] == "registry.local/web:3", "web:3 as a canary")
    assert nxt.stable is not None and nxt.stable.images["app"] == "registry.local/web:2"
    assert "registry.local/web:3" not in job.kube.stable_log
    assert job.kube.images()["app"] == "registry.local/web:3"  # the user's edit is kept in the Deployment


async def test_update_rules_at_a_gate_opens_no_gate(start_job) -> None:
    spec = job_spec(steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}])
    job = await _attached(start_job, spec=spec)
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "gate 1")
    await job.operate(names.CONTINUE, OperationRequest(actor="ann"))
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "gate 2")
    rules = {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 90}, {"pause": {}}]}
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules=rules))
    held = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "the new gate")
    await job.env.sleep(600)
    held = await job.details()
    assert held.phase == Phase.PAUSED and held.current_step == 1 and held.weight == 50
    assert job.kube.canary_replicas == 2
    assert [e.actor for e in held.events if e.kind == "continued"] == ["ann"]


async def test_identical_continues_at_once_open_exactly_one_gate(start_job) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    job = await _attached(start_job, spec=job_spec(steps=steps))
    await job.edit_image("registry.local/web:2")
    gate = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "gate 1")
    assert gate.canary is not None
    request = OperationRequest(release=gate.canary.revision, step=2)
    results = await asyncio.gather(*(job.operate(names.CONTINUE, request) for _ in range(20)),
                                   return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, BaseException) and r.message.startswith("continuing")) == 1
    for result in results:
        if isinstance(result, WorkflowUpdateFailedError):
            assert result.cause.type == "OperationNotAllowed"
    at = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "gate 2")
    await job.env.sleep(600)
    at = await job.details()
    assert at.current_step == 3 and at.weight == 50
    assert sum(e.kind == "continued" for e in at.events) == 1
    # A continue naming the gate that has passed is stale, and says so.
    stale = await _rejection(job, names.CONTINUE, request)
    assert stale.cause.type == "OperationNotAllowed" and "step 2 is not waiting" in str(stale.cause)


async def test_a_missing_deployment_never_ends_the_job_and_is_taken_over_again(start_job) -> None:
    job = await _attached(start_job)
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "paused")
    job.kube.exists = False
    job.kube.canary_template, job.kube.canary_replicas = None, 0
    await job.handle.signal(names.WORKLOAD_CHANGED)
    missing = await job.wait_for(lambda d: d.phase == Phase.WORKLOAD_MISSING, "workload-missing")
    assert missing.last_error is not None and "web" in missing.last_error and missing.canary is None
    refused = await _rejection(job, names.CONTINUE, OperationRequest())
    assert refused.cause.type == "OperationNotAllowed"
    refused = await _rejection(job, names.UPDATE_VERSION,
                               UpdateVersionRequest(image="registry.local/web:9", container="app"))
    assert "missing" in str(refused.cause)
    assert await _running(job)
    # The Deployment is created again, by hand, with a new image: the job holds it again.
    job.kube.exists, job.kube.owner, job.kube.paused = True, None, False
    job.kube.edit_image("registry.local/web:7")
    await job.handle.signal(names.WORKLOAD_CHANGED)
    back = await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "taken over again")
    assert back.stable is not None and back.stable.images["app"] == "registry.local/web:7"
    assert job.kube.owner == "web" and job.kube.paused
    assert (await job.versions()).history[1].outcome == Outcome.FAILED


async def test_a_newer_version_supersedes_and_terminate_leaves_nothing_queued(start_job) -> None:
    job = await _attached(start_job)
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "paused")
    for image in ("registry.local/web:b", "registry.local/web:c"):
        await job.operate(names.UPDATE_VERSION, UpdateVersionRequest(image=image, container="app"))
    running = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.canary is not None
                                 and d.canary.images["app"] == "registry.local/web:c", "web:c as the canary")
    assert any(e.kind == "superseded" for e in running.events) or any(
        v.outcome == Outcome.SUPERSEDED for v in (await job.versions()).history)
    # A version asked for right before `terminate` never starts after it.
    await job.handle.signal(names.UPDATE_VERSION, {"image": "registry.local/web:d", "container": "app"})
    await job.handle.signal(names.TERMINATE, {"reason": "stop it all"})
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    await job.env.sleep(600)
    done = await job.details()
    assert done.phase == Phase.TERMINATED and done.canary is None and job.kube.canary_replicas == 0
    dropped = any("dropped before it started: terminated" in e.message for e in done.events)
    ended = [v for v in (await job.versions()).history if v.images["app"] == "registry.local/web:d"]
    assert dropped or (ended and ended[0].outcome == Outcome.TERMINATED)


@pytest.mark.parametrize("rules, field", [
    ({"steps": [{"pause": {"duration": "3000000d"}}]}, "rules.steps.0.pause.duration"),
    ({"steps": [{"setWeight": 10}] * 101}, "rules.steps"),
    ({"steps": [{"setWeight": 10}], "progressDeadline": 1e400}, "rules.progressDeadline"),
])
async def test_unbounded_input_is_refused_where_it_enters(start_job, rules, field) -> None:
    job = await _attached(start_job)
    refused = await _rejection(job, names.UPDATE_RULES, UpdateRulesRequest(rules=rules))
    assert refused.cause.type == "InvalidOperationInput" and refused.cause.details[0] == field
    # The signal form is recorded, and the job goes on answering.
    await job.handle.signal(names.UPDATE_RULES, {"rules": rules})
    await job.handle.signal("no-such-operation", {"x": 1})
    details = await job.wait_for(lambda d: sum(e.kind == "rejected" for e in d.events) == 2, "two rejections")
    assert len(details.rules["steps"]) == 4
    await job.operate(names.DELETE)
    assert await job.handle.result() == "deleted"


@HOPS
async def test_a_long_release_continues_as_new_at_a_pause_and_carries_on(start_job) -> None:
    # Well below the history a release has by its first pause (~40 events with one activity per
    # step; fewer when workflow tasks batch under load), well above an attached job's (~15).
    job = await _attached(start_job, max_history_events=30)
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "the timed pause")
    latest = job.client.get_workflow_handle(job.handle.id)

    async def hopped() -> bool:
        return (await latest.describe()).run_id != job.handle.result_run_id

    for _ in range(200):
        if await hopped():
            break
        await asyncio.sleep(0.05)
    assert await hopped(), "no continue-as-new during the pause"
    await job.env.sleep(3601)  # the timed pause keeps its end across the hop
    gate = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "the manual gate")
    assert gate.steps[1].status == StepStatus.SUCCEEDED and gate.weight == 50
    await job.operate(names.CONTINUE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "promoted")
    assert done.stable is not None and done.stable.revision == 2


async def test_new_rules_while_canary_pods_come_up_put_the_pods_back_where_the_step_began(start_job) -> None:
    job = await _attached(start_job, spec=job_spec(steps=[{"setWeight": 25}, {"pause": {}}], progressDeadline="1h"))
    job.kube.broken_images.add("registry.local/web:2")  # its pods never become Ready: the wait goes on
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PROGRESSING and job.kube.canary_replicas == 1,
                       "the canary's pod asked for, its wait running")
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": [{"pause": {}}]}))
    details = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the new rules' pause")
    # The new rules resume at weight 0, where the cut step began: no canary pod, stable at full size,
    # and the job says exactly that.
    assert (details.canary_replicas, details.stable_replicas) == (job.kube.canary_replicas, job.kube.replicas) == (0, 4)
    assert details.weight == 0
