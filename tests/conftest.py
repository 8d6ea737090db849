"""Shared fixtures: the local Kubernetes control plane, started once per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from devenv.cluster import LocalCluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """One real control plane (etcd, apiserver, controllers, scheduler, kwok) for the session."""
    with LocalCluster(nodes=3) as local:
        yield local


@pytest.fixture(scope="session")
def kube_api(cluster: LocalCluster) -> Iterator[ApiClient]:
    api = cluster.api_client()
    yield api
    api.close()


@pytest.fixture
def namespace(kube_api: ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)
