"""Analysis end to end: the real worker measures a real Prometheus scraping the simulated mesh.

Each test runs a release whose canary behaves as its pod template's ``simulate-*`` annotations
say (devenv/traffic.py), and checks what the job decides by itself: roll back, promote, or stop
and ask. The mesh sends 80 requests/s per Service and Prometheus scrapes every second, so a 12 s
window holds enough requests for a 5 % error rate to read as 5 % (MESH_RATE in conftest.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from devenv.traffic import ERROR_RATE_ANNOTATION, LATENCY_ANNOTATION, TRAFFIC_ANNOTATION
from starter import client as canary
from tests.e2e.conftest import Shop, until
from workflows.models import OperationRequest, Phase
from workflows.verdict import MetricPhase

pytestmark = pytest.mark.cluster

HEALTHY = {ERROR_RATE_ANNOTATION: "0.001"}


def _metric(name: str, check: str, namespace: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "interval": "4s", "count": 2, "initialDelay": "12s",
            "provider": {"builtin": {"check": check, "workload": "web", "namespace": namespace, "window": "12s"}},
            **fields}


def _rules(namespace: str, *metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "steps": [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "canary-health"}]}},
                  {"setWeight": 75}],
        "analysis": {"templates": [{"name": "canary-health", "metrics": list(metrics)}]},
        "progressDeadline": "60s",
    }


def _success_rate(namespace: str, **fields: Any) -> dict[str, Any]:
    return _metric("success-rate", "request-success-rate", namespace,
                   successCondition="result >= 0.99", failureCondition="result < 0.98", **fields)


async def _attached(shop: Shop, rules: dict[str, Any]) -> None:
    """4 pods of version 1 serving 0.1 % errors, taken over by a job with ``rules``."""
    shop.create_workload()
    shop.apps.patch_namespaced_deployment("web", shop.namespace, {"spec": {"template": {"metadata": {
        "annotations": HEALTHY}}}})
    await shop.apply(**rules)
    await shop.wait(lambda d: d.phase == Phase.HEALTHY, "attached")


async def test_a_canary_serving_five_percent_errors_is_rolled_back_at_its_first_analysis(shop: Shop) -> None:
    await _attached(shop, _rules(shop.namespace, _success_rate(shop.namespace)))
    shop.set_image("registry.local/web:2", annotations={ERROR_RATE_ANNOTATION: "0.05"})
    failed = await shop.wait(lambda d: d.phase == Phase.FAILED, "rolled back by analysis", timeout=90)
    assert failed.last_error is not None and "metric success-rate failed" in failed.last_error
    [run] = failed.analyses
    first = run.metrics[0].measurements[0]
    assert run.phase == MetricPhase.FAILED and len(run.metrics[0].measurements) == 1, "decided at the first sample"
    assert first.value is not None and 0.9 <= first.value < 0.98
    assert failed.stable is not None and failed.stable.revision == 1
    assert shop.canary_replicas() == 0
    await until(lambda: asyncio.to_thread(shop.ready_images), lambda images: images == ["registry.local/web:1"] * 4,
                "stable alone serves", timeout=30)


async def test_a_healthy_canary_is_promoted_by_its_analysis(shop: Shop) -> None:
    await _attached(shop, _rules(shop.namespace, _success_rate(shop.namespace),
                                 _metric("latency", "request-duration", shop.namespace,
                                         successCondition="result <= 100")))
    shop.set_image("registry.local/web:2", annotations=HEALTHY)
    done = await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                           "promoted", timeout=90)
    [run] = done.analyses
    assert run.phase == MetricPhase.SUCCESSFUL
    assert [m.status.measured for m in run.metrics] == [2, 2]
    assert all(0.99 <= (m.value or 0) <= 1 for m in run.metrics[0].measurements)


async def test_a_slow_canary_fails_request_duration(shop: Shop) -> None:
    await _attached(shop, _rules(shop.namespace, _metric("latency", "request-duration", shop.namespace,
                                                         successCondition="result <= 100")))
    shop.set_image("registry.local/web:2", annotations={**HEALTHY, LATENCY_ANNOTATION: "250"})
    failed = await shop.wait(lambda d: d.phase == Phase.FAILED, "rolled back for latency", timeout=90)
    assert "metric latency failed" in (failed.last_error or "")
    assert (failed.analyses[0].metrics[0].status.last_value or 0) > 200


async def test_a_canary_without_traffic_waits_for_a_human_and_continues(shop: Shop) -> None:
    await _attached(shop, _rules(shop.namespace, _success_rate(shop.namespace, count=1)))
    shop.set_image("registry.local/web:2", annotations={**HEALTHY, TRAFFIC_ANNOTATION: "0"})
    paused = await shop.wait(lambda d: d.phase == Phase.PAUSED, "inconclusive: no data", timeout=90)
    assert paused.pause_reason is not None and "no data" in paused.pause_reason
    assert shop.canary_replicas() == 2, "no rollback for an idle service"
    await canary.operate(shop.temporal, shop.namespace, "web", "continue", OperationRequest())
    await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                    "promoted after continue", timeout=60)


async def test_prometheus_down_is_inconclusive_never_a_pass(shop: Shop) -> None:
    down = _success_rate(shop.namespace, consecutiveErrorLimit=1, interval="1s")
    down["provider"]["builtin"]["address"] = "http://127.0.0.1:9"  # nothing listens there
    await _attached(shop, _rules(shop.namespace, down))
    shop.set_image("registry.local/web:2", annotations=HEALTHY)
    paused = await shop.wait(lambda d: d.phase == Phase.PAUSED, "inconclusive after errors", timeout=90)
    assert "2 errors in a row" in (paused.pause_reason or "")
    await canary.operate(shop.temporal, shop.namespace, "web", "terminate", OperationRequest(reason="no metrics"))
    await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated", timeout=60)
    assert shop.canary_replicas() == 0


async def test_the_next_release_is_judged_by_its_own_canary_not_by_pods_an_earlier_one_promoted(
        shop: Shop) -> None:
    """A mesh names a pod's workload when the pod is made: ``web-canary`` for the canary's, for life.

    So a job with analysis promotes on new pods; were the canary's pods handed over, the second
    release's canary series would also count the first one's healthy pods, and a canary serving
    3 % errors would read as about 1.5 % (inconclusive) instead of failing.
    """
    await _attached(shop, _rules(shop.namespace, _success_rate(shop.namespace)))
    shop.set_image("registry.local/web:2", annotations=HEALTHY)
    await shop.wait(lambda d: d.phase == Phase.PAUSED or d.current_step == 1, "the first analysis running",
                    timeout=60)
    canary_pods = {p.metadata.uid for p in shop.core.list_namespaced_pod(
        shop.namespace, label_selector="canary-delivery.dev/track=canary").items}
    await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                    "promoted", timeout=90)
    promoted = {p.metadata.uid for p in shop.pods()}
    assert canary_pods and not promoted & canary_pods, "the Deployment runs pods of its own"

    shop.set_image("registry.local/web:3", annotations={ERROR_RATE_ANNOTATION: "0.03"})
    failed = await shop.wait(lambda d: d.phase == Phase.FAILED, "rolled back by analysis", timeout=90)
    assert "metric success-rate failed" in (failed.last_error or "")
    value = failed.analyses[-1].metrics[0].measurements[0].value
    assert value is not None and value < 0.98
