"""Metric analysis in a release: verdicts, limits, background vs step, and operators (time-skipping).

The values come from tests/workflow/fake_metrics.py (scripted per metric); their judgement is the
real CEL of the job's conditions. Providers are tested against a real Prometheus elsewhere.
"""

from __future__ import annotations

from typing import Any

from tests.workflow.conftest import HOPS, Job, job_spec
from tests.workflow.fake_metrics import DOWN
from workflows import names
from workflows.models import OperationRequest, Phase, StepStatus, UpdateRulesRequest
from workflows.spec import JobSpec
from workflows.verdict import MeasurementPhase, MetricPhase


def _template(name: str = "success-rate", **metric: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name, "interval": "1m", "count": 3,
        "successCondition": "result >= 0.99", "failureCondition": "result < 0.95",
        "provider": {"prometheus": {"address": "http://prometheus:9090",
                                    "query": 'ratio{workload="{{args.service}}-canary"}'}},
    }
    spec.update(metric)
    return {"name": name, "args": [{"name": "service"}], "metrics": [spec]}


def _analysis_spec(*, background: dict[str, Any] | None = None, steps: list[dict[str, Any]] | None = None,
                   **metric: Any) -> JobSpec:
    analysis: dict[str, Any] = {"templates": [_template(**metric)]}
    if background is not None:
        analysis["background"] = background
    return job_spec(
        steps=steps or [{"setWeight": 25}, {"analysis": {"templates": [{"templateName": "success-rate"}],
                                                          "args": [{"name": "service", "value": "web"}]}},
                        {"setWeight": 50}],
        analysis=analysis,
    )


async def _release(start_job, spec: JobSpec) -> Job:
    job: Job = await start_job(spec=spec)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    return job


async def test_a_healthy_canary_passes_its_analysis_step_and_is_promoted(start_job) -> None:
    job = await _release(start_job, _analysis_spec())
    job.kube.metrics.set("success-rate", 0.999)
    await job.wait_for(lambda d: bool(d.analyses) and d.analyses[0].metrics[0].status.measured >= 1, "measured")
    assert job.kube.metrics.requests[0].provider.prometheus is not None
    assert job.kube.metrics.requests[0].provider.prometheus.query == 'ratio{workload="web-canary"}'
    await job.env.sleep(130)  # two more intervals
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    assert done.stable is not None and done.stable.revision == 2
    assert job.kube.metrics.taken("success-rate") == 3
    [run] = done.analyses
    assert run.phase == MetricPhase.SUCCESSFUL and run.step == 1
    assert [m.value for m in run.metrics[0].measurements] == [0.999] * 3
    assert all(s.status == StepStatus.SUCCEEDED for s in done.steps)


async def test_a_failing_canary_is_rolled_back_at_its_first_bad_measurement(start_job) -> None:
    job = await _release(start_job, _analysis_spec())
    job.kube.metrics.set("success-rate", 0.93)
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "rolled back")
    assert job.kube.metrics.taken("success-rate") == 1, "failureLimit 0: the first failure decides"
    assert failed.last_error is not None
    assert "metric success-rate failed: value 0.93" in failed.last_error
    assert "failureCondition result < 0.95" in failed.last_error
    assert failed.steps[1].status == StepStatus.FAILED
    assert (failed.steps[2].status, failed.steps[2].message) == (StepStatus.SKIPPED, "not run: the release failed"), \
        "the release never reached 50 %"
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4
    assert job.kube.images(job.kube.stable_template)["app"] == "registry.local/web:1"
    assert failed.stable is not None and failed.stable.revision == 1


async def test_failure_limit_tolerates_that_many_failures(start_job) -> None:
    job = await _release(start_job, _analysis_spec(failureLimit=1, count=4))
    job.kube.metrics.set("success-rate", 0.9, 0.999, 0.9)
    await job.wait_for(lambda d: bool(d.analyses) and d.analyses[0].metrics[0].status.measured == 1, "1st")
    await job.env.sleep(61)
    await job.wait_for(lambda d: d.analyses[0].metrics[0].status.measured == 2, "2nd")
    assert (await job.details()).phase == Phase.PROGRESSING
    await job.env.sleep(61)
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "the second failure")
    assert "2 failed, failureLimit 1" in (failed.last_error or "")


async def test_no_traffic_is_inconclusive_and_waits_for_a_human(start_job) -> None:
    job = await _release(start_job, _analysis_spec(count=1))
    job.kube.metrics.set("success-rate", None)  # no data: an idle service
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "inconclusive")
    assert paused.current_step == 1
    assert paused.pause_reason is not None and "inconclusive" in paused.pause_reason
    assert "no data" in paused.pause_reason
    assert paused.canary is not None and job.kube.canary_replicas == 1, "nothing rolled back"
    await job.operate(names.CONTINUE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted after continue")
    assert done.stable is not None and done.stable.revision == 2


async def test_an_unreachable_provider_never_passes_silently(start_job) -> None:
    job = await _release(start_job, _analysis_spec(count=1, consecutiveErrorLimit=2))
    job.kube.metrics.set("success-rate", DOWN)
    await job.wait_for(lambda d: bool(d.analyses) and d.analyses[0].metrics[0].status.errors == 1, "1st error")
    for measured in (2, 3):
        await job.env.sleep(61)
        await job.wait_for(lambda d, m=measured: d.analyses[0].metrics[0].status.errors == m, f"error {measured}")
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "inconclusive after errors")
    assert "3 errors in a row" in (paused.pause_reason or "")
    assert [m.phase for m in paused.analyses[0].metrics[0].measurements] == [MeasurementPhase.ERROR] * 3
    await job.operate(names.TERMINATE, OperationRequest(reason="provider down"))
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    assert job.kube.canary_replicas == 0


async def test_background_analysis_rolls_back_in_the_middle_of_a_pause(start_job) -> None:
    spec = _analysis_spec(count=None, background={"templates": [{"templateName": "success-rate"}],
                                                  "args": [{"name": "service", "value": "web"}], "startingStep": 1},
                          steps=[{"setWeight": 25}, {"pause": {"duration": "1h"}}, {"setWeight": 50}])
    job = await _release(start_job, spec)
    job.kube.metrics.set("success-rate", 0.999, 0.999, 0.5)
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED and bool(d.analyses), "the pause, measuring")
    assert paused.analyses[0].kind == "background" and paused.analyses[0].step == 1
    await job.env.sleep(150)
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "rolled back by the background analysis")
    assert "background analysis failed: metric success-rate failed: value 0.5" in (failed.last_error or "")
    assert failed.steps[1].status == StepStatus.FAILED
    assert job.kube.metrics.taken("success-rate") == 3
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4


async def test_background_analysis_without_a_good_measurement_holds_the_promotion(start_job) -> None:
    spec = _analysis_spec(count=None, initialDelay="10m",
                          background={"templates": [{"templateName": "success-rate"}],
                                      "args": [{"name": "service", "value": "web"}]},
                          steps=[{"setWeight": 50}])
    job = await _release(start_job, spec)
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "held before promotion")
    assert job.kube.metrics.taken("success-rate") == 0
    assert "no successful measurement" in (paused.pause_reason or "")
    await job.operate(names.CONTINUE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    assert done.stable is not None and done.stable.revision == 2


async def test_terminate_stops_the_analysis(start_job) -> None:
    job = await _release(start_job, _analysis_spec(count=5))
    job.kube.metrics.set("success-rate", 0.999)
    await job.wait_for(lambda d: bool(d.analyses) and d.analyses[0].metrics[0].status.measured == 1, "measuring")
    await job.operate(names.TERMINATE)
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    await job.env.sleep(600)
    assert job.kube.metrics.taken("success-rate") == 1, "no measurement after terminate"
    assert job.kube.canary_replicas == 0


async def test_promote_skips_the_analysis(start_job) -> None:
    job = await _release(start_job, _analysis_spec(count=5))
    job.kube.metrics.set("success-rate", 0.999)
    await job.wait_for(lambda d: bool(d.analyses), "measuring")
    await job.operate(names.PROMOTE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    assert done.stable is not None and done.stable.revision == 2
    assert (done.steps[1].status, done.steps[1].message) == (StepStatus.STOPPED, "ended by promote")


async def test_update_rules_can_remove_the_analysis_mid_release(start_job) -> None:
    job = await _release(start_job, _analysis_spec(count=5))
    job.kube.metrics.set("success-rate", 0.999)
    await job.wait_for(lambda d: bool(d.analyses), "measuring")
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": [{"setWeight": 25}, {"pause": {}}]}))
    gate = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the new rules' gate")
    assert [s.description for s in gate.steps] == ["setWeight 25%", "pause until continued"]
    taken = job.kube.metrics.taken("success-rate")
    await job.env.sleep(600)
    assert job.kube.metrics.taken("success-rate") == taken, "the removed analysis measures no more"
    await job.operate(names.CONTINUE)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")


@HOPS
async def test_a_long_analysis_step_continues_as_new_and_keeps_its_measurements(start_job) -> None:
    spec = _analysis_spec(count=12)
    job: Job = await start_job(spec=spec, max_history_events=80)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    job.kube.metrics.set("success-rate", 0.999)
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: bool(d.analyses) and d.analyses[0].metrics[0].status.measured >= 1, "measuring")
    for minute in range(2, 13):
        await job.env.sleep(61)
        await job.wait_for(lambda d, m=minute: d.analyses and d.analyses[0].metrics[0].status.measured >= m,
                           f"measurement {minute}")
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    latest = job.client.get_workflow_handle(job.handle.id)
    assert (await latest.describe()).run_id != job.handle.result_run_id, "the analysis handed over"
    [run] = done.analyses
    assert run.phase == MetricPhase.SUCCESSFUL
    assert run.metrics[0].status.measured == 12 and run.metrics[0].status.successful == 12
    # The hop waits for a measurement in flight: none is lost, none taken twice.
    assert job.kube.metrics.taken("success-rate") == 12


@HOPS
async def test_background_analysis_goes_on_across_continue_as_new(start_job) -> None:
    spec = _analysis_spec(count=None, background={"templates": [{"templateName": "success-rate"}],
                                                  "args": [{"name": "service", "value": "web"}]},
                          steps=[{"setWeight": 25}, {"pause": {"duration": "2h"}}, {"setWeight": 50}])
    job: Job = await start_job(spec=spec, max_history_events=70)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    job.kube.metrics.set("success-rate", *([0.999] * 12), 0.5)
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the pause")
    failed = None
    for _ in range(20):
        await job.env.sleep(61)
        details = await job.wait_for(lambda d: bool(d.analyses), "details")
        if details.phase == Phase.FAILED:
            failed = details
            break
    assert failed is not None, "the bad value after the hop rolled the release back"
    latest = job.client.get_workflow_handle(job.handle.id)
    assert (await latest.describe()).run_id != job.handle.result_run_id, "the release handed over at its pause"
    [run] = failed.analyses
    assert run.metrics[0].status.successful >= 12 and run.metrics[0].status.failed == 1
    assert job.kube.canary_replicas == 0
