"""End to end: the Temporal dev server, a real worker, the real local cluster, the real client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from kubernetes import client as k8s
from kubernetes.client import ApiClient
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from devenv.cluster import LocalCluster
from devenv.metrics import start_metrics, stop_metrics
from devenv.prometheus import PrometheusServer
from devenv.traffic import TrafficSimulator
from starter import client as canary
from tests.kube_helpers import deployment, eventually, service
from tests.temporal_envs import local_env
from worker import serve
from workflows.models import JobDetails, Phase
from workflows.spec import JobSpec, workflow_id

T = TypeVar("T")

# Requests per second the simulated mesh sends to each Service: a canary at half the traffic
# answers about 500 requests in a 12 s window, so a 5 % error rate reads as 0.95 +- 0.01 and never
# near a 0.98 failure line (at 40, one run in about twenty read 0.972).
MESH_RATE = 80.0


@pytest_asyncio.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    async with await local_env() as env:
        yield env


@dataclass(frozen=True)
class MeshMetrics:
    """A real Prometheus scraping the simulated Istio mesh of every Service in the test cluster."""

    prometheus: PrometheusServer
    simulator: TrafficSimulator

    @property
    def prometheus_address(self) -> str:
        """The base URL analysis queries go to, e.g. ``http://127.0.0.1:40123``."""
        return self.prometheus.address


@pytest.fixture(scope="session")
def mesh_metrics(cluster: LocalCluster) -> Iterator[MeshMetrics]:
    """Prometheus (1 s scrapes) and the simulator, as ``canaryctl dev up`` runs them, for the session.

    The simulator follows every Service's Ready endpoints, so a test's Deployment (and its
    ``<name>-canary``, labelled ``destination_workload`` apart) gets traffic without wiring.
    Behaviour per pod template annotation: see :mod:`devenv.traffic`.
    """
    prometheus, simulator = start_metrics(cluster.kubeconfig, rate=MESH_RATE)
    yield MeshMetrics(prometheus, simulator)
    stop_metrics(prometheus, simulator)


@pytest_asyncio.fixture(scope="session")
async def temporal(dev_server: WorkflowEnvironment, kube_api: ApiClient,
                   mesh_metrics: MeshMetrics) -> AsyncIterator[Client]:
    """The dev server's client, with the production worker polling the production task queue.

    The worker's default Prometheus is the mesh's, as ``canaryctl dev up`` configures it.
    """
    async with serve(dev_server.client, kube_api, activity_threads=100,
                     prometheus_address=mesh_metrics.prometheus_address):
        yield dev_server.client


async def until(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], what: str,
                timeout: float = 60) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    value = await probe()
    while not check(value):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.1)
        value = await probe()
    return value


class Shop:
    """A namespace with a Deployment, its Service and a canary job, as a user would set them up."""

    def __init__(self, temporal: Client, api: ApiClient, namespace: str) -> None:
        self.temporal, self.namespace = temporal, namespace
        self.apps, self.core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
        self.discovery = k8s.DiscoveryV1Api(api)

    def create_workload(self, *, replicas: int = 4, image: str = "registry.local/web:1") -> None:
        self.apps.create_namespaced_deployment(self.namespace, deployment("web", image=image, replicas=replicas))
        self.core.create_namespaced_service(self.namespace, service("web", selector={"app": "web"}))
        eventually(lambda: (self.apps.read_namespaced_deployment_status("web", self.namespace).status
                            .available_replicas or 0) == replicas, what="the workload available")

    def spec(self, **fields: Any) -> JobSpec:
        return JobSpec.model_validate({
            "name": "web", "namespace": self.namespace, "workload": {"name": "web"},
            "steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}],
            "progressDeadline": "20s", **fields,
        })

    async def apply(self, **fields: Any) -> str:
        return await canary.apply_job(self.temporal, self.spec(**fields))

    async def attach(self, **fields: Any) -> JobDetails:
        """Deploy the workload, apply its job, and wait until the job has taken it over."""
        self.create_workload()
        await self.apply(**fields)
        return await self.wait(lambda d: d.phase == Phase.HEALTHY, "attached")

    async def details(self) -> JobDetails:
        return await canary.details(self.temporal, self.namespace, "web")

    async def wait(self, check: Callable[[JobDetails], bool], what: str, timeout: float = 60) -> JobDetails:
        return await until(self.details, check, what, timeout)

    def set_image(self, image: str, *, labels: dict[str, str] | None = None,
                  annotations: dict[str, str] | None = None) -> None:
        """What `kubectl set image` does: edit the pod template of the user's Deployment."""
        template: dict[str, Any] = {"spec": {"containers": [{"name": "app", "image": image}]}}
        if labels or annotations:
            template["metadata"] = {"labels": labels or {}, "annotations": annotations or {}}
        self.apps.patch_namespaced_deployment("web", self.namespace, {"spec": {"template": template}})

    def pods(self, track: str | None = None) -> list[Any]:
        selector = "app=web" + (f",canary-delivery.dev/track={track}" if track else "")
        return [p for p in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
                if p.metadata.deletion_timestamp is None]

    def own_images(self) -> list[str]:
        """Images of the pods the user's Deployment runs itself (not the canary's), sorted."""
        selector = "app=web,!canary-delivery.dev/track"
        return sorted(p.spec.containers[0].image
                      for p in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
                      if p.metadata.deletion_timestamp is None)

    def canary_replicas(self) -> int:
        """The pods the job asks for as its canary (0 when there is none).

        The ``spec.replicas`` of its canary ReplicaSet (``activities/canary_set.py``), or of the
        canary Deployment it runs when the release's first step does not set the canary up.
        """
        sets = [rs for rs in self.apps.list_namespaced_replica_set(
            self.namespace, label_selector="canary-delivery.dev/track=canary").items
            if not any(ref.controller for ref in rs.metadata.owner_references or [])]
        if sets:
            return sum(int(rs.spec.replicas or 0) for rs in sets)
        try:
            return int(self.apps.read_namespaced_deployment("web-canary", self.namespace).spec.replicas or 0)
        except k8s.exceptions.ApiException as error:
            if error.status == 404:
                return 0
            raise

    def ready_images(self) -> list[str]:
        """Images of the Ready pods the Service sends traffic to, sorted."""
        return sorted(p.spec.containers[0].image for p in self.pods()
                      if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])))

    def endpoint_count(self) -> int:
        slices = self.discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector="kubernetes.io/service-name=web").items
        return sum(1 for s in slices for e in (s.endpoints or []) if e.conditions.ready)

    def workload(self) -> Any:
        return self.apps.read_namespaced_deployment("web", self.namespace)


@pytest_asyncio.fixture
async def shop(temporal: Client, kube_api: ApiClient, namespace: str) -> AsyncIterator[Shop]:
    yield Shop(temporal, kube_api, namespace)
    handle = temporal.get_workflow_handle(workflow_id(namespace, "web"))
    try:
        await handle.terminate("test over")
    except Exception:
        pass
