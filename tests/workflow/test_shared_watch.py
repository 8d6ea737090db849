"""The job's side of the worker's shared watch: reports arrive as signals, in any order, twice,
from several workers or from a hostile client, and the job acts on each change exactly once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tests.workflow.conftest import Job
from tests.workflow.fake_kube import FakeKube
from workflows import names
from workflows.models import Phase, WorkloadChange, WorkloadSnapshot

StartJob = Callable[..., Awaitable[Job]]


def report(kube: FakeKube, *, generation: int, uid: str = "uid-1") -> WorkloadChange:
    """What the informer sends for the fake Deployment as it is now."""
    snapshot: WorkloadSnapshot = kube.snapshot().model_copy(update={"generation": generation, "uid": uid})
    return WorkloadChange(kind="observed", snapshot=snapshot)


async def attached(start_job: StartJob) -> Job:
    job = await start_job(watch=True)
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    return job


def events(details: Any, kind: str) -> int:
    return sum(1 for event in details.events if event.kind == kind)


async def test_a_reported_edit_starts_one_release_however_often_it_is_reported(start_job: StartJob) -> None:
    job = await attached(start_job)
    job.kube.edit_image("registry.local/web:2")
    edit = report(job.kube, generation=2)
    for _ in range(3):  # three workers each saw it
        await job.handle.signal(names.WORKLOAD_CHANGED, edit)
    details = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the release at its first pause")
    assert details.canary is not None and details.canary.images["app"] == "registry.local/web:2"
    assert events(details, "release-started") == 1
    assert events(details, "superseded") == 0


async def test_a_report_older_than_one_already_acted_on_changes_nothing(start_job: StartJob) -> None:
    job = await attached(start_job)
    job.kube.edit_image("registry.local/web:2")
    older = report(job.kube, generation=2)
    job.kube.edit_image("registry.local/web:3")
    newer = report(job.kube, generation=3)
    await job.handle.signal(names.WORKLOAD_CHANGED, newer)
    await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the release of :3 at its first pause")
    await job.handle.signal(names.WORKLOAD_CHANGED, older)  # a slow worker's report arrives late
    await job.operate(names.CONTINUE)  # a workflow task after the late report: it has been handled
    details = await job.details()
    assert details.canary is not None and details.canary.images["app"] == "registry.local/web:3"
    assert events(details, "superseded") == 0 and events(details, "release-started") == 1


async def test_unreadable_reports_are_nudges_and_the_job_looks_for_itself(start_job: StartJob) -> None:
    job = await attached(start_job)
    job.kube.edit_image("registry.local/web:2")
    for junk in ("<img src=x onerror=alert(1)>", {"kind": "observed", "snapshot": "nope"}, {"kind": 7}, [1, 2]):
        await job.handle.signal(names.WORKLOAD_CHANGED, junk)
    details = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the edit found by looking")
    assert details.canary is not None and details.canary.images["app"] == "registry.local/web:2"
    assert events(details, "release-started") == 1


async def test_a_deleted_deployment_is_waited_for_and_taken_over_when_it_returns(start_job: StartJob) -> None:
    job = await attached(start_job)
    job.kube.exists = False
    await job.handle.signal(names.WORKLOAD_CHANGED, WorkloadChange(kind="deleted"))
    await job.wait_for(lambda d: d.phase == Phase.WORKLOAD_MISSING, "the job waiting for its Deployment")
    job.kube.exists = True
    job.kube.edit_image("registry.local/web:9")  # created again, with another template
    details = await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "the Deployment taken over again")
    assert details.stable is not None and details.stable.images["app"] == "registry.local/web:9"


async def test_a_deployment_replaced_while_nobody_looked_is_taken_over_again(start_job: StartJob) -> None:
    job = await attached(start_job)
    await job.handle.signal(names.WORKLOAD_CHANGED, report(job.kube, generation=1, uid="uid-1"))
    job.kube.edit_image("registry.local/web:5")  # the same name, a new object: deleted and re-created
    await job.handle.signal(names.WORKLOAD_CHANGED, report(job.kube, generation=1, uid="uid-2"))
    details = await job.wait_for(lambda d: d.stable is not None and d.stable.images["app"] == "registry.local/web:5"
                                 and d.phase == Phase.HEALTHY, "the new Deployment taken over")
    assert events(details, "workload-deleted") == 1
    assert details.canary is None  # its template is what serves: stable, not a release
