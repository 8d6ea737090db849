"""What ``canary_bench`` and ``router_bench`` set up the same way: the real environment, the app, the figures.

Both measure against a fresh local Kubernetes cluster (3 nodes), the Temporal dev server and
the worker as its own process (``worker.py``, so its memory can be read from /proc); a sample
app Deployment whose image they change; jobs waited on by phase; figures merged into a JSON
file under ``bench/results`` so that kinds not run this time are kept. Imported as a sibling
module: the benches run as scripts (``python bench/x.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devenv.cluster import LocalCluster  # noqa: E402
from devenv.temporal import TemporalDevServer  # noqa: E402
from starter import client as canary  # noqa: E402
from workflows.models import Phase  # noqa: E402


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def chosen(parser: argparse.ArgumentParser, which: list[str], benches: tuple[str, ...]) -> list[str]:
    """The benches named on the command line, all of them when none is.

    Checked here, not with choices=: argparse checks an empty "*" list against them as one value.
    """
    unknown = [name for name in which if name not in benches]
    if unknown:
        parser.error(f"unknown bench {unknown[0]!r}; choose from {', '.join(benches)}")
    return which or list(benches)


@dataclass
class Environment:
    cluster: LocalCluster
    temporal: Client
    address: str  # the Temporal server's
    worker: subprocess.Popen[bytes]


@contextlib.asynccontextmanager
async def environment() -> AsyncIterator[Environment]:
    """A fresh cluster and Temporal dev server, a client, and the worker running against both; all stopped after."""
    with LocalCluster(nodes=3) as cluster, TemporalDevServer() as server:
        temporal = await Client.connect(server.address, data_converter=pydantic_data_converter)
        env = {**os.environ, "TEMPORAL_ADDRESS": server.address, "KUBECONFIG": str(cluster.kubeconfig)}
        log = open(cluster.run_dir / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            yield Environment(cluster, temporal, server.address, worker)
        finally:
            worker.terminate()
            worker.wait(30)
            log.close()


def create_workload(apps: k8s.AppsV1Api, namespace: str, name: str, replicas: int) -> None:
    """A Deployment ``name`` of ``replicas`` pods, one container ``app`` running ``registry.local/<name>:0``."""
    labels = {"app": name}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": f"registry.local/{name}:0"}]}}},
    })


def set_image(apps: k8s.AppsV1Api, namespace: str, name: str, image: str) -> None:
    """What ``kubectl set image`` does to the workload's container: a release starts."""
    apps.patch_namespaced_deployment(name, namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": image}]}}}})


async def wait_phase(temporal: Client, namespace: str, name: str, phases: set[Phase], timeout: float = 120) -> None:
    """Poll the job's details until its phase is one of ``phases``; give up after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (await canary.details(temporal, namespace, name)).phase not in phases:
        if time.monotonic() > deadline:
            raise SystemExit(f"{namespace}/{name} did not reach {phases}")
        await asyncio.sleep(0.05)


def canary_replicas(apps: k8s.AppsV1Api, namespace: str, name: str) -> int:
    """The pods workload ``name``'s job asks for as its canary (its ReplicaSet's, else its canary Deployment's)."""
    listed = apps.list_namespaced_replica_set(namespace, label_selector="canary-delivery.dev/track=canary").items
    sets = [rs for rs in listed
            if not any(ref.controller for ref in rs.metadata.owner_references or [])
            and any(ref.name == name for ref in rs.metadata.owner_references or [])]
    if sets:
        return sum(int(rs.spec.replicas or 0) for rs in sets)
    try:
        return int(apps.read_namespaced_deployment(f"{name}-canary", namespace).spec.replicas or 0)
    except k8s.exceptions.ApiException as error:
        if error.status == 404:
            return 0
        raise


def write_figures(results: Path, figures: dict[str, Any]) -> None:
    """Merge this run's figures into ``results``: earlier figures of kinds not run this time are kept."""
    known = json.loads(results.read_text()) if results.exists() else {}
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps({**known, **figures}, indent=2) + "\n")
    print(f"figures written to {results.relative_to(ROOT)}")
