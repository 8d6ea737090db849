"""The Helm chart: lint, render, install into the local cluster, and run a release with its RBAC.

``helm`` is built from its Go module by ``scripts/build-cluster.sh`` (``make cluster``) into the
cluster binaries' cache. The install is a server-side apply of ``helm template``'s output, so the
API server validates and stores every object (no Helm release machinery needed against a
cluster without a container runtime). The worker then runs out of cluster with a token of the
chart's ServiceAccount (TokenRequest) instead of the admin kubeconfig: every call an activity
makes is authorized by the chart's ClusterRole or Roles, or the release fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from devenv.cluster import LocalCluster
from starter import client as canary
from tests.e2e.conftest import Shop, until
from workflows import names
from workflows.canary import CanaryJobWorkflow
from workflows.models import CanaryJobInput, OperationRequest, Outcome, Phase, UpdateVersionRequest
from workflows.spec import workflow_id

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "canary-delivery"
CLUSTER_HOME = Path(os.environ.get("CANARY_CLUSTER_HOME", Path.home() / ".cache" / "canary-delivery" / "cluster"))
HELM = CLUSTER_HOME / "bin" / "helm"

CUSTOM_VALUES = {
    "temporal": {"address": "deliveries.a1b2c.tmprl.cloud:7233", "namespace": "deliveries.a1b2c",
                 "apiKey": {"existingSecret": "temporal-cloud", "existingSecretKey": "key"},
                 "tls": {"enabled": True, "existingSecret": "temporal-mtls", "caCert": True}},
    "worker": {"replicas": 3, "prometheusAddress": "http://prometheus.monitoring:9090", "heartbeatSeconds": 3.5},
    "api": {"tokens": {"values": [{"name": "alice", "role": "admin", "token": "a" * 32}]}},
    "rbac": {"trafficRouting": False},
    "metrics": {"serviceMonitor": {"enabled": True}},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make cluster` (scripts/build-cluster.sh builds it from its Go module)")
    return HELM


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def render(helm: Path, release: str, namespace: str, values: dict[str, Any] | None = None,
           tmp: Path | None = None) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    if values:
        assert tmp is not None
        path = tmp / f"values-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    result = _helm(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def container(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    deployment = next(o for o in by_kind(objects, "Deployment") if o["metadata"]["name"].endswith(f"-{component}"))
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def apply(api: ApiClient, objects: list[dict[str, Any]]) -> None:
    """Server-side apply, as `kubectl apply --server-side` does: the API server must accept each object."""
    dynamic = DynamicClient(api)
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        resource.server_side_apply(body=obj, name=obj["metadata"]["name"],
                                   namespace=obj["metadata"].get("namespace"), field_manager="helm-chart-test")


def delete_cluster_scoped(api: ApiClient, objects: list[dict[str, Any]]) -> None:
    rbac = k8s.RbacAuthorizationV1Api(api)
    for obj in objects:
        if obj["kind"] == "ClusterRole":
            rbac.delete_cluster_role(obj["metadata"]["name"])
        elif obj["kind"] == "ClusterRoleBinding":
            rbac.delete_cluster_role_binding(obj["metadata"]["name"])


def token_kubeconfig(cluster: LocalCluster, api: ApiClient, namespace: str, service_account: str,
                     path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a bound token from TokenRequest)."""
    request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = k8s.CoreV1Api(api).create_namespaced_service_account_token(service_account, namespace, request)
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster_entry],
        "users": [{"name": service_account, "user": {"token": token.status.token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster_entry["name"], "user": service_account}}],
        "current-context": "sa"}))
    path.chmod(0o600)
    return path


def client_for(kubeconfig: Path) -> ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    return k8s.ApiClient(configuration)


def forbidden(call: Any) -> bool:
    try:
        call()
    except ApiException as err:
        return err.status == 403
    return False


# -- lint and template ---------------------------------------------------------------------


def test_lint_passes_with_default_and_custom_values(helm: Path, tmp_path: Path) -> None:
    assert _helm(helm, "lint", "--strict", str(CHART)).returncode == 0
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump(CUSTOM_VALUES))
    result = _helm(helm, "lint", "--strict", str(CHART), "--values", str(custom))
    assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_render_two_hardened_workers_and_least_privilege_rbac(helm: Path) -> None:
    objects = render(helm, "cd", "delivery")
    worker = next(o for o in by_kind(objects, "Deployment") if o["metadata"]["name"] == "cd-canary-delivery-worker")
    assert worker["spec"]["replicas"] == 2
    pod = worker["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["terminationGracePeriodSeconds"] == 30
    c = container(objects, "worker")
    assert c["command"] == ["canary-worker"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    env = env_of(c)
    assert env["TEMPORAL_ADDRESS"] == "temporal-frontend.temporal.svc:7233"
    assert env["CANARY_SHUTDOWN_GRACE"] == "20"
    assert "CANARY_WATCH_NAMESPACES" not in env
    assert container(objects, "api")["command"][0] == "canary-api"
    (role,) = by_kind(objects, "ClusterRole")
    rules = {(g, r): sorted(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}
    assert rules[("apps", "deployments")] == sorted(["get", "list", "watch", "patch", "create", "delete"])
    # The canary ReplicaSet (made, followed, scaled, handed over) and the promotion's clearing.
    assert rules[("apps", "replicasets")] == ["create", "delete", "get", "list", "patch", "watch"]
    assert rules[("", "pods")] == ["delete", "list", "patch"]
    assert ("", "secrets") not in rules and ("", "configmaps") not in rules
    assert not any("*" in v for verbs in rules.values() for v in verbs)
    assert by_kind(objects, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1
    assert not by_kind(objects, "ServiceMonitor") and not by_kind(objects, "Role")


def test_custom_values_reach_the_pods(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, "cd", "delivery", CUSTOM_VALUES, tmp_path)
    c = container(objects, "worker")
    env = env_of(c)
    assert env["TEMPORAL_ADDRESS"] == "deliveries.a1b2c.tmprl.cloud:7233"
    assert env["TEMPORAL_API_KEY"] == {"secretKeyRef": {"name": "temporal-cloud", "key": "key"}}
    assert env["TEMPORAL_TLS"] == "true"
    assert env["TEMPORAL_TLS_SERVER_CA_CERT_PATH"] == "/etc/temporal/tls/ca.crt"
    assert env["TEMPORAL_TLS_CLIENT_CERT_PATH"] == "/etc/temporal/tls/tls.crt"
    assert env["CANARY_PROMETHEUS_ADDRESS"] == "http://prometheus.monitoring:9090"
    assert env["CANARY_HEARTBEAT_SECONDS"] == "3.5"
    assert {"name": "temporal-tls", "mountPath": "/etc/temporal/tls", "readOnly": True} in c["volumeMounts"]
    assert by_kind(objects, "Deployment")[-1]["spec"]["replicas"] == 3 or any(
        d["spec"]["replicas"] == 3 for d in by_kind(objects, "Deployment"))
    (role,) = by_kind(objects, "ClusterRole")
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"deployments", "replicasets", "pods"}
    assert len(by_kind(objects, "ServiceMonitor")) == 1
    tokens = next(s for s in by_kind(objects, "Secret") if s["metadata"]["name"].endswith("-api-tokens"))
    assert yaml.safe_load(tokens["stringData"]["tokens.yaml"])["tokens"][0]["name"] == "alice"


def test_namespaced_mode_renders_roles_only_in_the_granted_namespaces(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, "cd", "delivery", {"rbac": {"namespaced": True, "watchNamespaces": ["shop", "blog"]}},
                     tmp_path)
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objects, "Role")) == ["blog", "shop"]
    assert env_of(container(objects, "worker"))["CANARY_WATCH_NAMESPACES"] == "shop,blog"


def test_the_schema_refuses_values_that_cannot_work(helm: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"temporal": {"address": "no-port"},
                                   "worker": {"replicas": 0, "heartbeatSeconds": 0}}))
    result = _helm(helm, "template", "cd", str(CHART), "--values", str(bad))
    assert result.returncode != 0
    assert "/temporal/address" in result.stderr and "/worker/replicas" in result.stderr
    assert "/worker/heartbeatSeconds" in result.stderr


# -- installed into the cluster ------------------------------------------------------------


@pytest.fixture
def installed(helm: Path, kube_api: ApiClient, namespace: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    release = f"cd{uuid.uuid4().hex[:6]}"
    objects = render(helm, release, namespace)
    apply(kube_api, objects)
    yield release, objects
    delete_cluster_scoped(kube_api, objects)


async def test_a_release_runs_with_only_the_charts_rbac(
        installed: tuple[str, list[dict[str, Any]]], dev_server: WorkflowEnvironment, cluster: LocalCluster,
        kube_api: ApiClient, shop: Shop, namespace: str, tmp_path: Path) -> None:
    release, _ = installed
    name = f"{release}-canary-delivery"
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    assert rbac.read_cluster_role(name).rules
    assert rbac.read_cluster_role_binding(name).subjects[0].name == name
    apps = k8s.AppsV1Api(kube_api)
    assert apps.read_namespaced_deployment(f"{name}-worker", namespace).spec.replicas == 2
    assert k8s.CoreV1Api(kube_api).read_namespaced_service_account(name, namespace)

    kubeconfig = token_kubeconfig(cluster, kube_api, namespace, name, tmp_path / "sa.kubeconfig")
    sa_api = client_for(kubeconfig)
    # Least privilege, as the API server sees it.
    core = k8s.CoreV1Api(sa_api)
    assert forbidden(lambda: core.list_namespaced_secret(namespace))
    assert forbidden(lambda: core.list_namespaced_config_map(namespace))
    assert forbidden(lambda: k8s.AppsV1Api(sa_api).list_namespaced_stateful_set(namespace))

    queue = f"rbac-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CANARY_TASK_QUEUE": queue, "KUBECONFIG": str(kubeconfig),
           "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host}
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, cwd=ROOT,
                              stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        shop.create_workload()
        spec = shop.spec(steps=[{"setWeight": 50}, {"pause": {}}])
        await dev_server.client.start_workflow(CanaryJobWorkflow.run, CanaryJobInput(job=spec),
                                               id=workflow_id(namespace, "web"), task_queue=queue)
        await shop.wait(lambda d: d.phase == Phase.HEALTHY, f"attached (worker log: {log})")

        # An edit starts a release (the informer's watch, cluster-wide), a continue promotes it.
        shop.set_image("registry.local/web:2")
        await shop.wait(lambda d: d.phase == Phase.PAUSED, "paused at step 2")
        await canary.operate(dev_server.client, namespace, "web", names.CONTINUE, OperationRequest(actor="rbac"))
        await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2,
                        "promoted")

        # update-version writes the template itself; terminate rolls the release back.
        await canary.operate(dev_server.client, namespace, "web", names.UPDATE_VERSION,
                             UpdateVersionRequest(actor="rbac", image="registry.local/web:3"))
        await shop.wait(lambda d: d.phase == Phase.PAUSED, "the second release paused")
        await canary.operate(dev_server.client, namespace, "web", names.TERMINATE,
                             OperationRequest(actor="rbac", reason="rbac test"))
        terminated = await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated and rolled back")
        assert terminated.stable is not None and terminated.stable.revision == 2
        versions = await canary.versions(dev_server.client, namespace, "web")
        outcomes = {v.revision: v.outcome for v in versions.history}
        assert outcomes.get(2) == Outcome.PROMOTED and Outcome.TERMINATED in outcomes.values(), outcomes

        # Deleting the job gives the Deployment back and deletes the canary Deployment.
        await canary.operate(dev_server.client, namespace, "web", names.DELETE, OperationRequest(actor="rbac"))
        await until(lambda: canary.list_jobs(dev_server.client, namespace),
                    lambda jobs: not jobs, "the job gone", timeout=60)
        assert [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items
                if d.metadata.name.startswith("web")] == ["web"]
        assert "403" not in log.read_text() and "Forbidden" not in log.read_text()
    finally:
        worker.terminate()
        worker.wait(30)
        sa_api.close()


async def test_namespaced_install_cannot_reach_other_namespaces_or_secrets(
        helm: Path, kube_api: ApiClient, cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    core = k8s.CoreV1Api(kube_api)
    other = f"other-{uuid.uuid4().hex[:6]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=other)))
    try:
        release = f"ns{uuid.uuid4().hex[:6]}"
        objects = render(helm, release, namespace, {"rbac": {"namespaced": True}}, tmp_path)
        apply(kube_api, objects)
        sa = f"{release}-canary-delivery"
        kubeconfig = token_kubeconfig(cluster, kube_api, namespace, sa, tmp_path / "ns.kubeconfig")
        sa_api = client_for(kubeconfig)
        apps, sa_core = k8s.AppsV1Api(sa_api), k8s.CoreV1Api(sa_api)
        # Granted: its own namespace's Deployments.
        apps.list_namespaced_deployment(namespace)
        # Not granted: Secrets anywhere, Deployments elsewhere or cluster-wide.
        assert forbidden(lambda: sa_core.list_namespaced_secret(namespace))
        assert forbidden(lambda: sa_core.read_namespaced_secret("anything", other))
        assert forbidden(lambda: apps.list_namespaced_deployment(other))
        assert forbidden(lambda: apps.patch_namespaced_deployment("web", other, {"spec": {"replicas": 0}}))
        assert forbidden(lambda: apps.list_deployment_for_all_namespaces())
        sa_api.close()
    finally:
        core.delete_namespace(other)


async def test_a_verb_missing_from_the_role_fails_the_job(
        installed: tuple[str, list[dict[str, Any]]], dev_server: WorkflowEnvironment, cluster: LocalCluster,
        kube_api: ApiClient, shop: Shop, namespace: str, tmp_path: Path) -> None:
    """The test above proves the role is enough; this one that the API server really enforces it."""
    release, objects = installed
    (role,) = [dict(o) for o in by_kind(objects, "ClusterRole")]
    role["rules"] = [{**rule, "verbs": [v for v in rule["verbs"] if v != "patch"]}
                     if rule["resources"] == ["deployments"] else rule for rule in role["rules"]]
    apply(kube_api, [role])
    kubeconfig = token_kubeconfig(cluster, kube_api, namespace, f"{release}-canary-delivery",
                                  tmp_path / "sa.kubeconfig")
    queue = f"rbac-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CANARY_TASK_QUEUE": queue, "KUBECONFIG": str(kubeconfig),
           "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host}
    worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, cwd=ROOT,
                              stdout=(tmp_path / "worker.log").open("ab"), stderr=subprocess.STDOUT)
    try:
        shop.create_workload()
        handle = await dev_server.client.start_workflow(
            CanaryJobWorkflow.run, CanaryJobInput(job=shop.spec()), id=workflow_id(namespace, "web"),
            task_queue=queue)
        description = await until(handle.describe, lambda d: d.close_time is not None,
                                  "the job refused for lack of patch", timeout=60)
        assert description.status is not None and description.status.name == "FAILED"
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        causes, cause = [], failure.value.cause
        while cause is not None:
            causes.append(str(cause))
            cause = cause.__cause__
        assert "forbidden" in " ".join(causes).lower(), causes
    finally:
        worker.terminate()
        worker.wait(30)
