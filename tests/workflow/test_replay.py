"""Determinism guard: saved histories of every workflow shape must replay on today's code.

``RECORD_HISTORIES=1 pytest tests/workflow/test_replay.py`` writes the histories of the
scenarios below into tests/histories/ (commit them when the workflow changes shape on
purpose; keep the old ones so that `workflow.patched` branches stay covered: ``v1-*`` were
recorded by the code before release safety, whose promotions unpaused the Deployment; ``v2-*``
by the code before the shared watch, which upserted the phase even when it had not changed;
``v3-*`` by the code before one activity per step, which scaled, waited and scaled again as
separate activities).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflow.conftest import HOPS, Job, job_spec
from workflows import names
from workflows.canary import CanaryJobWorkflow
from workflows.models import (
    OperationRequest,
    Phase,
    RollbackRequest,
    UpdateRulesRequest,
    UpdateVersionRequest,
    WorkloadChange,
)

HISTORIES = Path(__file__).resolve().parent.parent / "histories"


def _replayer() -> Replayer:
    return Replayer(workflows=[CanaryJobWorkflow], data_converter=pydantic_data_converter)


async def _release_promoted(job: Job) -> None:
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "pause")
    await job.env.sleep(3601)
    await job.wait_for(lambda d: d.current_step == 3, "gate")
    await job.operate(names.CONTINUE)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "promoted")


async def _straight_to_100(job: Job) -> None:
    """The fleet benchmark's shape: 25, 50, 100 %, no pause; the promotion starts from a full canary."""
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                       "promoted")


async def _operations(job: Job) -> None:
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.operate(names.UPDATE_VERSION, UpdateVersionRequest(image="registry.local/web:2", container="app"))
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "pause")
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": [{"setWeight": 40}, {"pause": {}}]}))
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.weight == 40, "new rules")
    assert job.kube.canary_replicas == 2
    await job.operate(names.TERMINATE, OperationRequest(reason="replay"))
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    await job.handle.signal(names.ROLLBACK, {"revision": "bad"})
    await job.operate(names.ROLLBACK, RollbackRequest(revision=1, skip_steps=True))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "back")
    await job.operate(names.DELETE)
    await job.handle.result()


async def _failed_canary(job: Job) -> None:
    job.kube.broken_images.add("registry.local/web:bad")
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:bad")
    await job.wait_for(lambda d: d.phase == Phase.FAILED, "failed", timeout=30)


async def _failed_promotion(job: Job) -> None:
    job.kube.unpromotable_images.add("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.FAILED, "the promotion failed", timeout=30)


async def _workload_missing(job: Job) -> None:
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "pause")
    job.kube.exists = False
    await job.handle.signal(names.WORKLOAD_CHANGED)
    await job.wait_for(lambda d: d.phase == Phase.WORKLOAD_MISSING, "missing")
    job.kube.exists, job.kube.owner = True, None
    await job.handle.signal(names.WORKLOAD_CHANGED)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "taken over again")


async def _shared_watch(job: Job) -> None:
    """The worker's informer reports edits and a deletion; the job watches by name while it is gone."""
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    job.kube.edit_image("registry.local/web:2")
    snapshot = job.kube.snapshot().model_copy(update={"generation": 2, "uid": "u1"})
    await job.handle.signal(names.WORKLOAD_CHANGED, WorkloadChange(kind="observed", snapshot=snapshot))
    await job.handle.signal(names.WORKLOAD_CHANGED, WorkloadChange(kind="observed", snapshot=snapshot))
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "pause")
    await job.env.sleep(3601)
    await job.wait_for(lambda d: d.current_step == 3, "gate")
    await job.operate(names.CONTINUE)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "promoted")
    job.kube.exists = False
    await job.handle.signal(names.WORKLOAD_CHANGED, WorkloadChange(kind="deleted"))
    await job.wait_for(lambda d: d.phase == Phase.WORKLOAD_MISSING, "missing")
    job.kube.exists, job.kube.owner = True, None
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "taken over again")


async def _rules_cut_a_shift(job: Job) -> None:
    """New rules while the canary's pods come up: the half-made step is put back."""
    job.kube.broken_images.add("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PROGRESSING and job.kube.canary_replicas == 1, "the wait")
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": [{"pause": {}}]}))
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.canary_replicas == 0, "back at weight 0")


async def _gates_and_hand_over(job: Job) -> None:
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "the timed pause")
    await job.env.sleep(3601)
    gate = await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "the gate")
    assert gate.canary is not None
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules={"steps": [{"setWeight": 10}, {"pause": {}}]}))
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "the new gate")
    await job.operate(names.CONTINUE, OperationRequest(release=gate.canary.revision, step=2))
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "promoted")


async def _analysis(job: Job) -> None:
    job.kube.metrics.set("success-rate", 0.999, 0.999, None, 0.5)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the analysis step inconclusive (no data)")
    await job.operate(names.CONTINUE)
    await job.wait_for(lambda d: d.phase == Phase.FAILED, "the background analysis failed")


async def _webhooks(job: Job) -> None:
    job.kube.hooks.set("smoke", 500, 200)
    job.kube.hooks.set("approval", *([503] * 8), 200)
    job.kube.hooks.set("notify", 500)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.FAILED, "refused by pre-rollout")
    await job.edit_image("registry.local/web:3")
    # Queried before the wait hands over (the time-skipping server can hold a query racing the hop).
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "waiting for confirm-promotion")
    await job.env.sleep(90)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 3,
                       "confirmed and promoted")
    await job.wait_for(lambda d: sum(1 for e in d.events if e.message.startswith("post-rollout")) == 2,
                       "post-rollout told of both releases")


async def _router(job: Job) -> None:
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached, route set up")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "weight 10")
    await job.operate(names.TERMINATE, OperationRequest(reason="replay"))
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    await job.edit_image("registry.local/web:3")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.canary is not None and d.canary.revision == 3,
                       "the next release at weight 10")
    await job.operate(names.PROMOTE)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")
    await job.operate(names.DELETE)
    await job.handle.result()


async def _header_route(job: Job) -> None:
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached, route set up")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "the header route on")
    await job.operate(names.CONTINUE)
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 4, "weight 10, the route off")
    await job.operate(names.TERMINATE, OperationRequest(reason="replay"))
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")


async def _dynamic_stable_scale(job: Job) -> None:
    """The stable side sized to its weight: shrunk at 60 %, grown back and waited for before terminate's 0 %."""
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and bool(d.routes), "attached, route set up")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "weight 10")
    await job.operate(names.CONTINUE)
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 3 and d.stable_replicas == 2,
                       "weight 60, stable at 2")
    await job.operate(names.TERMINATE, OperationRequest(reason="replay"))
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED and d.stable_replicas == 4, "terminated")
    await job.edit_image("registry.local/web:3")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.canary is not None and d.canary.revision == 3,
                       "the next release at weight 10")
    await job.operate(names.PROMOTE)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "promoted")


_BETA = {"setHeaderRoute": {"name": "beta", "match": [{"headerName": "x-canary", "headerValue": {"exact": "yes"}}]}}


async def _blue_green(job: Job) -> None:
    """Preview, continue, the switch, the scale-down delay, the hand-over; then a green terminated in preview."""
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "green in preview")
    await job.operate(names.CONTINUE)
    await job.wait_for(lambda d: d.blue_green is not None and d.blue_green.stage == "switched", "switched")
    await job.env.sleep(31)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "handed over")
    await job.edit_image("registry.local/web:3")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.canary is not None and d.canary.revision == 3,
                       "the next green in preview")
    await job.operate(names.TERMINATE, OperationRequest(reason="replay"))
    await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    await job.operate(names.DELETE)
    await job.handle.result()


_BLUE_GREEN = {"activeService": "web", "previewService": "web-preview", "autoPromotionEnabled": False,
               "scaleDownDelaySeconds": 30}


_ROUTER = {"routing": "istio", "stableService": "web-stable", "canaryService": "web-canary",
           "istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}


_WEBHOOKS = [{"name": name, "type": kind, "url": f"http://hooks.shop/{name}"} for name, kind in (
    ("smoke", "pre-rollout"), ("load", "rollout"), ("approval", "confirm-promotion"), ("notify", "post-rollout"))]


_ANALYSIS = {
    "templates": [{"name": "success-rate", "metrics": [{
        "name": "success-rate", "interval": "1s", "count": 3, "successCondition": "result >= 0.99",
        "failureCondition": "result < 0.95",
        "provider": {"prometheus": {"address": "http://prometheus:9090", "query": "ratio"}}}]}],
}


# Scenarios first recorded by code that already ran each step as one activity (no ``v3-`` copy).
SINCE_ONE_ACTIVITY_PER_STEP = {"blue-green", "dynamic-stable-scale", "straight-to-100"}

SCENARIOS: dict[str, tuple[Callable[[Job], Awaitable[None]], dict[str, object]]] = {
    "release-promoted": (_release_promoted, {}),
    "operations": (_operations, {}),
    "failed-canary": (_failed_canary, {"spec": job_spec(progressDeadline="2s")}),
    "failed-promotion": (_failed_promotion, {"spec": job_spec(steps=[{"setWeight": 25}], progressDeadline="3s")}),
    "workload-missing": (_workload_missing, {}),
    "shared-watch": (_shared_watch, {"watch": True}),
    "rules-cut-a-shift": (_rules_cut_a_shift, {"spec": job_spec(progressDeadline="1h")}),
    "gates-and-hand-over": (_gates_and_hand_over, {"max_history_events": 45}),
    "analysis": (_analysis, {"spec": job_spec(
        steps=[{"setWeight": 25}, {"analysis": {"templates": [{"templateName": "success-rate"}]}},
               {"setWeight": 50}, {"pause": {}}],
        analysis={**_ANALYSIS, "background": {"templates": [{"templateName": "success-rate"}],
                                              "startingStep": 3}})}),
    "router": (_router, {"spec": job_spec(traffic=_ROUTER, steps=[{"setWeight": 10}, {"pause": {}}])}),
    "dynamic-stable-scale": (_dynamic_stable_scale, {"spec": job_spec(
        traffic={**_ROUTER, "dynamicStableScale": True},
        steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}])}),
    "header-route": (_header_route, {"spec": job_spec(traffic=_ROUTER, steps=[
        _BETA, {"pause": {}}, {"setWeight": 10}, {"setHeaderRoute": {"name": "beta"}}, {"pause": {}}])}),
    "blue-green": (_blue_green, {"spec": job_spec(steps=[], mode="blueGreen", blueGreen=_BLUE_GREEN)}),
    # max_history_events: the wait for confirm-promotion hands over to a fresh run.
    "straight-to-100": (_straight_to_100, {"spec": job_spec(steps=[{"setWeight": 25}, {"setWeight": 50},
                                                                  {"setWeight": 100}])}),
    "webhooks": (_webhooks, {"spec": job_spec(steps=[{"setWeight": 25}, {"setWeight": 50}], webhooks=_WEBHOOKS),
                             "max_history_events": 175}),
}


@HOPS
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_scenario_history_replays_deterministically(start_job, scenario: str) -> None:
    run, kwargs = SCENARIOS[scenario]
    job: Job = await start_job(**kwargs)
    await run(job)
    # Every run of the chain: a scenario that continues-as-new hands over, maybe more than once.
    run_id: str | None = job.handle.result_run_id
    index = 0
    while run_id:
        history = await job.client.get_workflow_handle(job.handle.id, run_id=run_id).fetch_history()
        await _replayer().replay_workflow(history)
        if os.environ.get("RECORD_HISTORIES"):
            HISTORIES.mkdir(exist_ok=True)
            (HISTORIES / f"{scenario}{f'-run{index + 1}' if index else ''}.json").write_text(history.to_json())
        last = history.events[-1]
        run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                  if last.HasField("workflow_execution_continued_as_new_event_attributes") else None)
        index += 1


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_saved_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await _replayer().replay_workflow(history)


def test_histories_are_saved() -> None:
    saved = {p.stem for p in HISTORIES.glob("*.json")}
    assert saved >= set(SCENARIOS)
    assert saved >= {f"v1-{name}" for name in ("release-promoted", "operations", "failed-canary")}
    assert saved >= {f"v2-{name}" for name in ("release-promoted", "operations", "workload-missing", "analysis")}
    # Scenarios that existed before one activity per step have their older recording too.
    assert saved >= {f"v3-{name}" for name in SCENARIOS if name not in SINCE_ONE_ACTIVITY_PER_STEP}
    # Recorded before the first step prepared the canary itself, and before a promotion could
    # start from the canary a last 100 % step filled.
    assert saved >= {f"v4-{name}" for name in (
        "release-promoted", "operations", "failed-canary", "failed-promotion", "workload-missing", "shared-watch",
        "rules-cut-a-shift", "gates-and-hand-over", "analysis", "straight-to-100")}
