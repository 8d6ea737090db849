"""The worker's Kubernetes client keeps one connection per activity thread."""

from __future__ import annotations

from pathlib import Path

import yaml

from worker import kubernetes_client


def _kubeconfig(path: Path) -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "me"}}],
    }))
    return str(path)


def test_the_connection_pool_is_as_large_as_the_activity_threads(tmp_path: Path) -> None:
    # With the client's default of 10, 200 activity threads discarded connections by the hundred.
    api = kubernetes_client(_kubeconfig(tmp_path / "kubeconfig"), pool_size=200)
    try:
        assert api.configuration.host == "https://127.0.0.1:6443"
        assert api.rest_client.pool_manager.connection_pool_kw["maxsize"] == 200
    finally:
        api.close()
