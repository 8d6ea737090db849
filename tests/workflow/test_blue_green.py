"""mode: blueGreen: green at full size in preview, one switch of the active Service, blue kept a while.

Time-skipping, with the in-memory Services of ``fake_services`` (the real activities are tested
against the real API server in tests/e2e/test_blue_green_e2e.py). Each test reads the order of
the cluster writes (``FakeKube.writes``: Deployments and Services alike) and what the active
Service selected after each of them.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from starter import client as canary_client
from starter.errors import InvalidInput
from tests.workflow.conftest import Job, job_spec
from tests.workflow.fake_kube import FakeKube, template_hash
from tests.workflow.fake_services import Switch
from workflows import names
from workflows.models import OperationRequest, Outcome, Phase, RollbackRequest, UpdateVersionRequest
from workflows.service_selection import Side
from workflows.spec import JobSpec


def blue_green(**fields: Any) -> JobSpec:
    return job_spec(steps=[], mode="blueGreen",
                    blueGreen={"activeService": "web", "previewService": "web-preview", **fields})


def index(writes: list[tuple[str, Any]], entry: tuple[str, Any], after: int = -1) -> int:
    """Where ``entry`` is in the write log (its first place after ``after``)."""
    return next(i for i, write in enumerate(writes) if i > after and write == entry)


async def attached(start_job, spec: JobSpec, kube: FakeKube | None = None) -> tuple[Job, str]:
    """A running blue-green job, and the hash of its first (blue) version."""
    kube = kube or FakeKube(replicas=4)
    blue = template_hash(kube.template)
    job: Job = await start_job(kube, spec)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    return job, blue


async def in_preview(job: Job) -> None:
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.blue_green is not None
                       and d.blue_green.preview_revision == 2, "green in preview, at its gate")


def switched_back(kube: FakeKube) -> Switch:
    """The active Service's first write after it had switched to green."""
    switches = [s for s in kube.services.switches if s.service == "web"]
    at_green = next(i for i, s in enumerate(switches) if s.side is Side.CANARY)
    return switches[at_green + 1]


def never_without_pods(job: Job) -> None:
    assert job.kube.services.active_ready and min(job.kube.services.active_ready) > 0, job.kube.services.active_ready


async def test_a_release_previews_green_at_full_size_switches_once_then_hands_over(start_job, env) -> None:
    job, blue = await attached(start_job, blue_green(scaleDownDelaySeconds=60))
    kube = job.kube
    await job.edit_image("registry.local/web:2")
    green = template_hash(kube.template)
    switched = await job.wait_for(lambda d: d.blue_green is not None and d.blue_green.stage == "switched",
                                  "the active Service on green")
    assert switched.blue_green is not None
    assert (switched.blue_green.active_revision, switched.blue_green.preview_revision) == (2, 2)
    assert kube.canary_replicas == 4 and kube.replicas == 4  # green at full size, blue untouched
    assert kube.services.selects["web"] == (Side.CANARY, green)
    assert kube.services.selects["web-preview"] == (Side.CANARY, green)

    await env.sleep(61)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "handed over")
    writes = kube.writes
    narrowed = index(writes, ("select", ("web", "stable", blue)))
    ready = index(writes, ("scale_canary", 4))
    preview = index(writes, ("select", ("web-preview", "canary", green)))
    switch = index(writes, ("select", ("web", "canary", green)))
    emptied = index(writes, ("prepare_stable", "registry.local/web:2"))
    grown = index(writes, ("hold_stable", 4), after=emptied)
    restored = index(writes, ("restore", "web"))
    down = index(writes, ("scale_canary", 0), after=ready)
    assert narrowed < ready < preview < switch < emptied < grown < restored < down
    # The switch was one write, onto four Ready green pods; blue was never shrunk before it.
    assert [s for s in kube.services.switches if s.service == "web" and s.side is Side.CANARY] == [
        Switch("web", Side.CANARY, green, 4)]
    assert not any(write[0] == "scale_stable" for write in writes)
    never_without_pods(job)
    assert done.stable is not None and done.stable.revision == 2 and kube.stable_log == [
        "registry.local/web:1", "registry.local/web:2"]
    assert done.mode == "blueGreen" and done.blue_green is not None
    assert (done.blue_green.active_revision, done.blue_green.preview_revision, done.blue_green.stage) == (2, None, None)
    assert kube.services.selects["web"] is None  # the user's own selector again
    assert [e.kind for e in done.events if e.kind in ("preview", "switched", "promoted")] == [
        "preview", "switched", "promoted"]


async def test_blue_stays_up_for_the_scale_down_delay(start_job, env) -> None:
    job, _ = await attached(start_job, blue_green(scaleDownDelaySeconds=600))
    await job.edit_image("registry.local/web:2")
    switched = await job.wait_for(lambda d: d.blue_green is not None and d.blue_green.stage == "switched", "switched")
    assert switched.blue_green is not None and switched.blue_green.scale_down_at is not None
    await env.sleep(300)
    still = await job.details()
    assert still.phase == Phase.PROGRESSING and job.kube.replicas == 4 and job.kube.canary_replicas == 4
    assert not any(write[0] == "prepare_stable" for write in job.kube.writes)
    await env.sleep(301)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "handed over after the delay")


async def test_a_manual_gate_waits_for_continue(start_job, env) -> None:
    job, blue = await attached(start_job, blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=0))
    await job.edit_image("registry.local/web:2")
    await in_preview(job)
    await env.sleep(3600)
    waiting = await job.details()
    assert waiting.phase == Phase.PAUSED and "continue" in (waiting.pause_reason or "")
    assert job.kube.services.selects["web"] == (Side.STABLE, blue)  # users still on blue
    await job.operate(names.CONTINUE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    assert done.stable is not None and done.stable.revision == 2
    never_without_pods(job)


async def test_auto_promotion_seconds_promote_by_themselves(start_job, env) -> None:
    job, _ = await attached(start_job, blue_green(autoPromotionSeconds=120, scaleDownDelaySeconds=0))
    await job.edit_image("registry.local/web:2")
    preview = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "in preview")
    assert preview.pause_until is not None
    await env.sleep(121)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted by itself")
    assert any(e.kind == "auto-promotion" for e in done.events)


async def test_promote_switches_now_and_again_ends_the_delay(start_job) -> None:
    job, _ = await attached(start_job, blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=3600))
    await job.edit_image("registry.local/web:2")
    await in_preview(job)
    await job.operate(names.PROMOTE)
    await job.wait_for(lambda d: d.blue_green is not None and d.blue_green.stage == "switched", "switched")
    await job.operate(names.PROMOTE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "handed over now")
    assert done.stable is not None and done.stable.revision == 2
    never_without_pods(job)


async def test_terminate_in_preview_tears_green_down_and_leaves_the_active_service(start_job) -> None:
    job, blue = await attached(start_job, blue_green(autoPromotionEnabled=False))
    await job.edit_image("registry.local/web:2")
    await in_preview(job)
    await job.operate(names.TERMINATE, OperationRequest(reason="not today"))
    done = await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    kube = job.kube
    assert kube.canary_replicas == 0 and kube.replicas == 4
    # The active Service was only ever narrowed to blue, and given its own selector back.
    assert [(s.side, s.template_hash) for s in kube.services.switches if s.service == "web"] == [
        (Side.STABLE, blue), (None, None)]
    assert kube.stable_log == ["registry.local/web:1"]
    assert done.blue_green is not None and done.blue_green.active_revision == 1
    assert (await job.versions()).history[0].outcome == Outcome.TERMINATED
    never_without_pods(job)


async def test_terminate_within_the_delay_switches_back_at_once(start_job) -> None:
    job, blue = await attached(start_job, blue_green(scaleDownDelaySeconds=3600))
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.blue_green is not None and d.blue_green.stage == "switched", "switched")
    await job.operate(names.TERMINATE, OperationRequest(reason="errors"))
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    kube = job.kube
    back = index(kube.writes, ("select", ("web", "stable", blue)), after=index(
        kube.writes, ("select", ("web", "canary", template_hash(kube.template)))))
    # One write back onto the four blue pods that never went away, before green goes.
    assert switched_back(kube) == Switch("web", Side.STABLE, blue, 4)
    assert back < index(kube.writes, ("scale_canary", 0))
    assert not any(write[0] in ("prepare_stable", "hold_stable") for write in kube.writes)
    assert {write[1] for write in kube.writes if write[0] == "scale_stable"} <= {4}  # blue kept its size
    never_without_pods(job)


async def test_a_rollback_to_blue_within_the_delay_is_an_instant_switch_back(start_job) -> None:
    job, blue = await attached(start_job, blue_green(scaleDownDelaySeconds=3600))
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.blue_green is not None and d.blue_green.stage == "switched", "switched")
    await job.operate(names.ROLLBACK, RollbackRequest(revision=1))
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None
                              and any(e.kind == "in-sync" for e in d.events), "back on blue")
    kube = job.kube
    assert switched_back(kube) == Switch("web", Side.STABLE, blue, 4)
    assert kube.stable_log == ["registry.local/web:1"] and kube.canary_replicas == 0
    assert done.stable is not None and done.stable.revision == 1
    released = (await job.versions()).history
    assert [(v.revision, v.outcome) for v in released[:2]] == [(2, Outcome.ROLLED_BACK), (1, Outcome.PROMOTED)]
    never_without_pods(job)


async def test_a_new_version_in_preview_is_the_new_green(start_job) -> None:
    job, blue = await attached(start_job, blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=0))
    await job.edit_image("registry.local/web:2")
    await in_preview(job)
    await job.operate(names.UPDATE_VERSION, UpdateVersionRequest(image="registry.local/web:3", container="app"))
    third = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.blue_green is not None
                               and d.blue_green.preview_revision == 3, "the new green in preview")
    assert third.canary is not None and third.canary.images["app"] == "registry.local/web:3"
    assert job.kube.services.selects["web-preview"] == (Side.CANARY, template_hash(job.kube.template))
    assert job.kube.services.selects["web"] == (Side.STABLE, blue)
    await job.operate(names.CONTINUE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    assert done.stable is not None and done.stable.revision == 3
    assert job.kube.stable_log == ["registry.local/web:1", "registry.local/web:3"]


async def test_a_rollback_to_an_older_version_is_a_new_green(start_job) -> None:
    job, _ = await attached(start_job, blue_green(scaleDownDelaySeconds=0))
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                       "revision 2 stable")
    await job.operate(names.ROLLBACK, RollbackRequest(revision=1))
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 3,
                              "revision 1's template delivered as revision 3")
    assert done.stable is not None and done.stable.images["app"] == "registry.local/web:1"
    assert job.kube.stable_log == ["registry.local/web:1", "registry.local/web:2", "registry.local/web:1"]
    never_without_pods(job)


async def test_delete_gives_the_services_back_and_removes_the_job_preview(start_job) -> None:
    job, _ = await attached(start_job, blue_green(autoPromotionEnabled=False))
    await job.edit_image("registry.local/web:2")
    await in_preview(job)
    await job.operate(names.DELETE)
    assert await job.handle.result() == "deleted"
    kube = job.kube
    assert kube.services.selects.get("web") is None
    assert "web-preview" not in kube.services.existing and ("delete_service", "web-preview") in kube.writes
    assert kube.canary_template is None and kube.paused is False and kube.images()["app"] == "registry.local/web:1"


async def test_a_green_that_never_becomes_ready_fails_without_touching_the_active_service(start_job) -> None:
    kube = FakeKube()
    kube.broken_images.add("registry.local/web:bad")
    job, _ = await attached(start_job, blue_green(), kube)
    await job.edit_image("registry.local/web:bad")
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "failed", timeout=40)
    assert "CrashLoopBackOff" in (failed.last_error or "")
    assert all(s.side is not Side.CANARY for s in kube.services.switches)
    assert kube.canary_replicas == 0 and kube.services.selects["web"] is None


@pytest.mark.parametrize("field", ["blueGreen.activeService", "blueGreen.previewService"])
async def test_services_that_do_not_fit_are_refused_at_apply_naming_the_field(
        env, apply_worker: FakeKube, field: str) -> None:
    apply_worker.services.refuse(field, "Service shop/web not found")
    spec = job_spec(name=f"web-{uuid.uuid4().hex[:6]}", steps=[], mode="blueGreen",
                    blueGreen={"activeService": "web"})
    with pytest.raises(InvalidInput) as refused:
        await canary_client.apply_job(env.client, spec)
    assert refused.value.field == field and "Service shop/web not found" in str(refused.value)
    assert apply_worker.owner is None and apply_worker.writes == []  # nothing was attached


ANALYSIS = {
    "templates": [{"name": "success-rate", "metrics": [{
        "name": "success-rate", "interval": "1s", "count": 3, "successCondition": "result >= 0.99",
        "failureCondition": "result < 0.95",
        "provider": {"prometheus": {"address": "http://prometheus:9090", "query": "ratio"}}}]}],
}
REF = {"templates": [{"templateName": "success-rate"}]}


def analysed(**fields: Any) -> JobSpec:
    return job_spec(steps=[], mode="blueGreen", analysis=ANALYSIS,
                    blueGreen={"activeService": "web", "previewService": "web-preview", **fields})


async def test_a_failed_pre_promotion_analysis_never_switches(start_job) -> None:
    job, blue = await attached(start_job, analysed(prePromotionAnalysis=REF))
    job.kube.metrics.set("success-rate", 0.999, 0.90)
    await job.edit_image("registry.local/web:2")
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "failed by the analysis")
    assert "pre-promotion analysis failed" in (failed.last_error or "")
    assert [(s.side, s.template_hash) for s in job.kube.services.switches if s.service == "web"] == [
        (Side.STABLE, blue), (None, None)]
    assert job.kube.canary_replicas == 0 and job.kube.stable_log == ["registry.local/web:1"]
    assert [a.kind for a in failed.analyses] == ["prePromotion"]


async def test_a_passed_pre_promotion_analysis_lets_the_switch_happen(start_job) -> None:
    job, _ = await attached(start_job, analysed(prePromotionAnalysis=REF, scaleDownDelaySeconds=0))
    job.kube.metrics.set("success-rate", 0.999)
    await job.edit_image("registry.local/web:2")
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                              and d.stable.revision == 2, "promoted")
    assert job.kube.metrics.taken("success-rate") == 3
    assert any(e.kind == "analysis-successful" and "pre-promotion" in e.message for e in done.events)


async def test_a_failed_post_promotion_analysis_switches_back_within_the_delay(start_job) -> None:
    job, blue = await attached(start_job, analysed(postPromotionAnalysis=REF, scaleDownDelaySeconds=3600))
    job.kube.metrics.set("success-rate", 0.999, 0.90)
    await job.edit_image("registry.local/web:2")
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "failed after the switch")
    assert "post-promotion analysis failed" in (failed.last_error or "")
    kube = job.kube
    assert switched_back(kube) == Switch("web", Side.STABLE, blue, 4)
    assert not any(write[0] in ("prepare_stable", "hold_stable") for write in kube.writes)
    assert kube.canary_replicas == 0 and kube.stable_log == ["registry.local/web:1"]
    assert (await job.versions()).history[0].outcome == Outcome.FAILED
    never_without_pods(job)


@pytest.mark.real_server
async def test_a_fresh_run_resumes_the_gate_without_measuring_again(start_job) -> None:
    job: Job = await start_job(FakeKube(), analysed(prePromotionAnalysis=REF, autoPromotionEnabled=False,
                                                    scaleDownDelaySeconds=0), max_history_events=40)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    first_run = (await job.handle.describe()).run_id
    job.kube.metrics.set("success-rate", 0.999)
    await job.edit_image("registry.local/web:2")
    gate = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.pause_reason is not None
                              and "continue" in d.pause_reason, "the gate after the analysis")
    await job.wait_for(lambda d: True, "a query on the newest run")
    assert (await job.handle.describe()).run_id != first_run  # handed over on the way
    assert gate.blue_green is not None and gate.blue_green.preview_revision == 2
    await job.operate(names.CONTINUE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                              and d.stable.revision == 2, "promoted")
    assert job.kube.metrics.taken("success-rate") == 3  # one analysis, never run again
    assert sum(1 for e in done.events if e.kind == "preview") == 1


async def test_promote_while_green_comes_up_switches_once_it_is_ready_and_keeps_the_delay(start_job) -> None:
    kube = FakeKube()
    kube.broken_images.add("registry.local/web:2")  # not Ready until the test says so
    job, blue = await attached(start_job, blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=3600), kube)
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PROGRESSING and kube.canary_replicas == 4, "green coming up")
    await job.operate(names.PROMOTE)
    assert kube.services.selects["web"] == (Side.STABLE, blue)  # never onto pods that are not Ready
    kube.broken_images.clear()
    switched = await job.wait_for(lambda d: d.blue_green is not None and d.blue_green.stage == "switched",
                                  "switched once green was Ready, without waiting at the gate")
    assert switched.phase == Phase.PROGRESSING and kube.replicas == 4  # blue kept for the delay
    assert [s.ready for s in kube.services.switches if s.side is Side.CANARY and s.service == "web"] == [4]
    assert not any(write[0] == "prepare_stable" for write in kube.writes)


async def test_a_failed_hand_over_puts_blue_back_before_users_leave_green(start_job) -> None:
    kube = FakeKube()
    kube.unpromotable_images.add("registry.local/web:2")  # Ready as green, never on the Deployment's pods
    job, blue = await attached(start_job, job_spec(steps=[], mode="blueGreen", progressDeadline="3s",
                                                   blueGreen={"activeService": "web", "scaleDownDelaySeconds": 0}),
                               kube)
    await job.edit_image("registry.local/web:2")
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "the hand-over failed", timeout=40)
    assert "promotion failed" in (failed.last_error or "")
    assert switched_back(kube) == Switch("web", Side.STABLE, blue, 4)  # blue back at full size first
    assert kube.stable_log[-1] == "registry.local/web:1" and kube.canary_replicas == 0
    assert kube.services.selects["web"] is None
    never_without_pods(job)


def test_the_temporal_ui_details_say_which_revision_users_reach() -> None:
    from workflows.models import BlueGreenStage, BlueGreenState, JobState
    from workflows.ui_details import current_details

    assert "Blue-green" not in current_details(JobState())
    state = JobState(blue_green=BlueGreenState(stage=BlueGreenStage.PREVIEW, active_revision=1, preview_revision=2))
    assert "**Blue-green:** preview; active revision 1, preview revision 2" in current_details(state)
