"""Component settings reach the control plane's processes, and the defaults change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client

from devenv.cluster import LocalCluster
from devenv.components import ComponentSettings
from tests.kube_helpers import deployment, eventually


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _flag(args: list[str], name: str) -> str | None:
    """The value of the last ``--name=value`` in ``args`` (the one a component applies)."""
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{name}=")]
    return values[-1] if values else None


def test_defaults_pass_what_the_cluster_always_passed(tmp_path: Path) -> None:
    settings = ComponentSettings()
    assert settings.apiserver_args() == ["--max-requests-inflight=0", "--max-mutating-requests-inflight=0"]
    assert settings.controller_manager_args() == []
    config = settings.scheduler_config(tmp_path / "kubeconfig.yaml")
    assert config["clientConnection"] == {"kubeconfig": str(tmp_path / "kubeconfig.yaml")}
    assert config["leaderElection"] == {"leaderElect": False}
    assert "(default)" in settings.describe() and "unlimited" in settings.describe()


@pytest.mark.parametrize("bad", [
    {"controller_manager_qps": 0}, {"scheduler_burst": 0}, {"max_requests_inflight": -1},
    {"controller_manager_flags": ("kube-api-qps=5",)},
])
def test_impossible_settings_are_refused_before_anything_starts(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ComponentSettings(**bad)  # type: ignore[arg-type]


@pytest.mark.cluster
def test_raised_settings_reach_every_component_and_the_cluster_works() -> None:
    settings = ComponentSettings(
        controller_manager_qps=321.5, controller_manager_burst=654, concurrent_deployment_syncs=17,
        concurrent_replicaset_syncs=19, scheduler_qps=432, scheduler_burst=876,
        max_requests_inflight=777, max_mutating_requests_inflight=333,
        controller_manager_flags=("--concurrent-service-syncs=3",),
    )
    with LocalCluster(nodes=1, components=settings) as cluster:
        apiserver = _cmdline(cluster.pids["kube-apiserver"])
        assert _flag(apiserver, "max-requests-inflight") == "777"
        assert _flag(apiserver, "max-mutating-requests-inflight") == "333"
        manager = _cmdline(cluster.pids["kube-controller-manager"])
        assert _flag(manager, "kube-api-qps") == "321.5"
        assert _flag(manager, "kube-api-burst") == "654"
        assert _flag(manager, "concurrent-deployment-syncs") == "17"
        assert _flag(manager, "concurrent-replicaset-syncs") == "19"
        assert _flag(manager, "concurrent-service-syncs") == "3"
        scheduler = _cmdline(cluster.pids["kube-scheduler"])
        config_path = _flag(scheduler, "config")
        assert config_path is not None
        config = yaml.safe_load(Path(config_path).read_text())
        assert config["clientConnection"]["qps"] == 432
        assert config["clientConnection"]["burst"] == 876
        # The scheduler really runs on that file: it has its kubeconfig, so it places pods.
        api = cluster.api_client()
        try:
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            apps.create_namespaced_deployment("default", deployment("placed", image="registry.local/p:1",
                                                                    replicas=2))
            eventually(lambda: all(p.spec.node_name for p in core.list_namespaced_pod(
                "default", label_selector="app=placed").items) and len(core.list_namespaced_pod(
                "default", label_selector="app=placed").items) == 2, what="2 scheduled pods")
        finally:
            api.close()
