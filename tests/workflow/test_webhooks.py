"""Webhooks in a release: when each type is called, what its answer does, and operators (time-skipping).

The answers come from tests/workflow/fake_hooks.py (scripted HTTP statuses per hook); the real
HTTP call is tested in tests/activities/test_webhooks.py and end to end in tests/e2e.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.workflow.conftest import HOPS, Job, eventually, job_spec
from workflows import names
from workflows.models import JobDetails, OperationRequest, Phase, RollbackRequest, StepStatus, UpdateRulesRequest
from workflows.spec import JobSpec


def _hook(name: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "url": f"http://hooks.shop/{name}", **fields}


ALL_HOOKS = [_hook("pre", "pre-rollout", metadata={"suite": "smoke"}), _hook("roll", "rollout"),
             _hook("confirm", "confirm-promotion"), _hook("post", "post-rollout")]
TWO_STEPS = [{"setWeight": 25}, {"setWeight": 50}]


def _spec(hooks: list[dict[str, Any]], steps: list[dict[str, Any]] | None = None) -> JobSpec:
    return job_spec(steps=steps or TWO_STEPS, webhooks=hooks)


async def _release(start_job, spec: JobSpec, **input_fields: Any) -> Job:
    job: Job = await start_job(spec=spec, **input_fields)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    return job


async def _promoted(job: Job, revision: int = 2) -> JobDetails:
    return await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                              and d.stable.revision == revision, f"revision {revision} promoted")


async def _told(job: Job, releases: int = 1) -> JobDetails:
    """Wait until post-rollout hooks heard of ``releases`` releases: they are called after the release ends."""
    def told(details: JobDetails) -> int:
        return sum(1 for e in details.events if e.kind == "webhook" and e.message.startswith("post-rollout"))

    return await job.wait_for(lambda d: told(d) >= releases, f"post-rollout told of {releases} releases")


async def _run_id(job: Job) -> str | None:
    return (await job.client.get_workflow_handle(job.handle.id).describe()).run_id


def _canary_sizes(job: Job) -> list[int]:
    return [replicas for what, replicas in job.kube.writes if what == "scale_canary"]


async def test_every_hook_type_is_called_in_order_with_the_release_facts(start_job) -> None:
    job = await _release(start_job, _spec(ALL_HOOKS))
    await _promoted(job)
    done = await _told(job)
    assert job.kube.hooks.order() == ["pre-rollout pre", "rollout roll", "rollout roll",
                                      "confirm-promotion confirm", "post-rollout post"]
    pre, first, second, confirm, post = job.kube.hooks.bodies()
    assert (pre.job, pre.namespace, pre.workload, pre.revision) == ("web", "shop", "web", 2)
    assert pre.images == {"app": "registry.local/web:2", "sidecar": "proxy:1"}
    assert pre.metadata == {"suite": "smoke"} and pre.phase == "progressing" and pre.step is None
    assert (first.step, second.step) == (1, 2)
    assert confirm.step is None and confirm.outcome is None
    assert post.outcome == "promoted" and post.phase == "healthy"
    assert job.kube.hooks.calls[0].url == "http://hooks.shop/pre"
    assert job.kube.hooks.calls[0].timeout_seconds == 10
    assert sum(1 for e in done.events if e.kind == "webhook") == 5


async def test_a_refusing_pre_rollout_hook_stops_the_release_before_any_traffic(start_job) -> None:
    job = await start_job(spec=_spec(ALL_HOOKS))
    job.kube.hooks.set("pre", 500)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.FAILED, "refused before traffic")
    failed = await _told(job)
    assert failed.last_error is not None
    assert "pre-rollout webhook pre answered HTTP 500" in failed.last_error
    assert "no traffic reached the canary" in failed.last_error
    assert all(replicas == 0 for replicas in _canary_sizes(job)), "the canary never had a pod"
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4
    assert job.kube.hooks.order() == ["pre-rollout pre", "post-rollout post"]
    assert job.kube.hooks.bodies("post")[0].outcome == "failed"
    assert all((step.status, step.message) == (StepStatus.SKIPPED, "not run: the release failed")
               for step in failed.steps)


async def test_an_unreachable_pre_rollout_hook_is_a_no(start_job) -> None:
    job = await start_job(spec=_spec([_hook("pre", "pre-rollout")]))
    job.kube.hooks.set("pre", None)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "refused")
    assert "unreachable" in (failed.last_error or "")
    assert job.kube.canary_replicas == 0


async def test_terminate_while_a_gate_is_being_asked(start_job) -> None:
    job = await start_job(spec=_spec([_hook("pre", "pre-rollout"), _hook("roll", "rollout")]))
    job.kube.hooks.hold("pre")
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await eventually(lambda: asyncio.sleep(0, len(job.kube.hooks.calls)), lambda n: n == 1, "pre-rollout asked")
    await job.operate(names.TERMINATE, OperationRequest(reason="wrong build"))
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated without the answer")
    job.kube.hooks.let_go("pre")
    await job.env.sleep(60)
    assert job.kube.hooks.order() == ["pre-rollout pre"], "no step, no rollout hook after terminate"
    assert all(replicas == 0 for replicas in _canary_sizes(job))


async def test_a_refusing_rollout_hook_fails_its_step_and_rolls_back(start_job) -> None:
    job = await start_job(spec=_spec([_hook("roll", "rollout")]))
    job.kube.hooks.set("roll", 200, 503)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "rolled back at step 2")
    assert "step 2: rollout webhook roll answered HTTP 503" in (failed.last_error or "")
    assert failed.steps[0].status == StepStatus.SUCCEEDED and failed.steps[1].status == StepStatus.FAILED
    assert max(_canary_sizes(job)) == 1, "the canary never reached 50 %"
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4
    assert job.kube.images(job.kube.stable_template)["app"] == "registry.local/web:1"


async def test_a_resumed_pause_does_not_ask_its_rollout_hook_again(start_job) -> None:
    steps = [{"setWeight": 25}, {"pause": {"duration": "1h"}}, {"setWeight": 50}]
    job = await _release(start_job, _spec([_hook("roll", "rollout")], steps), max_history_events=45)
    # Not queried while it hands over: the time-skipping server can hold a query that races the hop.
    await eventually(lambda: _run_id(job), lambda run: run != job.handle.result_run_id,
                     "the pause handed over to a fresh run")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the pause, resumed")
    await job.env.sleep(3601)
    await _promoted(job)
    assert [body.step for body in job.kube.hooks.bodies("roll")] == [1, 2, 3]


async def test_confirm_promotion_holds_the_promotion_until_it_says_yes(start_job) -> None:
    job = await _release(start_job, _spec([_hook("confirm", "confirm-promotion")]))
    job.kube.hooks.set("confirm", 503, 503, 200)
    waiting = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "waiting for confirmation")
    assert waiting.pause_reason is not None
    assert "confirm-promotion webhook confirm answered HTTP 503" in waiting.pause_reason
    assert waiting.canary is not None and job.kube.canary_replicas == 2, "still at the last step's weight"
    assert job.kube.images(job.kube.stable_template)["app"] == "registry.local/web:1"
    await job.env.sleep(25)
    done = await _promoted(job)
    assert done.stable is not None and done.stable.revision == 2
    assert len(job.kube.hooks.bodies("confirm")) == 3
    assert done.pause_reason is None


async def test_terminate_while_waiting_for_confirmation(start_job) -> None:
    job = await _release(start_job, _spec([_hook("confirm", "confirm-promotion"), _hook("post", "post-rollout")]))
    job.kube.hooks.set("confirm", 503)
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "waiting for confirmation")
    await job.operate(names.TERMINATE, OperationRequest(reason="not today"))
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    done = await _told(job)
    assert done.pause_reason is None
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4
    asked = len(job.kube.hooks.bodies("confirm"))
    await job.env.sleep(120)
    assert len(job.kube.hooks.bodies("confirm")) == asked, "no more asking after terminate"
    [post] = job.kube.hooks.bodies("post")
    assert post.outcome == "terminated" and post.reason == "not today"


async def test_promote_passes_a_refusing_confirm_promotion_hook(start_job) -> None:
    job = await _release(start_job, _spec([_hook("confirm", "confirm-promotion")]))
    job.kube.hooks.set("confirm", 503)
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "waiting for confirmation")
    await job.operate(names.PROMOTE)
    done = await _promoted(job)
    assert done.stable is not None and done.stable.revision == 2
    assert any(e.kind == "webhook" and "passed by an operator" in e.message for e in done.events)


async def test_continue_at_the_confirm_promotion_gate_passes_it_once(start_job) -> None:
    job = await _release(start_job, _spec([_hook("confirm", "confirm-promotion")]))
    job.kube.hooks.set("confirm", 503)
    waiting = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "waiting for confirmation")
    assert waiting.canary is not None and waiting.current_step == 1
    await job.operate(names.CONTINUE, OperationRequest(release=waiting.canary.revision, step=2, actor="ops"))
    done = await _promoted(job)
    assert any(e.kind == "webhook" and "passed by an operator" in e.message and e.actor == "ops"
               for e in done.events)
    assert len(job.kube.hooks.bodies("confirm")) == 1


async def test_update_rules_can_drop_the_confirm_promotion_hook_while_it_waits(start_job) -> None:
    job = await _release(start_job, _spec([_hook("confirm", "confirm-promotion")]))
    job.kube.hooks.set("confirm", 503)
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "waiting for confirmation")
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": TWO_STEPS}))
    await job.env.sleep(11)
    done = await _promoted(job)
    assert done.stable is not None and done.stable.revision == 2


@HOPS
async def test_a_long_wait_for_confirmation_continues_as_new_and_keeps_waiting(start_job) -> None:
    job = await _release(start_job, _spec([_hook("confirm", "confirm-promotion")]), max_history_events=80)
    job.kube.hooks.set("confirm", *([503] * 12), 200)
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "waiting for confirmation")
    await job.env.sleep(130)
    done = await _promoted(job)
    assert await _run_id(job) != job.handle.result_run_id, "the wait handed over to a fresh run"
    assert len(job.kube.hooks.bodies("confirm")) == 13
    assert _canary_sizes(job).count(1) == 1, "the steps were not run again after the hand-over"
    assert done.steps[1].status == StepStatus.SUCCEEDED


async def test_a_failing_post_rollout_hook_never_changes_the_outcome(start_job) -> None:
    job = await _release(start_job, _spec([_hook("post", "post-rollout")]))
    job.kube.hooks.set("post", 500)
    await _promoted(job)
    done = await _told(job)
    assert done.stable is not None and done.stable.revision == 2 and done.last_error is None
    assert any(e.kind == "webhook" and "HTTP 500" in e.message and "outcome stands" in e.message
               for e in done.events)


async def test_a_rollback_without_steps_asks_no_gate(start_job) -> None:
    job = await _release(start_job, _spec(ALL_HOOKS))
    await _promoted(job)
    await _told(job)
    job.kube.hooks.set("pre", 500)
    job.kube.hooks.set("confirm", 503)
    await job.operate(names.ROLLBACK, RollbackRequest(revision=1, skip_steps=True))
    await _promoted(job, revision=3)
    done = await _told(job, releases=2)
    assert done.stable is not None and done.stable.images["app"] == "registry.local/web:1"
    assert job.kube.hooks.order()[-1] == "post-rollout post"
    assert job.kube.hooks.order().count("pre-rollout pre") == 1, "only the first release asked"

