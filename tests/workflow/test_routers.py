"""A job with a traffic router: exact weights, stable at full size, 100 % stable on every way out.

Time-skipping, with the in-memory route of ``fake_router`` (the real router activities are
tested against the real API server in tests/activities and tests/e2e). Each test reads the
order of the cluster writes (``FakeKube.writes``: Deployments and route alike) and the route's
timeline, which says how many canary pods were Ready whenever the weight changed.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError

from starter import client as canary_client
from starter.errors import InvalidInput
from tests.workflow.conftest import Job, job_spec
from tests.workflow.fake_kube import FakeKube, template_hash
from workflows import names
from workflows.models import OperationRequest, Outcome, Phase, UpdateRulesRequest
from workflows.spec import JobSpec

ISTIO: dict[str, Any] = {"routing": "istio", "stableService": "web-stable", "canaryService": "web-canary",
                         "istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}
STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]


def routed(**overrides: Any) -> JobSpec:
    return job_spec(traffic=ISTIO, steps=STEPS, **overrides)


def index(writes: list[tuple[str, Any]], entry: tuple[str, Any], after: int = -1) -> int:
    """Where ``entry`` is in the write log (its first place after ``after``)."""
    return next(i for i, write in enumerate(writes) if i > after and write == entry)


async def _gate(job: Job, step: int) -> None:
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == step, f"the pause at step {step + 1}")


async def test_attach_sets_the_router_up_at_full_stable(start_job) -> None:
    kube = FakeKube()
    stable_hash = template_hash(kube.template)
    job: Job = await start_job(kube, routed())
    details = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached, route read")
    assert kube.router.checked and kube.router.checked[0].traffic.routing == "istio"
    assert kube.router.services and kube.router.stable_selects == stable_hash
    assert kube.router.weight == 0
    assert details.routing == "istio"
    assert [(r.route, r.stable, r.canary) for r in details.routes] == [("primary", 100, 0)]


async def test_weights_are_exact_on_ready_canaries_and_stable_keeps_its_size(start_job) -> None:
    job: Job = await start_job(FakeKube(replicas=4), routed())
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")

    first = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "weight 10")
    assert job.kube.router.weight == 10
    assert first.weight == 10 and first.actual_weight == 10  # what the route holds, not 1 pod of 5
    assert [(r.stable, r.canary) for r in first.routes] == [(90, 10)]
    assert job.kube.canary_replicas == 1 and first.canary_replicas == 1
    assert job.kube.replicas == 4 and first.stable_replicas == 4  # stable is never shrunk
    assert ("scale_stable", 3) not in job.kube.writes

    await job.operate(names.CONTINUE)
    second = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "weight 50")
    assert job.kube.router.weight == 50 and second.actual_weight == 50
    assert job.kube.canary_replicas == 2 and job.kube.replicas == 4
    # The canary's pods were Ready before the route gave them any traffic.
    assert all(w.ready_canary_pods >= 1 for w in job.kube.router.timeline if w.canary > 0)
    writes = job.kube.writes
    assert index(writes, ("scale_canary", 2)) < index(writes, ("router_weight", 50))


async def test_promotion_moves_traffic_over_while_the_deployment_changes_version(start_job) -> None:
    kube = FakeKube(replicas=4)
    old_hash = template_hash(kube.template)
    job: Job = await start_job(kube, routed())
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    await _gate(job, 1)
    new_hash = template_hash(kube.template)
    await job.operate(names.PROMOTE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")

    writes = kube.writes
    at_100 = index(writes, ("router_weight", 100))
    emptied = index(writes, ("prepare_stable", "registry.local/web:2"))
    grown = index(writes, ("hold_stable", 4), after=emptied)
    aimed = index(writes, ("router_services", new_hash))
    at_0 = index(writes, ("router_weight", 0), after=at_100)
    down = index(writes, ("scale_canary", 0), after=at_100)
    # All traffic on the full-size canary before the old pods go, the stable Service moved to the
    # new pods once they are up, and only then the route back to stable and the canary away.
    assert index(writes, ("scale_canary", 4)) < at_100 < emptied < grown < aimed < at_0 < down
    assert [(w.canary, w.stable_selects) for w in kube.router.timeline[-2:]] == [(100, old_hash), (0, new_hash)]
    assert kube.router.timeline[-2].ready_canary_pods == 4
    assert done.stable is not None and done.stable.images["app"] == "registry.local/web:2"
    assert done.actual_weight == 0 and [(r.stable, r.canary) for r in done.routes] == [(100, 0)]
    assert kube.canary_replicas == 0 and kube.replicas == 4


async def test_terminate_sends_all_traffic_to_stable_before_the_canary_goes(start_job) -> None:
    job: Job = await start_job(FakeKube(), routed())
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    await _gate(job, 1)
    await job.operate(names.TERMINATE, OperationRequest(reason="errors"))
    done = await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    writes = job.kube.writes
    at_10 = index(writes, ("router_weight", 10))
    assert index(writes, ("router_weight", 0), after=at_10) < index(writes, ("scale_canary", 0), after=at_10)
    assert job.kube.router.weight == 0 and job.kube.canary_replicas == 0 and job.kube.replicas == 4
    assert done.actual_weight == 0 and [(r.stable, r.canary) for r in done.routes] == [(100, 0)]


async def test_a_pause_that_rolls_back_sends_traffic_to_stable_first(start_job) -> None:
    spec = job_spec(traffic=ISTIO, steps=[{"setWeight": 20}, {"pause": {"duration": "1m", "onTimeout": "rollback"}}])
    job: Job = await start_job(FakeKube(), spec)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    await _gate(job, 1)
    await job.env.sleep(61)
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "rolled back")
    writes = job.kube.writes
    at_20 = index(writes, ("router_weight", 20))
    assert index(writes, ("router_weight", 0), after=at_20) < index(writes, ("scale_canary", 0), after=at_20)
    assert failed.actual_weight == 0 and job.kube.router.weight == 0


async def test_a_canary_that_never_becomes_ready_never_gets_traffic(start_job) -> None:
    kube = FakeKube()
    kube.broken_images.add("registry.local/web:broken")
    job: Job = await start_job(kube, routed(progressDeadline="4s"))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:broken")
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "rolled back", timeout=60)
    assert "CrashLoopBackOff" in (failed.last_error or "")
    assert kube.router.timeline == [] and kube.router.weight == 0
    assert kube.canary_replicas == 0 and kube.replicas == 4


async def test_set_canary_scale_sizes_the_canary_and_set_weight_keeps_that_size(start_job) -> None:
    spec = job_spec(traffic=ISTIO, steps=[{"setCanaryScale": {"replicas": 3}}, {"setWeight": 5}, {"pause": {}}])
    job: Job = await start_job(FakeKube(replicas=4), spec)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    paused = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the pause")
    assert job.kube.canary_replicas == 3 and paused.canary_replicas == 3
    assert job.kube.router.weight == 5 and paused.actual_weight == 5 and job.kube.replicas == 4


async def test_delete_leaves_the_route_at_stable_and_removes_the_services(start_job) -> None:
    job: Job = await start_job(FakeKube(), routed())
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    await _gate(job, 1)
    await job.operate(names.DELETE)
    assert await job.handle.result() == "deleted"
    writes = job.kube.writes
    at_10 = index(writes, ("router_weight", 10))
    assert index(writes, ("router_weight", 0), after=at_10) < index(writes, ("router_cleanup", None))
    assert index(writes, ("router_cleanup", None)) < index(writes, ("detach", 4))
    assert job.kube.router.weight == 0 and not job.kube.router.services


async def test_traffic_cannot_change_while_a_release_runs(start_job) -> None:
    job: Job = await start_job(FakeKube(), routed())
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    await _gate(job, 1)
    with pytest.raises(WorkflowUpdateFailedError) as error:
        await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": STEPS}))
    assert "traffic cannot change while revision 2" in str(error.value.cause)
    # The same router with other steps is fine.
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": STEPS[:2], "traffic": ISTIO}))


async def test_a_router_given_by_update_rules_is_checked_then_set_up(start_job) -> None:
    kube = FakeKube()
    job: Job = await start_job(kube, job_spec(steps=STEPS))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    assert kube.router.checked == [] and not kube.router.services  # replica ratio: no router call

    kube.router.refuse("traffic.istio.virtualService.routes", "VirtualService shop/web has no http route named 'x'")
    with pytest.raises(WorkflowUpdateFailedError) as error:
        await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": STEPS, "traffic": ISTIO}))
    cause = error.value.cause
    assert "no http route named 'x'" in str(cause)
    assert getattr(cause, "type", None) == "InvalidOperationInput"
    assert list(getattr(cause, "details", ())) == ["traffic.istio.virtualService.routes"]
    assert (await job.details()).routing == "replicaRatio"

    # A signal with the same rules is refused alike, as an event.
    await job.handle.signal(names.UPDATE_RULES, {"rules": {"steps": STEPS, "traffic": ISTIO}})
    await job.wait_for(lambda d: any(e.kind == "rejected" and "no http route" in e.message for e in d.events),
                       "the signal's rejection")

    kube.router.problem = None
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": STEPS, "traffic": ISTIO}))
    details = await job.wait_for(lambda d: d.routing == "istio" and d.routes, "the router set up")
    assert kube.router.services and kube.router.weight == 0
    assert [(r.stable, r.canary) for r in details.routes] == [(100, 0)]


async def test_apply_refuses_a_router_that_does_not_fit_naming_the_field(env, apply_worker: FakeKube) -> None:
    apply_worker.router.refuse("traffic.istio.virtualService.name", "no VirtualService 'web' in namespace shop")
    spec = routed(name=f"web-{uuid.uuid4().hex[:6]}")
    with pytest.raises(InvalidInput) as error:
        await canary_client.apply_job(env.client, spec)
    assert error.value.field == "traffic.istio.virtualService.name"
    assert "no VirtualService 'web'" in str(error.value)
    assert apply_worker.owner is None and not apply_worker.paused  # nothing was attached

    # A running job given a router that does not fit: refused the same way, the job unchanged.
    apply_worker.router.problem = None
    plain = job_spec(name=spec.name, steps=STEPS)
    assert (await canary_client.apply_job(env.client, plain)).created
    apply_worker.router.refuse("traffic.istio.virtualService.name", "no VirtualService 'web' in namespace shop")
    with pytest.raises(InvalidInput) as error:
        await canary_client.apply_job(env.client, spec)
    assert error.value.field == "traffic.istio.virtualService.name"
    details = await canary_client.details(env.client, spec.namespace, spec.name)
    assert details.routing == "replicaRatio"
    await canary_client.operate(env.client, spec.namespace, spec.name, names.DELETE, OperationRequest())


async def test_an_aborted_release_is_recorded_with_the_route_back_on_stable(start_job) -> None:
    job: Job = await start_job(FakeKube(), routed())
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    await _gate(job, 1)
    await job.edit_image("registry.local/web:3")  # supersedes: the new canary starts from 0 %
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.canary is not None and d.canary.revision == 3,
                       "the next release's first pause")
    versions = await job.versions()
    assert versions.history[0].outcome == Outcome.SUPERSEDED
    weights = [w.canary for w in job.kube.router.timeline]
    assert weights == [10, 0, 10]


async def test_a_failed_analysis_sends_traffic_to_stable_before_the_canary_goes(start_job) -> None:
    template = {"name": "success-rate", "args": [{"name": "service"}], "metrics": [{
        "name": "success-rate", "interval": "1m", "count": 3,
        "successCondition": "result >= 0.99", "failureCondition": "result < 0.95",
        "provider": {"prometheus": {"address": "http://prometheus:9090", "query": "ratio"}}}]}
    spec = job_spec(traffic=ISTIO, analysis={"templates": [template]}, steps=[
        {"setWeight": 20}, {"analysis": {"templates": [{"templateName": "success-rate"}],
                                         "args": [{"name": "service", "value": "web"}]}}])
    job: Job = await start_job(FakeKube(), spec)
    job.kube.metrics.set("success-rate", 0.9)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    failed = await job.wait_for(lambda d: d.phase == Phase.FAILED, "rolled back by the analysis")
    assert "success-rate" in (failed.last_error or "")
    writes = job.kube.writes
    at_20 = index(writes, ("router_weight", 20))
    assert index(writes, ("router_weight", 0), after=at_20) < index(writes, ("scale_canary", 0), after=at_20)
    assert job.kube.router.weight == 0 and failed.actual_weight == 0


async def test_a_deployment_created_again_gets_its_router_set_up_again(start_job) -> None:
    job: Job = await start_job(FakeKube(), routed())
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    assert job.kube.writes.count(("router_services", template_hash(job.kube.template))) == 1
    job.kube.exists = False  # its Services went with it (ownerReference)
    await job.handle.signal(names.WORKLOAD_CHANGED)
    gone = await job.wait_for(lambda d: d.phase == Phase.WORKLOAD_MISSING, "missing")
    assert gone.routes == []
    job.kube.exists, job.kube.owner = True, None
    await job.handle.signal(names.WORKLOAD_CHANGED)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "taken over, route set up")
    assert job.kube.writes.count(("router_services", template_hash(job.kube.template))) == 2
    assert job.kube.router.weight == 0


async def test_a_route_gone_mid_release_does_not_keep_the_canary_running(start_job) -> None:
    job: Job = await start_job(FakeKube(), routed())
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    await _gate(job, 1)
    job.kube.router.refuse("traffic.istio.virtualService.name", "no VirtualService 'web' in namespace shop")
    await job.operate(names.TERMINATE, OperationRequest(reason="errors"))
    done = await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    assert job.kube.canary_replicas == 0 and job.kube.replicas == 4
    assert any(e.kind == "error" and "no VirtualService 'web'" in e.message for e in done.events)
