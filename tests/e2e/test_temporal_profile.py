"""One Temporal CLI profile file drives ``canaryctl`` and the worker against the dev server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from devenv.cluster import LocalCluster
from tests.e2e.conftest import Shop, until
from workflows.models import Phase

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def _profiles(tmp_path: Path, address: str) -> Path:
    # "staging" is the dev server; "default" points nowhere, so only the profile can make it work.
    path = tmp_path / "temporal.toml"
    path.write_text(f'[profile.default]\naddress = "127.0.0.1:1"\n\n'
                    f'[profile.staging]\naddress = "{address}"\nnamespace = "default"\n')
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _canaryctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "starter.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)


async def test_canaryctl_follows_the_profile_and_flags_override_it(
        dev_server: WorkflowEnvironment, shop: Shop, temporal: Client, tmp_path: Path) -> None:
    await shop.attach()
    config = _profiles(tmp_path, dev_server.client.service_client.config.target_host)

    by_env = await asyncio.to_thread(_canaryctl, "get", "web", "-n", shop.namespace, "-o", "json",
                                     env=_clean_env(TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE="staging"))
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout)["phase"] == Phase.HEALTHY.value

    by_flag = await asyncio.to_thread(_canaryctl, "--config-file", str(config), "--profile", "staging", "list",
                                      "-n", shop.namespace, env=_clean_env())
    assert by_flag.returncode == 0, by_flag.stderr
    assert "web" in by_flag.stdout

    # The default profile names a port nobody listens on: the tools really read the file.
    unreachable = await asyncio.to_thread(_canaryctl, "list", env=_clean_env(TEMPORAL_CONFIG_FILE=str(config)))
    assert unreachable.returncode != 0
    assert "cannot reach Temporal at 127.0.0.1:1" in unreachable.stderr

    # A flag beats the profile.
    overridden = await asyncio.to_thread(
        _canaryctl, "list", "--address", "127.0.0.1:1",
        env=_clean_env(TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE="staging"))
    assert "cannot reach Temporal at 127.0.0.1:1" in overridden.stderr


async def test_the_worker_polls_where_the_profile_says(
        dev_server: WorkflowEnvironment, cluster: LocalCluster, tmp_path: Path) -> None:
    config = _profiles(tmp_path, dev_server.client.service_client.config.target_host)
    queue = f"profile-{uuid.uuid4().hex[:8]}"
    env = _clean_env(TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE="staging", CANARY_TASK_QUEUE=queue,
                     KUBECONFIG=str(cluster.kubeconfig))
    log = tmp_path / "worker.log"
    process = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, cwd=ROOT,
                               stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        async def pollers() -> int:
            response = await dev_server.client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace="default", task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
            return len(response.pollers)

        await until(pollers, lambda n: n >= 1, f"a worker polling {queue} (log: {log})", timeout=30)
        assert "(namespace default)" in log.read_text()
    finally:
        process.terminate()
        process.wait(30)


def test_the_worker_refuses_a_profile_that_is_not_there(tmp_path: Path) -> None:
    config = _profiles(tmp_path, "127.0.0.1:1")
    result = subprocess.run([sys.executable, str(ROOT / "worker.py")], capture_output=True, text=True, cwd=ROOT,
                            env=_clean_env(TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE="prod"), timeout=60)
    assert result.returncode == 2
    assert "Profile 'prod' not found" in result.stderr
