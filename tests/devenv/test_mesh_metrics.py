"""A real Prometheus scraping the simulated mesh of real (KWOK) pods: the numbers a canary judge reads."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from devenv.cluster import LocalCluster
from devenv.metrics import start_metrics, stop_metrics
from devenv.prometheus import PrometheusServer
from devenv.traffic import ERROR_RATE_ANNOTATION, LATENCY_ANNOTATION, TRAFFIC_ANNOTATION
from tests.kube_helpers import eventually

pytestmark = pytest.mark.cluster

RATE = 40.0  # requests per second per Service
WINDOW = "5s"


@pytest.fixture(scope="module")
def prometheus(cluster: LocalCluster) -> Iterator[PrometheusServer]:
    """Prometheus and the simulator for every Service, as ``canaryctl dev up`` starts them."""
    server, simulator = start_metrics(cluster.kubeconfig, rate=RATE)
    yield server
    stop_metrics(server, simulator)


def track(name: str, replicas: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Deployment whose pods the Service ``web`` selects (``app: web``), told apart by ``track``."""
    labels = {"app": "web", "track": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels, "annotations": annotations or {}},
                         "spec": {"containers": [{"name": "app", "image": "web:1"}]}},
        },
    }


def deploy_web(api: ApiClient, namespace: str, canary: dict[str, str]) -> None:
    """Service ``web`` over 3 stable pods (``web``) and 1 canary pod (``web-canary``) annotated ``canary``."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    apps.create_namespaced_deployment(namespace, track("web", 3))
    apps.create_namespaced_deployment(namespace, track("web-canary", 1, canary))


def wait_for_traffic(prometheus: PrometheusServer, namespace: str, pods: int) -> None:
    """Until ``pods`` pods have series, then one rate window more, so every window is full."""
    eventually(lambda: prometheus.query(
        f'count(count by (pod) (istio_requests_total{{destination_workload_namespace="{namespace}"}}))') == pods,
        timeout=60, interval=0.5, what=f"{pods} pods with request series")
    time.sleep(int(WINDOW.rstrip("s")) + 2)


def rate(*matchers: str) -> str:
    """``sum(rate(istio_requests_total{matchers}[WINDOW]))``."""
    return f"sum(rate(istio_requests_total{{{', '.join(matchers)}}}[{WINDOW}]))"


FAILED = 'response_code=~"5.."'
CANARY = 'destination_workload="web-canary"'
STABLE = 'destination_workload="web"'


def test_one_canary_pod_of_four_failing_half_its_requests_is_an_eighth_of_errors(
        kube_api: ApiClient, namespace: str, prometheus: PrometheusServer) -> None:
    deploy_web(kube_api, namespace, {ERROR_RATE_ANNOTATION: "0.5"})
    wait_for_traffic(prometheus, namespace, pods=4)
    ns = f'destination_workload_namespace="{namespace}", destination_service_name="web"'

    overall = prometheus.query(f"{rate(ns, FAILED)} / {rate(ns)}")
    assert overall is not None and 0.10 <= overall <= 0.15
    by_workload = dict(
        (labels["destination_workload"], value) for labels, value in prometheus.query_all(
            f'sum by (destination_workload) (rate(istio_requests_total{{{ns}, response_code=~"5.."}}[{WINDOW}]))'
            f' / sum by (destination_workload) (rate(istio_requests_total{{{ns}}}[{WINDOW}]))'))
    assert set(by_workload) == {"web-canary"}  # the stable pods never answered 500
    assert 0.4 <= by_workload["web-canary"] <= 0.6
    # The replica ratio is the traffic ratio, and the Service gets the configured rate.
    share = prometheus.query(f"{rate(ns, CANARY)} / {rate(ns)}")
    assert share is not None and 0.2 <= share <= 0.3
    total = prometheus.query(rate(ns))
    assert total is not None and 0.8 * RATE <= total <= 1.2 * RATE


def test_a_workload_without_traffic_has_no_series(
        kube_api: ApiClient, namespace: str, prometheus: PrometheusServer) -> None:
    deploy_web(kube_api, namespace, {TRAFFIC_ANNOTATION: "0"})
    wait_for_traffic(prometheus, namespace, pods=3)
    ns = f'destination_workload_namespace="{namespace}"'

    assert prometheus.query(rate(ns, CANARY)) is None
    ratio = prometheus.query(f"{rate(ns, CANARY, FAILED)} / {rate(ns, CANARY)}")
    assert ratio is None or math.isnan(ratio)
    stable = prometheus.query(rate(ns, STABLE))
    assert stable is not None and stable > 0


def test_a_latency_annotation_shows_in_the_99th_percentile(
        kube_api: ApiClient, namespace: str, prometheus: PrometheusServer) -> None:
    deploy_web(kube_api, namespace, {LATENCY_ANNOTATION: "250"})
    wait_for_traffic(prometheus, namespace, pods=4)

    def p99(workload: str) -> float | None:
        return prometheus.query(
            f'histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket'
            f'{{destination_workload_namespace="{namespace}", destination_workload="{workload}"}}[{WINDOW}])))')

    canary, stable = p99("web-canary"), p99("web")
    assert canary is not None and 250 < canary <= 500
    assert stable is not None and stable <= 25
