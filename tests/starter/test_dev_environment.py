"""``canaryctl dev up/status/down/reset``: the supervisor, its state, what survives, nothing left behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from devenv.cluster import DEFAULT_HOME as CLUSTER_HOME
from devenv.cluster import PORTS_FILE, Ports
from devenv.processes import free_port, pid_alive
from devenv.supervisor import state as dev
from starter.cli import run
from tests.kube_helpers import deployment, service
from workflows import names, search

CANARYCTL = Path(sys.executable).with_name("canaryctl")

# Polls the canary task queue like the real worker, and records what it was started with.
FAKE_WORKER = f'''
import asyncio, json, os, signal
from pathlib import Path
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

@workflow.defn(name="Idle")
class Idle:
    @workflow.run
    async def run(self) -> None:
        pass

async def main() -> None:
    Path(__file__).with_suffix(f".{{os.getpid()}}.json").write_text(json.dumps({{
        k: os.environ.get(k)
        for k in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "KUBECONFIG", "CANARY_PROMETHEUS_ADDRESS")}}))
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"], namespace=os.environ["TEMPORAL_NAMESPACE"])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Worker(client, task_queue={names.TASK_QUEUE!r}, workflows=[Idle],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        await stop.wait()

asyncio.run(main())
'''


def canaryctl(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [str(CANARYCTL)] if CANARYCTL.exists() else [sys.executable, "-m", "starter.cli"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def alive(pid: int) -> bool:
    return pid_alive(pid)


async def temporal_answers(address: str) -> dict[str, Any]:
    temporal = await Client.connect(address)
    response = await temporal.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default"))
    return dict(response.custom_attributes)


def test_missing_worker_script_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(dev, "PROJECT_ROOT", tmp_path)
    assert run(["dev", "up", "--state-dir", str(tmp_path / "dev"), "--port", str(free_port()),
                "--ui-port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: worker.py not found in {tmp_path}: without it no worker can run")
    assert "--no-worker" in err
    assert not (tmp_path / "dev" / dev.PID_FILE).exists()

    missing = str(tmp_path / "nope.py")
    assert run(["dev", "up", "--state-dir", str(tmp_path / "dev"), "--worker", missing]) == 1
    assert capsys.readouterr().err == f"error: worker script {tmp_path / 'nope.py'} not found\n"


def test_supervisor_refuses_missing_worker_before_starting_anything(tmp_path: Path) -> None:
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "devenv.supervisor", "--state-dir", str(tmp_path), "--worker",
         str(tmp_path / "nope.py"), "--port", str(free_port()), "--ui-port", str(free_port())],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert time.monotonic() - began < 20
    assert "worker script" in (tmp_path / dev.ERROR_FILE).read_text()
    assert not (tmp_path / dev.STATE_FILE).exists() and not (tmp_path / dev.PID_FILE).exists()
    assert not (tmp_path / "temporal").exists()


def test_dev_up_without_prometheus_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_PROMETHEUS", str(tmp_path / "no-prometheus"))
    began = time.monotonic()
    up = canaryctl("dev", "up", "--state-dir", tmp_path / "dev", "--port", str(free_port()),
                   "--ui-port", str(free_port()), "--api-port", str(free_port()), "--no-worker")
    assert up.returncode == 1
    error = next(line for line in up.stderr.splitlines() if line.startswith("error:"))
    assert error.startswith("error: the dev environment did not start: cannot start Prometheus"), up.stderr
    assert "`make setup`" in error and "prometheus package" in error
    assert time.monotonic() - began < 30  # refused before Temporal or the cluster started
    assert not (tmp_path / "dev" / "temporal").exists() and not (tmp_path / "dev" / "cluster").exists()
    assert not (tmp_path / "dev" / dev.PID_FILE).exists()


def test_status_and_down_when_nothing_runs(tmp_path: Path) -> None:
    status = canaryctl("dev", "status", "--state-dir", tmp_path)
    assert (status.returncode, status.stdout.strip()) == (1, f"no dev environment running in {tmp_path}")
    down = canaryctl("dev", "down", "--state-dir", tmp_path)
    assert (down.returncode, down.stdout.strip()) == (0, f"no dev environment running in {tmp_path}")


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_dev_up_status_down(tmp_path: Path) -> None:
    if not (CLUSTER_HOME / "bin" / "kube-apiserver").exists():
        pytest.skip("cluster binaries missing: run scripts/build-cluster.sh")
    state_dir = tmp_path / "dev"
    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    port, ui_port, api_port = free_port(), free_port(), free_port()
    pids: list[int] = []
    try:
        up = canaryctl("dev", "up", "--state-dir", state_dir, "--port", str(port), "--ui-port", str(ui_port),
                       "--worker", worker, "--nodes", "2", "--api-port", str(api_port), timeout=400)
        assert up.returncode == 0, up.stderr
        state = json.loads((state_dir / dev.STATE_FILE).read_text())
        pids = [state["supervisor_pid"], *state["processes"].values()]
        assert state["temporal_address"] == f"127.0.0.1:{port}"
        assert state["ui_url"] == f"http://127.0.0.1:{ui_port}"
        assert set(state["processes"]) == {"temporal", "etcd", "kube-apiserver", "kube-controller-manager",
                                           "kube-scheduler", "kwok", "prometheus", "worker", "api"}
        assert all(alive(pid) for pid in pids)
        assert f"export KUBECONFIG={state['kubeconfig']}" in up.stdout.splitlines()
        assert f"export TEMPORAL_ADDRESS=127.0.0.1:{port}" in up.stdout.splitlines()
        assert f"export TEMPORAL_HTTP_ADDRESS={state['temporal_http_address']}" in up.stdout.splitlines()
        assert f"Web UI:      http://127.0.0.1:{ui_port}" in up.stdout
        assert f"API + page:  http://127.0.0.1:{api_port}" in up.stdout
        prometheus = state["prometheus_address"]
        assert prometheus.startswith("http://127.0.0.1:")
        assert f"Prometheus:  {prometheus}  (simulated mesh: {state['mesh_metrics_url']})" in up.stdout
        assert f"export CANARY_PROMETHEUS_ADDRESS={prometheus}" in up.stdout.splitlines()
        with urllib.request.urlopen(f"{prometheus}/-/ready", timeout=5) as response:
            assert response.status == 200
        # the HTTP API: dev up names the tokens file, the one place a token is shown
        token = dev.admin_token(Path(state["api_tokens_file"]))
        tokens_line = f"API tokens:  {state['api_tokens_file']}  (one per role; sign in with the admin one)"
        assert token and tokens_line in up.stdout and token not in up.stdout + up.stderr
        assert token not in (state_dir / dev.STATE_FILE).read_text()
        # The API holds only digests, and logs no token, not even one sent in a query string.
        digests = (state_dir / dev.API_TOKEN_DIGESTS_FILE).read_text()
        assert token not in digests and hashlib.sha256(token.encode()).hexdigest() in digests
        with urllib.request.urlopen(f"{state['api_url']}/healthz?token={token}", timeout=5) as response:
            assert response.status == 200
        whoami = urllib.request.Request(f"{state['api_url']}/api/v1/whoami",
                                        headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(whoami, timeout=5) as response:
            assert json.loads(response.read()) == {"name": "dev-admin", "role": "admin"}

        # Temporal frontend with the search attributes, and its UI
        attributes = asyncio.run(temporal_answers(state["temporal_address"]))
        assert {key.name for key in search.ALL} <= set(attributes)
        with urllib.request.urlopen(state["ui_url"], timeout=5) as response:
            assert response.status == 200
        # the Kubernetes API
        api = k8s_config.new_client_from_config(config_file=state["kubeconfig"])
        try:
            assert len(k8s.CoreV1Api(api).list_node().items) == 2
            # a Deployment behind a Service gets simulated mesh traffic, which Prometheus scrapes
            k8s.AppsV1Api(api).create_namespaced_deployment(
                "default", deployment("web", image="registry.local/web:1", replicas=2))
            k8s.CoreV1Api(api).create_namespaced_service("default", service("web", selector={"app": "web"}))
        finally:
            api.close()
        series = wait_until(lambda: prometheus_series(
            prometheus, 'istio_requests_total{destination_workload="web", destination_service_name="web"}'),
            "istio_requests_total series of web in Prometheus", timeout=60)
        assert {labels["pod"] for labels in series} and {labels["response_code"] for labels in series} == {"200"}
        # the worker got its configuration and polls
        record = json.loads(worker.with_suffix(f".{state['processes']['worker']}.json").read_text())
        assert record == {"TEMPORAL_ADDRESS": f"127.0.0.1:{port}", "TEMPORAL_NAMESPACE": "default",
                          "KUBECONFIG": state["kubeconfig"], "CANARY_PROMETHEUS_ADDRESS": prometheus}

        status = canaryctl("dev", "status", "--state-dir", state_dir, "-o", "json")
        assert status.returncode == 0, status.stdout
        assert all(json.loads(status.stdout)["alive"].values())
        assert token not in status.stdout
        status = canaryctl("dev", "status", "--state-dir", state_dir)
        assert status.returncode == 0, status.stdout
        assert f"{tokens_line}\n" in status.stdout and token not in status.stdout + status.stderr
        assert token not in (state_dir / dev.API_LOG).read_text() and "/healthz?token=" in (
            state_dir / dev.API_LOG).read_text()
        assert f"Prometheus:  {prometheus}  (simulated mesh: {state['mesh_metrics_url']})" in status.stdout
        assert re.search(r"^prometheus +pid \d+  running$", status.stdout, re.MULTILINE), status.stdout
        again = canaryctl("dev", "up", "--state-dir", state_dir, "--port", str(port),
                          "--ui-port", str(ui_port), "--worker", worker)
        assert again.returncode == 0 and "already running" in again.stdout

        # a crashed worker is restarted, and the state file follows
        old_worker = state["processes"]["worker"]
        os.kill(old_worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = json.loads((state_dir / dev.STATE_FILE).read_text())
            if state["processes"]["worker"] != old_worker:
                break
            time.sleep(0.5)
        assert state["processes"]["worker"] != old_worker
        pids.append(state["processes"]["worker"])
        assert "restarting" in (state_dir / dev.LOG_FILE).read_text()
    finally:
        down = canaryctl("dev", "down", "--state-dir", state_dir, timeout=120)
    assert down.returncode == 0 and "stopped" in down.stdout, down
    assert [pid for pid in pids if alive(pid)] == []
    assert not (state_dir / dev.STATE_FILE).exists()
    # jobs and cluster objects survive a dev down / dev up
    assert (state_dir / "temporal.db").exists() and (state_dir / "cluster" / "kubeconfig.yaml").exists()
    assert canaryctl("dev", "status", "--state-dir", state_dir).returncode == 1


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_dev_up_runs_the_project_worker(tmp_path: Path) -> None:
    """The real thing: worker.py polls, reaches the cluster through KUBECONFIG, and runs a job."""
    if not (CLUSTER_HOME / "bin" / "kube-apiserver").exists():
        pytest.skip("cluster binaries missing: run scripts/build-cluster.sh")
    state_dir = tmp_path / "dev"
    port, ui_port = free_port(), free_port()
    try:
        up = canaryctl("dev", "up", "--state-dir", state_dir, "--port", str(port),
                       "--ui-port", str(ui_port), "--nodes", "2", "--api-port", str(free_port()), timeout=400)
        assert up.returncode == 0, up.stderr
        state = json.loads((state_dir / dev.STATE_FILE).read_text())
        assert state["worker_script"] == str(dev.PROJECT_ROOT / "worker.py")

        api = k8s_config.new_client_from_config(config_file=state["kubeconfig"])
        try:
            k8s.AppsV1Api(api).create_namespaced_deployment(
                "default", deployment("web", image="registry.local/web:1"))
        finally:
            api.close()
        (tmp_path / "job.yaml").write_text(
            "name: web\nworkload: {name: web}\nsteps: [{setWeight: 50}, {pause: {}}]\n")
        address = ("--address", state["temporal_address"])
        applied = canaryctl(*address, "apply", "-f", tmp_path / "job.yaml")
        assert applied.returncode == 0, applied.stderr

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = canaryctl(*address, "get", "web", "-o", "json")
            if got.returncode == 0 and json.loads(got.stdout)["phase"] == "healthy":
                break
            time.sleep(1)
        assert got.returncode == 0 and json.loads(got.stdout)["phase"] == "healthy", (got.stdout, got.stderr)
        assert json.loads(got.stdout)["stable"]["images"] == {"app": "registry.local/web:1"}
    finally:
        down = canaryctl("dev", "down", "--state-dir", state_dir, timeout=120)
    assert down.returncode == 0, down


def test_recorded_ports_are_reused_while_free(tmp_path: Path) -> None:
    """A persistent cluster comes back on its ports; one taken meanwhile is replaced, not shared."""
    first = Ports()
    first.save(tmp_path / PORTS_FILE)
    assert Ports.reuse(tmp_path / PORTS_FILE) == first
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.apiserver))
        squatter.listen()
        again = Ports.reuse(tmp_path / PORTS_FILE)
    assert again.apiserver != first.apiserver
    assert (again.etcd, again.kwok) == (first.etcd, first.kwok)
    assert len(set(again.all())) == len(again.all())
    assert Ports.reuse(tmp_path / "missing.json") != first


def prometheus_series(address: str, selector: str) -> list[dict[str, str]]:
    """The label sets of the series ``selector`` matches in the Prometheus at ``address``, right now."""
    url = f"{address}/api/v1/query?" + urllib.parse.urlencode({"query": selector})
    with urllib.request.urlopen(url, timeout=5) as response:
        return [item["metric"] for item in json.load(response)["data"]["result"]]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def wait_until(check: Any, what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def ready_pods(api: Any, name: str) -> list[Any]:
    pods = k8s.CoreV1Api(api).list_namespaced_pod("default", label_selector=f"app={name}").items
    return [pod for pod in pods if pod.spec.node_name and pod.spec.node_name.startswith("kwok-node-")
            and any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))]


@pytest.mark.cluster
@pytest.mark.timeout(900)
def test_cluster_survives_down_and_up_until_reset(tmp_path: Path) -> None:
    """A Deployment made before ``dev down`` is there, Ready, after ``dev up``; ``dev reset`` empties it all.

    Also: secrets at rest are their owner's only.
    """
    if not (CLUSTER_HOME / "bin" / "kube-apiserver").exists():
        pytest.skip("cluster binaries missing: run scripts/build-cluster.sh")
    state_dir = tmp_path / "dev"
    flags = ("--state-dir", state_dir, "--port", str(free_port()), "--ui-port", str(free_port()),
             "--api-port", str(free_port()), "--no-worker", "--nodes", "2")
    try:
        up = canaryctl("dev", "up", *flags, timeout=400)
        assert up.returncode == 0, up.stderr
        state = json.loads((state_dir / dev.STATE_FILE).read_text())
        kubeconfig = Path(state["kubeconfig"])
        assert kubeconfig == state_dir / "cluster" / "kubeconfig.yaml"

        # secrets at rest: directories 0700, files 0600
        cluster = state_dir / "cluster"
        for directory in (state_dir, cluster, cluster / "pki", cluster / "etcd"):
            assert mode(directory) == 0o700, directory
        private = [state_dir / dev.API_TOKENS_FILE, state_dir / dev.API_TOKEN_DIGESTS_FILE,
                   state_dir / dev.STATE_FILE, state_dir / dev.PID_FILE,
                   state_dir / "temporal.db", kubeconfig, *sorted((cluster / "pki").glob("*.key"))]
        assert len(private) >= 8
        assert {str(path): oct(mode(path)) for path in private} == {str(path): "0o600" for path in private}
        loose = [p for p in state_dir.rglob("*") if p.is_file() and mode(p) & 0o077]
        assert loose == []

        api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        try:
            k8s.AppsV1Api(api).create_namespaced_deployment(
                "default", deployment("web", image="registry.local/web:1", replicas=3))
            wait_until(lambda: len(ready_pods(api, "web")) == 3, "3 Ready pods of web")
            pods = {pod.metadata.uid for pod in ready_pods(api, "web")}
        finally:
            api.close()
        before = kubeconfig.read_text()

        down = canaryctl("dev", "down", "--state-dir", state_dir, timeout=120)
        assert down.returncode == 0, down
        up = canaryctl("dev", "up", *flags, timeout=400)
        assert up.returncode == 0, up.stderr
        assert json.loads((state_dir / dev.STATE_FILE).read_text())["kubernetes_server"] == state["kubernetes_server"]
        assert kubeconfig.read_text() == before  # the kubeconfig the user exported still works

        api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        try:
            web = k8s.AppsV1Api(api).read_namespaced_deployment("web", "default")
            assert web.spec.template.spec.containers[0].image == "registry.local/web:1"
            assert len(k8s.CoreV1Api(api).list_node().items) == 2
            wait_until(lambda: {pod.metadata.uid for pod in ready_pods(api, "web")} == pods,
                       "web's own pods Ready again after the restart")
            # kwok has taken the nodes up again: a new pod becomes Ready on them
            k8s.AppsV1Api(api).patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 4}})
            wait_until(lambda: (k8s.AppsV1Api(api).read_namespaced_deployment_status("web", "default")
                                .status.available_replicas or 0) == 4, "web scaled to 4 available")
            assert len(ready_pods(api, "web")) == 4
        finally:
            api.close()

        reset = canaryctl("dev", "reset", "--state-dir", state_dir, timeout=120)
        assert reset.returncode == 0, reset
        assert "reset" in reset.stdout
        assert not (state_dir / "cluster").exists() and not (state_dir / "temporal.db").exists()
        assert not (state_dir / "prometheus").exists()
        assert (state_dir / dev.API_TOKENS_FILE).exists()  # tokens handed out stay valid
        assert canaryctl("dev", "status", "--state-dir", state_dir).returncode == 1

        up = canaryctl("dev", "up", *flags, timeout=400)
        assert up.returncode == 0, up.stderr
        api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        try:
            assert [d.metadata.name for d in k8s.AppsV1Api(api).list_namespaced_deployment("default").items] == []
            assert len(k8s.CoreV1Api(api).list_node().items) == 2
        finally:
            api.close()
    finally:
        down = canaryctl("dev", "down", "--state-dir", state_dir, timeout=120)
    assert down.returncode == 0, down
