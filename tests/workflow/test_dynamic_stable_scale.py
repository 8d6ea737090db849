"""``traffic.dynamicStableScale``: with a router, the stable side runs the pods its weight needs.

Time-skipping, with ``FakeKube``, whose stable pods count as Ready only once a wait for them
has seen them, and ``FakeRouter``, whose timeline records how many stable and canary pods were
Ready at every weight it was given. The promise under test: the route never sends a side more
traffic than its Ready pods were sized for, on the way up, on the way back, and at every end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import ValidationError

from tests.workflow.conftest import Job, job_spec
from tests.workflow.fake_kube import FakeKube
from tests.workflow.fake_router import FakeRouter
from workflows import names
from workflows.models import OperationRequest, Phase, UpdateRulesRequest
from workflows.policy import canary_replicas_for_weight, stable_replicas_for_weight
from workflows.spec import JobSpec, validation_message

ISTIO: dict[str, Any] = {"routing": "istio", "stableService": "web-stable", "canaryService": "web-canary",
                         "istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}
DYNAMIC: dict[str, Any] = {**ISTIO, "dynamicStableScale": True}
StartJob = Callable[..., Awaitable[Job]]
STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}, {"pause": {}},
                               {"setWeight": 100}, {"pause": {}}]


def index(writes: list[tuple[str, Any]], entry: tuple[str, Any], after: int = -1) -> int:
    """Where ``entry`` is in the write log (its first place after ``after``)."""
    return next(i for i, write in enumerate(writes) if i > after and write == entry)


def assert_never_underserved(router: FakeRouter, replicas: int) -> None:
    """Every weight the route took had enough Ready pods behind it, on both sides."""
    for write in router.timeline:
        assert write.ready_stable_pods is not None
        assert write.ready_stable_pods >= stable_replicas_for_weight(replicas, write.canary), write
        assert write.ready_canary_pods >= (1 if write.canary > 0 else 0), write


async def _gate(job: Job, step: int) -> Any:
    return await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == step,
                              f"the pause at step {step + 1}")


async def _released(job: Job) -> None:
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached, route read")
    await job.edit_image("registry.local/web:2")


# -- the spec ------------------------------------------------------------------------------------


def test_dynamic_stable_scale_is_refused_without_a_router_naming_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate({"name": "web", "namespace": "shop", "workload": {"name": "web"},
                                "steps": [{"setWeight": 5}], "traffic": {"dynamicStableScale": True}})
    assert "traffic.dynamicStableScale: only used with a router" in validation_message(error.value)
    spec = job_spec(traffic=DYNAMIC)
    assert spec.traffic.dynamic_stable_scale
    assert spec.model_dump(mode="json", by_alias=True)["traffic"]["dynamicStableScale"] is True
    assert not job_spec(traffic=ISTIO).traffic.dynamic_stable_scale  # off unless asked for


@pytest.mark.parametrize(("total", "weight", "expected"), [
    (4, 0, 4), (4, 10, 4), (4, 25, 3), (4, 60, 2), (4, 99, 1), (4, 100, 0), (10, 1, 10), (10, 95, 1),
    (3, 33, 3), (3, 34, 2), (0, 50, 0), (1, 99, 1),
])
def test_stable_pods_for_a_weight_round_up_and_keep_one_while_stable_has_weight(
        total: int, weight: int, expected: int) -> None:
    assert stable_replicas_for_weight(total, weight) == expected
    # Together the two sides never run fewer pods than the Deployment asks for.
    assert stable_replicas_for_weight(total, weight) + canary_replicas_for_weight(total, weight) >= total


# -- a release -----------------------------------------------------------------------------------


async def test_stable_shrinks_after_the_canary_has_its_weight_and_details_say_so(start_job: StartJob) -> None:
    kube = FakeKube(replicas=4)
    job: Job = await start_job(kube, job_spec(traffic=DYNAMIC, steps=STEPS))
    await _released(job)

    first = await _gate(job, 1)  # 10 %: stable's 90 % still needs all 4 pods
    assert (kube.router.weight, kube.canary_replicas, kube.replicas) == (10, 1, 4)
    assert (first.canary_replicas, first.stable_replicas, first.actual_weight) == (1, 4, 10)

    await job.operate(names.CONTINUE)
    second = await _gate(job, 3)  # 60 %: canary 3 pods, stable's 40 % needs 2
    assert (kube.router.weight, kube.canary_replicas, kube.replicas) == (60, 3, 2)
    assert (second.canary_replicas, second.stable_replicas, second.actual_weight) == (3, 2, 60)
    writes = kube.writes
    at_60 = index(writes, ("router_weight", 60))
    # The canary grown and Ready, then the weight, and only then the stable pods go.
    assert index(writes, ("scale_canary", 3)) < at_60 < index(writes, ("scale_stable", 2))

    await job.operate(names.CONTINUE)
    third = await _gate(job, 5)  # 100 %: stable needs no pod
    assert (kube.router.weight, kube.canary_replicas, kube.replicas) == (100, 4, 0)
    assert (third.canary_replicas, third.stable_replicas) == (4, 0)
    assert_never_underserved(kube.router, 4)


async def test_terminate_grows_stable_back_and_waits_for_it_before_the_weight_returns(start_job: StartJob) -> None:
    kube = FakeKube(replicas=4)
    job: Job = await start_job(kube, job_spec(traffic=DYNAMIC, steps=STEPS))
    await _released(job)
    await _gate(job, 1)
    await job.operate(names.CONTINUE)
    await _gate(job, 3)
    assert kube.replicas == 2 and kube.ready_stable == 2

    await job.operate(names.TERMINATE, OperationRequest(reason="errors"))
    done = await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    writes = kube.writes
    at_60 = index(writes, ("router_weight", 60))
    grown = index(writes, ("scale_stable", 4), after=at_60)
    ready = index(writes, ("stable_ready", 4), after=at_60)
    at_0 = index(writes, ("router_weight", 0), after=at_60)
    assert grown < ready < at_0 < index(writes, ("scale_canary", 0), after=at_60)
    assert kube.router.timeline[-1].canary == 0 and kube.router.timeline[-1].ready_stable_pods == 4
    assert_never_underserved(kube.router, 4)
    assert (kube.router.weight, kube.canary_replicas, kube.replicas) == (0, 0, 4)
    assert (done.actual_weight, done.canary_replicas, done.stable_replicas) == (0, 0, 4)


async def test_a_lower_weight_grows_stable_first_then_moves_the_weight(start_job: StartJob) -> None:
    steps = [{"setWeight": 75}, {"pause": {}}, {"setWeight": 20}, {"pause": {}}]
    kube = FakeKube(replicas=4)
    job: Job = await start_job(kube, job_spec(traffic=DYNAMIC, steps=steps))
    await _released(job)
    high = await _gate(job, 1)
    assert (high.canary_replicas, high.stable_replicas, kube.replicas) == (3, 1, 1)

    await job.operate(names.CONTINUE)
    low = await _gate(job, 3)
    writes = kube.writes
    at_75 = index(writes, ("router_weight", 75))
    ready = index(writes, ("stable_ready", 4), after=at_75)
    at_20 = index(writes, ("router_weight", 20))
    # Stable's 80 % needs 4 pods: Ready before the weight comes back; the canary shrinks after it.
    assert index(writes, ("scale_stable", 4), after=at_75) < ready < at_20 < index(writes, ("scale_canary", 1))
    assert (low.canary_replicas, low.stable_replicas, low.actual_weight) == (1, 4, 20)
    assert_never_underserved(kube.router, 4)


async def test_a_stable_side_that_cannot_grow_keeps_the_traffic_on_the_canary(start_job: StartJob) -> None:
    kube = FakeKube(replicas=4)
    job: Job = await start_job(kube, job_spec(traffic=DYNAMIC, steps=STEPS, progressDeadline="5s"))
    await _released(job)
    await _gate(job, 1)
    await job.operate(names.CONTINUE)
    await _gate(job, 3)
    kube.stable_stuck = True  # new stable pods stay Pending

    await job.operate(names.TERMINATE, OperationRequest(reason="errors"))
    await job.env.sleep(10)
    stuck = await job.wait_for(lambda d: d.phase == Phase.ERROR, "the rollback waiting for stable pods")
    assert "2 of 4 stable pods available; pod web-x: Pending" in (stuck.last_error or "")
    # The route still sends 60 % to the 3 canary pods: stable has 2 Ready pods, not 4.
    assert kube.router.weight == 60 and kube.canary_replicas == 3 and kube.ready_stable == 2

    kube.stable_stuck = False  # the cluster found room
    await job.env.sleep(61)
    back = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.actual_weight == 0, "back at rest")
    assert (kube.router.weight, kube.canary_replicas, kube.replicas) == (0, 0, 4)
    assert back.stable_replicas == 4
    assert_never_underserved(kube.router, 4)


async def test_promotion_from_a_stable_side_at_zero_brings_the_new_version_up_before_the_route(
        start_job: StartJob) -> None:
    kube = FakeKube(replicas=4)
    job: Job = await start_job(kube, job_spec(traffic=DYNAMIC, steps=STEPS))
    await _released(job)
    for gate in (1, 3, 5):
        await _gate(job, gate)
        await job.operate(names.CONTINUE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    writes = kube.writes
    at_100 = index(writes, ("router_weight", 100))
    emptied = index(writes, ("prepare_stable", "registry.local/web:2"), after=at_100)
    grown = index(writes, ("hold_stable", 4), after=emptied)
    at_0 = index(writes, ("router_weight", 0), after=at_100)
    assert at_100 < emptied < grown < at_0 < index(writes, ("scale_canary", 0), after=at_100)
    assert kube.router.timeline[-1].ready_stable_pods == 4
    assert_never_underserved(kube.router, 4)
    assert (done.stable_replicas, done.canary_replicas, kube.replicas, kube.canary_replicas) == (4, 0, 4, 0)
    assert done.stable is not None and done.stable.images["app"] == "registry.local/web:2"


async def test_without_the_flag_a_router_keeps_stable_at_full_size(start_job: StartJob) -> None:
    kube = FakeKube(replicas=4)
    job: Job = await start_job(kube, job_spec(traffic=ISTIO, steps=STEPS))
    await _released(job)
    for gate in (1, 3):
        await _gate(job, gate)
        await job.operate(names.CONTINUE)
    at_full = await _gate(job, 5)
    assert kube.replicas == 4 and at_full.stable_replicas == 4 and kube.router.weight == 100
    await job.operate(names.TERMINATE)
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    assert [value for kind, value in kube.writes if kind == "scale_stable"] == [4]  # the rollback's, at full size
    assert not any(kind == "stable_ready" for kind, _ in kube.writes)


async def test_turning_the_flag_on_between_releases_keeps_the_route_and_its_services(start_job: StartJob) -> None:
    kube = FakeKube(replicas=4)
    job: Job = await start_job(kube, job_spec(traffic=ISTIO, steps=STEPS[:4]))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached")
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": STEPS[:4], "traffic": DYNAMIC}))
    await job.wait_for(lambda d: any("dynamicStableScale on" in e.message for e in d.events), "the flag taken")
    assert ("router_cleanup", None) not in kube.writes and kube.router.services
    await job.edit_image("registry.local/web:2")
    await _gate(job, 1)
    await job.operate(names.CONTINUE)
    second = await _gate(job, 3)
    assert kube.replicas == 2 and second.stable_replicas == 2
