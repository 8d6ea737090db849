"""Operator operations as updates and signals: effects, validation, idempotency (time-skipping)."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowUpdateFailedError

from tests.workflow.conftest import Job
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


async def _paused_release(start_job, **kwargs) -> Job:
    job: Job = await start_job(**kwargs)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "first pause")
    return job


async def _rejection(job: Job, operation: str, request: OperationRequest) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as error:
        await job.operate(operation, request)
    return str(error.value.cause)


async def test_terminate_sends_traffic_back_to_stable(start_job) -> None:
    job = await _paused_release(start_job)
    result = await job.operate(names.TERMINATE, OperationRequest(actor="alice", reason="error budget burnt"))
    assert "terminating" in result.message
    done = await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4
    assert done.canary is None and done.weight == 0
    assert done.steps[1].status == StepStatus.STOPPED
    latest = (await job.versions()).history[0]
    assert latest.outcome == Outcome.TERMINATED
    assert latest.reason == "error budget burnt" and latest.actor == "alice"
    # Terminating again is refused with the reason, and changes nothing.
    assert "no release is running" in await _rejection(job, names.TERMINATE, OperationRequest())


async def test_promote_skips_the_remaining_steps(start_job) -> None:
    job = await _paused_release(start_job)
    await job.operate(names.PROMOTE, OperationRequest(actor="bob"))
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "promoted")
    assert [s.status for s in done.steps] == [StepStatus.SUCCEEDED, StepStatus.STOPPED,
                                              StepStatus.SKIPPED, StepStatus.SKIPPED]
    assert done.stable is not None and done.stable.images["app"] == "registry.local/web:2"
    assert job.kube.images(job.kube.stable_template)["app"] == "registry.local/web:2"


async def test_continue_only_while_paused_and_only_once_per_pause(start_job) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    assert "not paused" in await _rejection(job, names.CONTINUE, OperationRequest())
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "first pause")
    results = await asyncio.gather(job.operate(names.CONTINUE), job.operate(names.CONTINUE),
                                   return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    assert any(r.message.startswith("continuing") for r in accepted)
    for result in results:
        if isinstance(result, WorkflowUpdateFailedError):
            assert "nothing to continue" in str(result.cause)
        else:
            assert result.message.startswith("continuing") or result.message == "already continuing"
    gate = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "the manual gate")
    # The double continue did not also pass the second pause.
    assert gate.steps[3].status == StepStatus.RUNNING


async def test_update_version_starts_a_release_of_the_new_image(start_job) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    result = await job.operate(names.UPDATE_VERSION,
                               UpdateVersionRequest(image="registry.local/web:5", container="app", actor="ci"))
    assert "accepted" in result.message
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the release")
    assert paused.canary is not None and paused.canary.trigger == Trigger.UPDATE_VERSION
    assert paused.canary.images == {"app": "registry.local/web:5", "sidecar": "proxy:1"}
    assert paused.canary.actor == "ci"
    assert job.kube.images()["app"] == "registry.local/web:5"


@pytest.mark.parametrize("request_fields, expected", [
    ({"image": "Registry.local/WEB:1"}, "must be lowercase"),
    ({"image": "web:"}, "has an invalid tag ''"),
    ({"image": "web 2"}, "must not contain whitespace"),
    ({"image": "web:2", "container": "nope"}, "container 'nope' is not in the pod template; containers: app, sidecar"),
    ({"image": "web:2"}, "the pod template has 2 containers (app, sidecar): name one with container"),
])
async def test_update_version_refuses_bad_input(start_job, request_fields, expected) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    assert expected in await _rejection(job, names.UPDATE_VERSION, UpdateVersionRequest(**request_fields))
    assert job.kube.images()["app"] == "registry.local/web:1"


async def test_rollback_delivers_a_historical_version_again(start_job) -> None:
    job = await _paused_release(start_job)
    await job.operate(names.PROMOTE)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable.revision == 2, "revision 2 stable")

    assert "unknown revision 9; known revisions: 1, 2" in await _rejection(
        job, names.ROLLBACK, RollbackRequest(revision=9))
    await job.operate(names.ROLLBACK, RollbackRequest(revision=1, actor="carol"))
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the rollback release")
    assert paused.canary is not None
    assert paused.canary.trigger == Trigger.ROLLBACK and paused.canary.revision == 3
    assert paused.canary.images["app"] == "registry.local/web:1"
    assert job.kube.images()["app"] == "registry.local/web:1"


async def test_rollback_can_skip_the_steps(start_job) -> None:
    job = await _paused_release(start_job)
    await job.operate(names.PROMOTE)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable.revision == 2, "revision 2 stable")
    await job.operate(names.ROLLBACK, RollbackRequest(revision=1, skip_steps=True))
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable.revision == 3, "fast rollback")
    assert all(s.status == StepStatus.SKIPPED for s in done.steps)
    assert done.stable is not None and done.stable.images["app"] == "registry.local/web:1"
    assert ("scale_canary", 1) not in job.kube.writes[-6:]


async def test_rollback_during_a_release_ends_it_as_rolled_back(start_job) -> None:
    job = await _paused_release(start_job)
    await job.operate(names.ROLLBACK, RollbackRequest(revision=1))
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "back on stable")
    assert done.stable is not None and done.stable.revision == 1
    assert (await job.versions()).history[0].outcome == Outcome.ROLLED_BACK
    assert job.kube.canary_replicas == 0 and job.kube.images()["app"] == "registry.local/web:1"


async def test_update_rules_continues_from_the_current_weight(start_job) -> None:
    job = await _paused_release(start_job)
    rules = {"steps": [{"setWeight": 10}, {"setWeight": 20}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]}
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules=rules, actor="dave"))
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 2, "the new pause")
    assert [s.description for s in paused.steps][:2] == ["setWeight 10%", "setWeight 20%"]
    assert [s.status for s in paused.steps][:2] == [StepStatus.SKIPPED, StepStatus.SKIPPED]
    assert paused.weight == 25 and job.kube.canary_replicas == 1  # no weight was applied twice
    await job.operate(names.CONTINUE)
    gate = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 4, "the last pause")
    assert gate.weight == 75 and gate.actual_weight == 75 and job.kube.canary_replicas == 3


async def test_update_rules_refuses_invalid_rules_and_keeps_the_old_ones(start_job) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    message = await _rejection(job, names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": [{"setWeight": 120}]}))
    assert "setWeight" in message and "less than or equal to 100" in message
    message = await _rejection(job, names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": [{"wait": 1}]}))
    assert "unknown step 'wait'" in message
    details = await job.details()
    assert len(details.rules["steps"]) == 4


async def test_bad_signals_are_recorded_and_do_not_wedge_the_job(start_job) -> None:
    job = await _paused_release(start_job)
    await job.handle.signal(names.UPDATE_VERSION, {"image": ""})
    await job.handle.signal(names.ROLLBACK, {"revision": "latest"})
    await job.handle.signal(names.CONTINUE, {"unexpected": True})
    details = await job.wait_for(lambda d: sum(e.kind == "rejected" for e in d.events) == 3, "3 rejections")
    rejected = [e.message for e in details.events if e.kind == "rejected"]
    assert any("update-version" in m and "image" in m for m in rejected)
    assert any("rollback" in m and "revision" in m for m in rejected)
    # A good signal still works.
    await job.handle.signal(names.CONTINUE, {"actor": "erin"})
    await job.wait_for(lambda d: d.current_step == 3, "the next step")


async def test_terminate_and_promote_at_once_end_in_one_consistent_state(start_job) -> None:
    job = await _paused_release(start_job)
    results = await asyncio.gather(job.operate(names.TERMINATE), job.operate(names.PROMOTE),
                                   return_exceptions=True)
    done = await job.wait_for(lambda d: d.phase in (Phase.TERMINATED, Phase.HEALTHY) and d.canary is None,
                              "one end state")
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4
    stable_image = job.kube.images(job.kube.stable_template)["app"]
    if done.phase == Phase.TERMINATED:
        assert stable_image == "registry.local/web:1"
    else:
        assert stable_image == "registry.local/web:2"
    assert any(not isinstance(r, BaseException) for r in results)


async def test_request_ids_make_operations_idempotent(start_job) -> None:
    job = await _paused_release(start_job)
    first = await job.operate(names.CONTINUE, OperationRequest(request_id="abc"))
    await job.wait_for(lambda d: d.current_step == 3, "the manual gate")
    again = await job.operate(names.CONTINUE, OperationRequest(request_id="abc"))
    assert "already applied" in again.message and "continuing" in first.message
    assert (await job.details()).current_step == 3


async def test_delete_gives_the_deployment_back(start_job) -> None:
    job = await _paused_release(start_job)
    await job.operate(names.DELETE, OperationRequest(actor="root"))
    assert await job.handle.result() == "deleted"
    assert job.kube.owner is None and not job.kube.paused
    assert job.kube.replicas == 4 and job.kube.canary_template is None
    # The Deployment gets the stable template back, so it keeps serving what it served.
    assert job.kube.images()["app"] == "registry.local/web:1"


async def test_update_version_star_sets_every_container(start_job) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.operate(names.UPDATE_VERSION, UpdateVersionRequest(image="registry.local/all:9", container="*"))
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the release")
    assert paused.canary is not None
    assert paused.canary.images == {"app": "registry.local/all:9", "sidecar": "registry.local/all:9"}


async def test_rejections_say_whether_the_input_or_the_state_is_at_fault(start_job) -> None:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    cases = [
        (names.UPDATE_VERSION, UpdateVersionRequest(image="web:", container="app"), "InvalidOperationInput", "image"),
        (names.UPDATE_VERSION, UpdateVersionRequest(image="web:2", container="db"), "InvalidOperationInput",
         "container"),
        (names.ROLLBACK, RollbackRequest(revision=4), "InvalidOperationInput", "revision"),
        (names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": [{"setWeight": 101}]}), "InvalidOperationInput",
         "rules.steps.0.setWeight"),
        (names.CONTINUE, OperationRequest(), "OperationNotAllowed", None),
        (names.TERMINATE, OperationRequest(), "OperationNotAllowed", None),
    ]
    for operation, request, kind, field in cases:
        with pytest.raises(WorkflowUpdateFailedError) as error:
            await job.operate(operation, request)
        cause = error.value.cause
        assert cause.type == kind, operation
        assert (cause.details[0] if cause.details else None) == field, operation
