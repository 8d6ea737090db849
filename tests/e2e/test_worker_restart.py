"""A worker killed in the middle of a release: a new worker finishes it, and no step runs twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from devenv.cluster import READY_DELAY_ANNOTATION, LocalCluster
from tests.e2e.conftest import Shop, until
from tests.e2e.worker_process import scheduled_writes
from workflows import names
from workflows.canary import CanaryJobWorkflow
from workflows.models import CanaryJobInput, JobDetails, OperationRequest, Phase, StepStatus
from workflows.spec import workflow_id

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def _start_worker(address: str, queue: str, kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "CANARY_TASK_QUEUE": queue, "KUBECONFIG": str(kubeconfig)}
    return subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


async def test_killed_worker_mid_release_is_replaced_without_repeating_steps(
        dev_server: WorkflowEnvironment, cluster: LocalCluster, shop: Shop, tmp_path: Path) -> None:
    address = dev_server.client.service_client.config.target_host
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    shop.create_workload()
    worker = _start_worker(address, queue, cluster.kubeconfig, log)
    try:
        spec = shop.spec(steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1s"}}])
        handle = await dev_server.client.start_workflow(
            CanaryJobWorkflow.run, CanaryJobInput(job=spec), id=workflow_id(shop.namespace, "web"), task_queue=queue)

        async def details() -> JobDetails:
            return await handle.query(names.DETAILS_QUERY, result_type=JobDetails)

        await until(details, lambda d: d.phase == Phase.HEALTHY, "attached")
        # Slow canary pods, so the kill lands while step 1 waits for them.
        shop.apps.patch_namespaced_deployment("web", shop.namespace, {"spec": {"template": {
            "metadata": {"annotations": {READY_DELAY_ANNOTATION: "3s"}},
            "spec": {"containers": [{"name": "app", "image": "registry.local/web:2"}]}}}})
        await until(details, lambda d: d.phase == Phase.PROGRESSING and d.steps
                    and d.steps[0].status == StepStatus.RUNNING, "step 1 running")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)

        # The release waits durably; the canary pods become Ready meanwhile.
        await asyncio.sleep(4)
        worker = _start_worker(address, queue, cluster.kubeconfig, log)
        await until(details, lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "the pause", timeout=90)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        await handle.signal(names.CONTINUE, OperationRequest(actor="e2e"))  # signals need no worker
        worker = _start_worker(address, queue, cluster.kubeconfig, log)
        done = await until(details, lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                           and d.stable.revision == 2, "promotion by the third worker", timeout=90)
        assert all(step.status == StepStatus.SUCCEEDED for step in done.steps)
        # The canary's pods leave moments after the job scaled the canary to zero.
        await until(lambda: asyncio.to_thread(lambda: (shop.ready_images(), shop.pods("canary"))),
                    lambda seen: seen == (["registry.local/web:2"] * 4, []), "web:2 on the stable pods alone",
                    timeout=30)

        # Every cluster write was scheduled exactly once, whatever the workers went through.
        scheduled = await scheduled_writes(handle)
        assert scheduled["shift_replicas:1/3+prepare"] == 1
        assert scheduled["shift_replicas:2/2"] == 1
        assert scheduled["shift_replicas:4/-"] == 1
        assert scheduled["promote_held:4"] == 1
    finally:
        worker.kill()
        worker.wait(10)
