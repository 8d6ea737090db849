"""A worker killed with SIGKILL, replaced at once: edits are still noticed promptly, and a
release killed at any kind of step boundary still finishes, doing every write once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.templates import JOB_KEY
from devenv.cluster import READY_DELAY_ANNOTATION, LocalCluster
from starter import client as canary
from starter.errors import CanaryError
from tests.e2e.conftest import Shop, until
from tests.e2e.worker_process import WorkerProcess, running_activities, scheduled_writes
from workflows import names
from workflows.models import JobDetails, OperationRequest, Phase, StepStatus

pytestmark = pytest.mark.cluster
NEW = "registry.local/web:2"
# How long a replaced worker may take to notice an edit. Generous next to the few seconds a
# worker needs to start, and well short of a lost watch's heartbeat timeout (30 s).
NOTICE_BOUND = 15.0
ENDED = (Phase.FAILED, Phase.TERMINATED, Phase.HEALTHY)


async def wait_job(shop: Shop, check: Callable[[JobDetails], bool], what: str, timeout: float = 60) -> JobDetails:
    """``shop.wait``, except that a query nobody answers yet (the new worker still starting, the
    dead one's sticky queue timing out) is another look later rather than a failure."""
    async def details() -> JobDetails | None:
        try:
            return await shop.details()
        except CanaryError:
            return None

    found = await until(details, lambda d: d is not None and check(d), what, timeout)
    assert found is not None
    return found


@pytest.fixture
def worker(dev_server: WorkflowEnvironment, cluster: LocalCluster, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(dev_server.client.service_client.config.target_host, cluster.kubeconfig,
                            tmp_path / "worker.log")
    process.start()
    try:
        yield process
    finally:
        process.kill()


async def test_an_edit_after_a_worker_crash_starts_a_release_promptly(shop: Shop, worker: WorkerProcess) -> None:
    shop.create_workload()
    handle = await worker.start_job(shop.temporal, shop.spec())
    await wait_job(shop, lambda d: d.phase == Phase.HEALTHY, "attached")
    # In the shared watch's sight: no watch of the job's own is left to lose in the crash.
    assert JOB_KEY in (shop.workload().metadata.labels or {})
    assert "watch_workload" not in await running_activities(handle)
    worker.restart()
    shop.set_image(NEW)
    await until(lambda: asyncio.to_thread(shop.canary_replicas), lambda n: n > 0,
                "canary pods requested after the crash", timeout=NOTICE_BOUND)
    await wait_job(shop, lambda d: d.phase == Phase.PAUSED, "the release at its gate", timeout=60)


async def test_a_release_killed_at_every_kind_of_boundary_is_promoted_once(
        shop: Shop, worker: WorkerProcess) -> None:
    shop.create_workload()
    # A lost wait attempt must be noticed by its heartbeat timeout (5 s): its start-to-close
    # timeout is the whole progress deadline, which waiting for would overrun.
    handle = await worker.start_job(shop.temporal, shop.spec(
        steps=[{"setWeight": 25}, {"pause": {}}], progressDeadline="12s"))
    await wait_job(shop, lambda d: d.phase == Phase.HEALTHY, "attached")
    # Slow pods: the kills land while the job waits for the canary, and while it promotes.
    shop.set_image(NEW, annotations={READY_DELAY_ANNOTATION: "2s"})

    await wait_job(shop, lambda d: d.phase == Phase.PROGRESSING and bool(d.steps)
                    and d.steps[0].status == StepStatus.RUNNING, "step 1 waiting for its canary")
    await worker.crash_holding(handle, "shift_replicas")
    gate = await wait_job(shop, lambda d: d.phase in ENDED or (d.phase == Phase.PAUSED and d.current_step == 1),
                           "the gate", timeout=90)
    assert gate.phase == Phase.PAUSED, (gate.phase, gate.last_error)
    worker.restart()
    await wait_job(shop, lambda d: d.phase == Phase.PAUSED, "the new worker answering")
    await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
    promoting = await wait_job(shop, lambda d: d.phase in ENDED or d.phase == Phase.PROMOTING, "the promotion")
    assert promoting.phase == Phase.PROMOTING, (promoting.phase, promoting.last_error)
    # The promotion is two long activities: the kill must land in the second (the Deployment's
    # own pods coming up), not freeze the first one past its progress deadline.
    await until(lambda: running_activities(handle), lambda running: "promote_held" in running,
                "the Deployment's pods on their way")
    await worker.crash_holding(handle, "promote_held")

    done = await wait_job(shop, lambda d: d.phase != Phase.PROMOTING and d.canary is None, "the release ended",
                           timeout=90)
    assert done.phase == Phase.HEALTHY and done.stable is not None and done.stable.revision == 2, (
        done.phase, done.last_error)
    workload = shop.workload()
    assert workload.spec.paused is True
    assert [c.image for c in workload.spec.template.spec.containers] == [NEW]
    await until(lambda: asyncio.to_thread(shop.own_images), lambda images: images == [NEW] * 4,
                "the Deployment's own pods on the promoted image")
    assert shop.canary_replicas() == 0

    writes = await scheduled_writes(handle)
    once = ["shift_replicas:1/3+prepare", "shift_replicas:4/-", "promote_held:4"]
    assert {key: writes[key] for key in once} == dict.fromkeys(once, 1), writes
    assert writes["prepare_canary:"] == 0, writes  # the first step set the canary's template


async def test_two_workers_on_one_queue_finish_releases_while_one_is_killed_and_restarted(
        shop: Shop, worker: WorkerProcess, dev_server: WorkflowEnvironment, cluster: LocalCluster,
        tmp_path: Path) -> None:
    # A second worker process on the same task queue, as the chart runs two replicas.
    second = WorkerProcess(dev_server.client.service_client.config.target_host, cluster.kubeconfig,
                           tmp_path / "second.log", queue=worker.queue)
    second.start()
    try:
        shop.create_workload()
        handle = await worker.start_job(shop.temporal, shop.spec(
            steps=[{"setWeight": 25}, {"setWeight": 50}, {"setWeight": 75}], progressDeadline="30s"))
        await wait_job(shop, lambda d: d.phase == Phase.HEALTHY, "attached")
        for n, victim in ((2, worker), (3, second)):
            # Slow pods, so the kill lands while a step waits for them on one of the two.
            shop.set_image(f"registry.local/web:{n}", annotations={READY_DELAY_ANNOTATION: "1s"})
            await wait_job(shop, lambda d, n=n: d.canary is not None and d.canary.revision == n
                           and d.phase == Phase.PROGRESSING, f"release {n} under way")
            victim.restart()
            done = await wait_job(shop, lambda d, n=n: d.phase in ENDED and d.stable is not None
                                  and d.stable.revision == n, f"release {n} promoted", timeout=90)
            assert done.phase == Phase.HEALTHY, (done.phase, done.last_error)
        # Every write of both releases was scheduled once, whichever worker ran it or died with it.
        scheduled = await scheduled_writes(handle)
        assert scheduled["promote_held:4"] == 2
        assert scheduled["shift_replicas:1/3+prepare"] == 2 and scheduled["shift_replicas:2/2"] == 2
        assert scheduled["shift_replicas:3/1"] == 2
    finally:
        second.kill()
