"""The worker's and the API's ``/metrics``, scraped by a real Prometheus while a release runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from devenv.cluster import LocalCluster
from devenv.processes import free_port
from devenv.prometheus import PrometheusServer
from starter import client as canary
from starter.errors import Conflict
from tests.e2e.conftest import MeshMetrics, Shop, until
from workflows import names
from workflows.canary import CanaryJobWorkflow
from workflows.models import CanaryJobInput, OperationRequest, Phase
from workflows.spec import workflow_id

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        process.wait(30)


def _value(prometheus: PrometheusServer, promql: str) -> float:
    value = prometheus.query(promql)
    return 0.0 if value is None else value


async def test_release_counters_move_in_prometheus_as_a_release_runs(
        dev_server: WorkflowEnvironment, cluster: LocalCluster, shop: Shop, mesh_metrics: MeshMetrics,
        processes: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    prometheus = mesh_metrics.prometheus
    address = dev_server.client.service_client.config.target_host
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    metrics_port, health_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEMPORAL_ADDRESS": address, "CANARY_TASK_QUEUE": queue,
           "KUBECONFIG": str(cluster.kubeconfig), "CANARY_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
           "CANARY_HEALTH_ADDRESS": f"127.0.0.1:{health_port}"}
    processes.append(subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, cwd=ROOT,
                                      stdout=(tmp_path / "worker.log").open("ab"), stderr=subprocess.STDOUT))

    ready = await until(lambda: asyncio.to_thread(_get, f"http://127.0.0.1:{health_port}/readyz"),
                        lambda got: got[0] == 200, "the worker ready", timeout=60)
    assert json.loads(ready[1]) == {"status": "ok", "temporal": "ok", "kubernetes": "ok", "polling": "ok"}
    assert (await asyncio.to_thread(_get, f"http://127.0.0.1:{health_port}/livez"))[0] == 200

    shop.create_workload()
    spec = shop.spec(steps=[{"setWeight": 50}, {"pause": {"duration": "1s"}}])
    await dev_server.client.start_workflow(CanaryJobWorkflow.run, CanaryJobInput(job=spec),
                                           id=workflow_id(shop.namespace, "web"), task_queue=queue)
    await shop.wait(lambda d: d.phase == Phase.HEALTHY, "attached")
    prometheus.add_target(f"127.0.0.1:{metrics_port}")
    job = f'job_namespace="{shop.namespace}",job_name="web"'
    # The SDK's own metrics, from the same endpoint.
    await asyncio.to_thread(prometheus.wait_for, 'count({__name__=~"temporal_.+",service="canary-worker"})', 30)
    assert _value(prometheus, f"sum(canary_releases_started_total{{{job}}})") == 0

    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == Phase.PROGRESSING, "the release running")
    started = await until(lambda: asyncio.to_thread(_value, prometheus, f"sum(canary_releases_started_total{{{job}}})"),
                          lambda v: v == 1, "the started counter at 1", timeout=30)
    assert started == 1
    await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                    "promoted", timeout=90)
    finished = f'sum(canary_releases_finished_total{{{job},outcome="promoted"}})'
    await until(lambda: asyncio.to_thread(_value, prometheus, finished), lambda v: v == 1, "finished = 1", timeout=30)
    steps = await asyncio.to_thread(prometheus.query_all,
                                    f"sum by (step, result) (canary_step_duration_seconds_count{{{job}}})")
    assert {(labels["step"], labels["result"]) for labels, _ in steps} == {("setWeight", "succeeded"),
                                                                           ("pause", "succeeded")}
    pause = await asyncio.to_thread(prometheus.query, f'sum(canary_step_duration_seconds_sum{{{job},step="pause"}})')
    assert pause is not None and 1.0 <= pause < 10
    assert await asyncio.to_thread(_value, prometheus, "sum(canary_detection_latency_seconds_count)") >= 1
    # The SDK metric the dashboard plots for worker saturation, under the name it uses.
    schedule_to_start = 'temporal_workflow_task_schedule_to_start_latency_count{service="canary-worker"}'
    assert await asyncio.to_thread(_value, prometheus, f"sum({schedule_to_start})") >= 1

    # An operation the job refuses is counted as refused.
    with pytest.raises(Conflict):
        await canary.operate(dev_server.client, shop.namespace, "web", names.CONTINUE,
                             OperationRequest(actor="e2e", release=2, step=1))
    await until(lambda: asyncio.to_thread(
        _value, prometheus, 'sum(canary_operations_total{operation="continue",via="update",result="rejected"})'),
        lambda v: v >= 1, "the refused continue counted", timeout=30)

    # The API counts jobs by phase from Temporal's visibility.
    api_metrics = free_port()
    api_env = {**os.environ, "PYTHONPATH": str(ROOT), "CANARY_API_TOKENS": "metrics-test-token:viewer:prom"}
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "starter.api", "--port", str(free_port()), "--address", address,
         "--metrics-address", f"127.0.0.1:{api_metrics}"], env=api_env, cwd=ROOT,
        stdout=(tmp_path / "api.log").open("ab"), stderr=subprocess.STDOUT))
    prometheus.add_target(f"127.0.0.1:{api_metrics}")
    healthy = await asyncio.to_thread(prometheus.wait_for, 'max(canary_jobs{phase="healthy",service="canary-api"})', 60)
    assert healthy >= 1
    prometheus.remove_target(f"127.0.0.1:{metrics_port}")
    prometheus.remove_target(f"127.0.0.1:{api_metrics}")
