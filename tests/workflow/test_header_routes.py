"""``setHeaderRoute`` through a router: matching requests go to a Ready canary, and no route outlives its release.

Time-skipping, with the in-memory route of ``fake_router``, whose timeline records which
header routes the route held after each write and how many canary pods were Ready then.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.workflow.conftest import Job, job_spec
from tests.workflow.fake_kube import FakeKube
from tests.workflow.test_routers import ISTIO, index
from workflows import names
from workflows.models import OperationRequest, Phase

BETA = {"setHeaderRoute": {"name": "beta", "match": [{"headerName": "x-canary", "headerValue": {"exact": "yes"}}]}}
AB_STEPS: list[dict[str, Any]] = [BETA, {"pause": {}}, {"setWeight": 20}, {"pause": {}},
                                  {"setHeaderRoute": {"name": "beta"}}, {"pause": {}}]


async def _gate(job: Job, step: int) -> Any:
    return await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == step, f"the pause {step + 1}")


async def test_a_header_route_at_weight_zero_gets_a_ready_canary_and_stays_until_removed(start_job) -> None:
    job: Job = await start_job(FakeKube(replicas=4), job_spec(traffic=ISTIO, steps=AB_STEPS))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")

    first = await _gate(job, 1)
    router = job.kube.router
    assert router.header_routes == ("beta",) and router.weight == 0
    assert [r.name for r in first.header_routes] == ["beta"] and first.actual_weight == 0
    # Requests with the header reach a Ready pod: the canary got one before the route did.
    assert router.timeline[0].header_routes == ("beta",) and router.timeline[0].ready_canary_pods == 1
    assert first.canary_replicas == 1 and job.kube.replicas == 4

    await job.operate(names.CONTINUE)
    await _gate(job, 3)
    assert router.weight == 20 and router.header_routes == ("beta",), "a weight write keeps the header route"

    await job.operate(names.CONTINUE)
    removed = await _gate(job, 5)
    assert router.header_routes == () and router.weight == 20 and removed.header_routes == []

    await job.operate(names.CONTINUE)
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    assert router.weight == 0 and router.header_routes == () and done.header_routes == []


@pytest.mark.parametrize("end", ["terminate", "promote", "pause-timeout", "delete"])
async def test_every_end_of_the_release_leaves_no_header_route(start_job, end: str) -> None:
    on_timeout = {"duration": "1m", "onTimeout": "rollback"} if end == "pause-timeout" else {}
    steps = [{"setWeight": 10}, BETA, {"pause": on_timeout}, {"setWeight": 50}]
    job: Job = await start_job(FakeKube(), job_spec(traffic=ISTIO, steps=steps))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    await _gate(job, 2)
    router = job.kube.router
    assert router.header_routes == ("beta",) and router.weight == 10
    on = index(job.kube.writes, ("router_headers", ("beta",)))

    if end == "terminate":
        await job.operate(names.TERMINATE, OperationRequest(reason="bad"))
        details = await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    elif end == "promote":
        await job.operate(names.PROMOTE)
        details = await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    elif end == "pause-timeout":
        await job.env.sleep(61)
        details = await job.wait_for(lambda d: d.phase == Phase.FAILED, "rolled back")
    else:
        await job.operate(names.DELETE)
        assert await job.handle.result() == "deleted"
        details = None

    writes = job.kube.writes
    off = index(writes, ("router_headers", ()), after=on)
    assert off < index(writes, ("scale_canary", 0), after=on), "the header route goes before the canary's pods"
    assert router.header_routes == () and router.weight == 0
    if details is not None:
        assert details.header_routes == [] and [(r.stable, r.canary) for r in details.routes] == [(100, 0)]
    if end == "promote":
        # The promotion's own writes (100 % to the canary, then back to stable) carry no header route.
        assert all(w.header_routes == () for w in router.timeline if w.canary == 100)


async def test_the_next_release_starts_without_the_last_ones_header_route(start_job) -> None:
    steps = [BETA, {"pause": {}}]
    job: Job = await start_job(FakeKube(), job_spec(traffic=ISTIO, steps=[*steps, {"setWeight": 30},
                                                                          {"pause": {}}]))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.routes, "attached")
    await job.edit_image("registry.local/web:2")
    await _gate(job, 1)
    await job.edit_image("registry.local/web:3")  # supersedes the release holding the header route
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.canary is not None and d.canary.revision == 3
                       and d.current_step == 1, "the next release's first pause")
    timeline = job.kube.router.timeline
    assert [(w.canary, w.header_routes) for w in timeline] == [(0, ("beta",)), (0, ()), (0, ("beta",))]
