"""Determinism guard: saved histories of every workflow shape must replay on today's code.

``RECORD_HISTORIES=1 pytest tests/workflow/test_replay.py`` writes the histories of the
scenarios below into tests/histories/ (commit them when the workflow changes shape on
purpose; keep the old ones so that `workflow.patched` branches stay covered).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflow.conftest import Job, job_spec
from workflows import names
from workflows.canary import CanaryJobWorkflow
from workflows.models import OperationRequest, Phase, RollbackRequest, UpdateRulesRequest, UpdateVersionRequest

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


SCENARIOS: dict[str, tuple[Callable[[Job], Awaitable[None]], dict[str, object]]] = {
    "release-promoted": (_release_promoted, {}),
    "operations": (_operations, {}),
    "failed-canary": (_failed_canary, {"spec": job_spec(progressDeadline="2s")}),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_scenario_history_replays_deterministically(start_job, scenario: str) -> None:
    run, kwargs = SCENARIOS[scenario]
    job: Job = await start_job(**kwargs)
    await run(job)
    history = await job.handle.fetch_history()
    await _replayer().replay_workflow(history)
    if os.environ.get("RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{scenario}.json").write_text(history.to_json())


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_saved_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await _replayer().replay_workflow(history)


def test_histories_are_saved() -> None:
    assert {p.stem for p in HISTORIES.glob("*.json")} >= set(SCENARIOS)
