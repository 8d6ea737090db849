"""Built-in checks and the baseline comparison against a real Prometheus scraping the simulated mesh.

One namespace holds four Services, each over 3 stable pods (Deployment ``<name>``) and 1 canary
pod (``<name>-canary``) of the real test cluster; the traffic simulator serves them in Istio's
metric names and a real Prometheus scrapes it, as ``canaryctl dev up`` runs them. All four
get their traffic at once, so the module waits for history once (about 40 s), not per test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from activities.metrics import Measurement, MeasurementPhase, MeasureRequest, measure
from devenv.cluster import LocalCluster
from devenv.metrics import start_metrics, stop_metrics
from devenv.prometheus import PrometheusServer
from devenv.traffic import ERROR_RATE_ANNOTATION, LATENCY_ANNOTATION, TRAFFIC_ANNOTATION
from tests.kube_helpers import eventually

pytestmark = pytest.mark.cluster

RATE = 40.0  # requests per second per Service: 10 to the canary pod, 30 to the stable ones
# name -> (stable pod annotations, canary pod annotations)
SERVICES: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "bad": ({ERROR_RATE_ANNOTATION: "0.001"}, {ERROR_RATE_ANNOTATION: "0.05"}),
    "slow": ({LATENCY_ANNOTATION: "50"}, {LATENCY_ANNOTATION: "250"}),
    "idle": ({}, {TRAFFIC_ANNOTATION: "0"}),
    "same": ({ERROR_RATE_ANNOTATION: "0.02"}, {ERROR_RATE_ANNOTATION: "0.02"}),
}
# Prometheus scrapes every second: windows of seconds, not the minutes a real mesh needs.
CHECK_WINDOW = "10s"
BASELINE = {"window": "45s", "step": "3s", "minSamples": 10}


def deployment(name: str, service: str, replicas: int, annotations: dict[str, str]) -> dict[str, Any]:
    labels = {"app": service, "track": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels, "annotations": annotations},
                         "spec": {"containers": [{"name": "app", "image": f"{service}:1"}]}},
        },
    }


@pytest.fixture(scope="module")
def mesh(cluster: LocalCluster, kube_api: ApiClient) -> Iterator[tuple[PrometheusServer, str]]:
    """Prometheus and the simulator, and the namespace of the four Services once their pods have series."""
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    core.create_namespace({"metadata": {"name": namespace}})
    server, simulator = start_metrics(cluster.kubeconfig, rate=RATE)
    try:
        for service, (stable, canary) in SERVICES.items():
            core.create_namespaced_service(namespace, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                "spec": {"selector": {"app": service}, "ports": [{"port": 80, "targetPort": 8080}]}})
            apps.create_namespaced_deployment(namespace, deployment(service, service, 3, stable))
            apps.create_namespaced_deployment(namespace, deployment(f"{service}-canary", service, 1, canary))
        pods = 4 * len(SERVICES) - 1  # the idle canary pod never gets a request, so it has no series
        eventually(lambda: server.query(
            f'count(count by (pod) (istio_requests_total{{destination_workload_namespace="{namespace}"}}))') == pods,
            timeout=90, interval=0.5, what=f"{pods} pods with request series")
        time.sleep(12)  # a full CHECK_WINDOW of samples
        yield server, namespace
    finally:
        stop_metrics(server, simulator)
        core.delete_namespace(namespace)


def builtin(mesh: tuple[PrometheusServer, str], check: str, service: str, **conditions: str) -> Measurement:
    server, namespace = mesh
    return measure(MeasureRequest.model_validate({
        "metric": check, **conditions,
        "provider": {"builtin": {"check": check, "workload": service, "namespace": namespace,
                                 "window": CHECK_WINDOW}}}), server.address)


def compared(mesh: tuple[PrometheusServer, str], check: str, service: str) -> Measurement:
    """The first answer of a baseline comparison that has enough samples (history builds up meanwhile)."""
    server, namespace = mesh
    request = MeasureRequest.model_validate({
        "metric": f"{check}-vs-stable",
        "provider": {"baseline": {"check": check, "workload": service, "namespace": namespace, **BASELINE}}})

    def answered() -> Measurement | None:
        answer = measure(request, server.address)
        assert answer.phase is not MeasurementPhase.ERROR, answer.message
        return answer if answer.phase is not MeasurementPhase.INCONCLUSIVE else None

    answer = eventually(answered, timeout=90, interval=2, what=f"{service}: enough samples to compare")
    assert answer is not None
    return answer


def test_request_success_rate_of_a_canary_with_five_percent_errors_is_about_095(
        mesh: tuple[PrometheusServer, str]) -> None:
    answer = builtin(mesh, "request-success-rate", "bad", successCondition="result >= 0.99",
                     failureCondition="result < 0.97")
    assert answer.value is not None and 0.93 <= answer.value <= 0.97, answer
    assert answer.phase is MeasurementPhase.FAILED
    healthy = builtin(mesh, "request-success-rate", "slow", successCondition="result >= 0.99")
    assert (healthy.phase, healthy.value) == (MeasurementPhase.SUCCESSFUL, 1.0)


def test_request_duration_of_a_slow_canary_is_its_p99_in_milliseconds(mesh: tuple[PrometheusServer, str]) -> None:
    slow = builtin(mesh, "request-duration", "slow", successCondition="result <= 200")
    assert slow.value is not None and 250 < slow.value <= 500, slow
    assert slow.phase is MeasurementPhase.FAILED
    fast = builtin(mesh, "request-duration", "same", successCondition="result <= 200")
    assert fast.value is not None and fast.value <= 25 and fast.phase is MeasurementPhase.SUCCESSFUL


def test_a_canary_without_traffic_is_no_data_never_a_verdict(mesh: tuple[PrometheusServer, str]) -> None:
    for check in ("request-success-rate", "request-error-rate", "request-duration"):
        answer = builtin(mesh, check, "idle", successCondition="result >= 0.99")
        assert (answer.phase, answer.value, answer.message) == (MeasurementPhase.INCONCLUSIVE, None, "no data")
    server, namespace = mesh
    none = measure(MeasureRequest.model_validate({"metric": "idle-vs-stable", "provider": {"baseline": {
        "check": "request-error-rate", "workload": "idle", "namespace": namespace, **BASELINE}}}), server.address)
    assert none.phase is MeasurementPhase.INCONCLUSIVE
    assert none.message.startswith("too few samples to compare: canary 0, stable ")


def test_the_baseline_comparison_fails_a_canary_worse_than_stable(mesh: tuple[PrometheusServer, str]) -> None:
    errors = compared(mesh, "request-error-rate", "bad")
    assert errors.phase is MeasurementPhase.FAILED, errors.message
    assert errors.message.startswith("canary worse than stable: median 0.0")
    slow = compared(mesh, "request-duration", "slow")
    assert slow.phase is MeasurementPhase.FAILED, slow.message
    assert slow.value is not None and slow.value > 1.0  # p99 well over twice the stable pods'


def test_the_baseline_comparison_passes_a_canary_equal_to_stable(mesh: tuple[PrometheusServer, str]) -> None:
    for check in ("request-error-rate", "request-duration"):
        answer = compared(mesh, check, "same")
        assert answer.phase is MeasurementPhase.SUCCESSFUL, answer.message
