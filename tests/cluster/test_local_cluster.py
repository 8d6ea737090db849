"""The local control plane behaves like a real cluster: rollouts, Services, failures, teardown."""

from __future__ import annotations

import os
import socket
import time

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from devenv.cluster import READY_DELAY_ANNOTATION, SIMULATE_LABEL, ClusterError, LocalCluster
from devenv.processes import port_in_use
from tests.kube_helpers import deployment, eventually, service

pytestmark = pytest.mark.cluster


def _ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


def test_deployment_service_and_image_rollout(kube_api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    discovery = client.DiscoveryV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("web", image="registry.local/web:1"))
    core.create_namespaced_service(namespace, service("web", selector={"app": "web"}))

    pods = eventually(lambda: len(_ready_pods(core, namespace, "app=web")) == 3
                      and _ready_pods(core, namespace, "app=web"), what="3 Ready pods")
    assert all(p.spec.node_name.startswith("kwok-node-") for p in pods)
    pod_ips = {p.status.pod_ip for p in pods}
    assert len(pod_ips) == 3

    def endpoint_ips() -> set[str]:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=web").items
        return {a for s in slices for e in (s.endpoints or []) if e.conditions.ready
                for a in e.addresses}

    eventually(lambda: endpoint_ips() == pod_ips, what="EndpointSlices listing the pods")

    first_rs = {rs.metadata.name for rs in apps.list_namespaced_replica_set(namespace).items}
    apps.patch_namespaced_deployment("web", namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "registry.local/web:2"}]}}}})

    def rolled_out() -> bool:
        d = apps.read_namespaced_deployment_status("web", namespace)
        s = d.status
        return (s.observed_generation == d.metadata.generation and s.updated_replicas == 3
                and s.available_replicas == 3 and (s.replicas or 0) == 3)

    eventually(rolled_out, timeout=60, what="the image rollout to finish")
    replica_sets = apps.list_namespaced_replica_set(namespace).items
    new = [rs for rs in replica_sets if rs.metadata.name not in first_rs]
    assert len(new) == 1
    assert new[0].spec.template.spec.containers[0].image == "registry.local/web:2"
    assert new[0].status.ready_replicas == 3
    eventually(lambda: {p.spec.containers[0].image for p in _ready_pods(core, namespace, "app=web")}
               == {"registry.local/web:2"}, what="only new pods serving")
    eventually(lambda: len(endpoint_ips()) == 3
               and endpoint_ips() == {p.status.pod_ip for p in _ready_pods(core, namespace, "app=web")},
               what="EndpointSlices following the new pods")


def test_crashing_pod_template_is_reported_by_the_deployment(kube_api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment(
        "crashy", image="registry.local/crashy:1", replicas=2,
        template_labels={SIMULATE_LABEL: "crash"}, progress_deadline=3))

    def deadline_exceeded() -> bool:
        conditions = apps.read_namespaced_deployment_status("crashy", namespace).status.conditions or []
        return any(c.type == "Progressing" and c.status == "False"
                   and c.reason == "ProgressDeadlineExceeded" for c in conditions)

    eventually(deadline_exceeded, timeout=60, what="ProgressDeadlineExceeded")
    status = apps.read_namespaced_deployment_status("crashy", namespace).status
    assert not status.available_replicas
    assert status.unavailable_replicas == 2
    pods = core.list_namespaced_pod(namespace, label_selector="app=crashy").items
    reasons = {cs.state.waiting.reason for p in pods for cs in (p.status.container_statuses or [])
               if cs.state.waiting}
    assert reasons == {"CrashLoopBackOff"}


def test_never_ready_pods_keep_the_deployment_unavailable(kube_api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment(
        "stuck", image="registry.local/stuck:1", replicas=2,
        template_labels={SIMULATE_LABEL: "never-ready"}))
    eventually(lambda: [p for p in core.list_namespaced_pod(namespace, label_selector="app=stuck").items
                        if p.status.phase == "Running"].__len__() == 2, what="pods Running")
    time.sleep(2)
    status = apps.read_namespaced_deployment_status("stuck", namespace).status
    assert not status.ready_replicas
    assert not _ready_pods(core, namespace, "app=stuck")


def test_ready_delay_annotation_makes_readiness_slow(kube_api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    started = time.monotonic()
    apps.create_namespaced_deployment(namespace, deployment(
        "slow", image="registry.local/slow:1", replicas=1,
        template_annotations={READY_DELAY_ANNOTATION: "4s"}))
    eventually(lambda: core.list_namespaced_pod(namespace, label_selector="app=slow").items,
               what="the pod to exist")
    assert not _ready_pods(core, namespace, "app=slow")
    eventually(lambda: _ready_pods(core, namespace, "app=slow"), timeout=30, what="the slow pod Ready")
    assert time.monotonic() - started >= 4


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_stop_leaves_no_process_or_port_behind(cluster: LocalCluster) -> None:
    second = LocalCluster(nodes=1)
    second.start()
    pids = second.pids
    ports = second.ports.all()
    run_dir = second.run_dir
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    assert all(_alive(pid) for pid in pids.values())
    second.stop()
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert not [port for port in ports if port_in_use(port)]
    assert not run_dir.exists()
    # The session cluster is untouched.
    assert all(_alive(pid) for pid in cluster.pids.values())


def test_component_that_cannot_start_reports_its_log(cluster: LocalCluster) -> None:
    broken = LocalCluster(nodes=1, start_timeout=20)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", broken.ports.etcd))
    blocker.listen()
    try:
        with pytest.raises(ClusterError) as error:
            broken.start()
    finally:
        blocker.close()
    message = str(error.value)
    assert message.startswith("etcd")
    assert "address already in use" in message
    assert not broken.processes
    assert os.path.exists(cluster.kubeconfig)
