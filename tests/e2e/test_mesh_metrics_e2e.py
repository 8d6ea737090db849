"""The e2e fixture ``mesh_metrics`` gives the numbers an analysis reads, through the product's own provider."""

from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiClient

from activities.metrics.prometheus import query
from devenv.traffic import ERROR_RATE_ANNOTATION
from tests.e2e.conftest import MESH_RATE, MeshMetrics
from tests.kube_helpers import deployment, eventually, service

pytestmark = pytest.mark.cluster

WINDOW_SECONDS = 10


def test_a_five_percent_error_rate_reads_as_five_percent(
        mesh_metrics: MeshMetrics, kube_api: ApiClient, namespace: str) -> None:
    k8s.AppsV1Api(kube_api).create_namespaced_deployment(namespace, deployment(
        "web", image="registry.local/web:1", replicas=2, template_annotations={ERROR_RATE_ANNOTATION: "0.05"}))
    k8s.CoreV1Api(kube_api).create_namespaced_service(namespace, service("web", selector={"app": "web"}))
    web = f'destination_workload_namespace="{namespace}", destination_workload="web"'
    address = mesh_metrics.prometheus_address

    # Both pods answered a 500 at least once: from here on every rate window fills up.
    eventually(lambda: query(address, f'count(istio_requests_total{{{web}, response_code="500"}})') == 2,
               timeout=30, interval=0.5, what="500s from both pods of web in Prometheus")
    time.sleep(WINDOW_SECONDS + 2)

    errors = query(address, f'sum(rate(istio_requests_total{{{web}, response_code=~"5.."}}[{WINDOW_SECONDS}s]))'
                            f' / sum(rate(istio_requests_total{{{web}}}[{WINDOW_SECONDS}s]))')
    assert errors is not None and 0.035 <= errors <= 0.065, errors
    requests = query(address, f"sum(rate(istio_requests_total{{{web}}}[{WINDOW_SECONDS}s]))")
    # The Service gets the simulator's whole rate, split over its two Ready pods.
    assert requests is not None and 0.8 * MESH_RATE <= requests <= 1.2 * MESH_RATE, requests
