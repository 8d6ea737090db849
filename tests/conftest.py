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


def _load_hypothesis_profile() -> None:
    """Register the Hypothesis profiles and load the one ``HYPOTHESIS_PROFILE`` names (default ``ci``).

    ``ci`` keeps the release-safety state machine (tests/workflow/test_release_properties.py)
    to about three minutes on two cores; ``thorough`` is for local bug hunts. Workflow rules
    take real time, so there is no per-example deadline, and ``print_blob`` lets a failure
    be replayed exactly with ``@reproduce_failure``.
    """
    import os

    from hypothesis import settings

    # CI: the same examples on every run (derandomized), sized to a few minutes on 2 cores; the
    # thorough profile explores afresh each time, for bug hunts.
    settings.register_profile("ci", max_examples=15, stateful_step_count=12, deadline=None, print_blob=True,
                              derandomize=True, database=None)
    settings.register_profile("thorough", max_examples=400, stateful_step_count=40, deadline=None,
                              print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_load_hypothesis_profile()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the time-skipping workflow tests first, the property test last.

    Each has a time-skipping server of its own, yet run after the end-to-end tests (which
    start and stop many servers, workers and clusters on the same event loop) their `sleep`
    calls were seen to stop skipping time. First, they run as they do on their own.
    """
    def order(item: pytest.Item) -> int:
        path = str(item.path).replace("\\", "/")
        if "test_release_properties" in path:
            return 2  # last: the longest, and the one that starts and kills the most
        return 0 if "tests/workflow/" in path else 1

    items.sort(key=order)
