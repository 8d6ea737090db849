"""``dynamicStableScale`` through a real Istio VirtualService: stable sized to its weight, back first.

The local cluster serves Istio's own CRDs; no mesh data plane runs, so the test reads the
route's weights from the API server and the stable side's Ready pods from the stable
Service's endpoints. During terminate it samples both over and over, weights first: once the
route is read at 100 % stable, every stable pod must already have been Ready.
"""

from __future__ import annotations

import asyncio

import pytest

from starter import client as canary
from tests.e2e.conftest import Shop, until
from tests.e2e.test_routers_e2e import Router, _endpoint_images
from workflows import names
from workflows.models import OperationRequest, Outcome, Phase

pytestmark = pytest.mark.cluster

STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]


def _ready_stable(shop: Shop) -> int:
    """Ready pods behind the stable Service: what the route's stable share reaches."""
    return len(_endpoint_images(shop, "web-stable"))


async def _sides(shop: Shop, router: Router, expected: tuple[tuple[int, int], int, int, int], what: str) -> None:
    """Wait until (weights, stable spec.replicas, Ready stable pods, canary spec.replicas) are ``expected``."""
    def read() -> tuple[tuple[int, int], int, int, int]:
        return (router.weights(shop), int(shop.workload().spec.replicas), _ready_stable(shop),
                shop.canary_replicas())

    await until(lambda: asyncio.to_thread(read), lambda sides: sides == expected, what, timeout=60)


async def test_stable_follows_its_weight_and_is_ready_before_terminate_moves_traffic_back(shop: Shop) -> None:
    router = Router("istio")
    shop.create_workload(replicas=4)
    router.create(shop)
    await shop.apply(steps=STEPS, traffic={**router.traffic, "dynamicStableScale": True})
    await shop.wait(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached, route read")
    await _sides(shop, router, ((100, 0), 4, 4, 0), "all on 4 stable pods")

    shop.set_image("registry.local/web:2")
    first = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "weight 10")
    # 90 % still needs all 4 stable pods.
    await _sides(shop, router, ((90, 10), 4, 4, 1), "weight 10 on 1 canary pod, stable at 4")
    assert (first.actual_weight, first.stable_replicas, first.canary_replicas) == (10, 4, 1)

    await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
    second = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "weight 60")
    # 60 % on 3 canary pods; stable's 40 % needs ceil(4 x 0.4) = 2.
    await _sides(shop, router, ((40, 60), 2, 2, 3), "weight 60, stable shrunk to 2")
    assert (second.actual_weight, second.stable_replicas, second.canary_replicas) == (60, 2, 3)

    samples: list[tuple[tuple[int, int], int]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            weights = await asyncio.to_thread(router.weights, shop)
            samples.append((weights, await asyncio.to_thread(_ready_stable, shop)))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        await canary.operate(shop.temporal, shop.namespace, "web", names.TERMINATE, OperationRequest(reason="e2e"))
        ended = await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated")
        await _sides(shop, router, ((100, 0), 4, 4, 0), "all back on 4 stable pods, no canary")
    finally:
        stop.set()
        await sampler
    seen = [sample for i, sample in enumerate(samples) if i == 0 or samples[i - 1] != sample]  # the changes
    back = [ready for weights, ready in seen if weights == (100, 0)]
    assert back, "the route was never seen at 100 % stable"
    assert min(back) == 4, f"the route was at 100 % stable with stable pods not all Ready: {seen}"
    assert seen[0][0] == (40, 60), "sampling began before the rollback"
    assert (ended.actual_weight, ended.stable_replicas, ended.canary_replicas) == (0, 4, 0)
    versions = await canary.versions(shop.temporal, shop.namespace, "web")
    assert versions.history[0].outcome == Outcome.TERMINATED
    await until(lambda: asyncio.to_thread(shop.pods, "canary"), lambda pods: pods == [], "no canary pods")
