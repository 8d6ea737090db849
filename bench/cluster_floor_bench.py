"""What the local cluster alone spends on a fleet's releases: the floor under any controller.

    .venv/bin/python bench/cluster_floor_bench.py [--releases 50] [--rounds 3] [--shape replicasets]

Issue 9 asks 50 simultaneous releases (4 replicas, steps 25 -> 50 -> 100) to take no longer
than Argo Rollouts with its rate limits raised (about 10 s on this machine's two cores). Our
figure is set by CPU: every process of the run shares the two cores. This bench takes every
controller out and drives the release's writes directly from one Python process, so what is
left is what the cluster's own components (API server, etcd, controller-manager, scheduler,
KWOK) must spend for the pods to move. It is the floor under any design; the driver's own CPU
is printed apart, since a controller pays it in some form too.

Shapes (each release in its own thread, readiness seen through one shared watch):

replicasets   Argo Rollouts' shape: stable and canary are bare ReplicaSets. A release creates
              the canary ReplicaSet at 1, and per step scales it up, waits until its pods are
              Ready, then scales stable down; the promotion writes nothing more (the canary's
              ReplicaSet is the new stable). Argo also writes its Rollout's status, which this
              leaves out: a floor under Argo too.
deployments   Our shape without the hand-over: the user's Deployment (paused) and a canary
              Deployment, each step scaling the canary Deployment, waiting, then the paused
              Deployment. Shows what the two Deployment controllers add to the same pod moves.

Figures are printed and merged into ``bench/results/cluster_floor.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet_bench import RAISED, Usage  # noqa: E402
from temporal_rpcs import APISERVER, count_requests, difference  # noqa: E402

from devenv.cluster import LocalCluster  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "cluster_floor.json"
NAMESPACE = "bench-floor"
REPLICAS = 4
WEIGHTS = (25, 50, 100)
SHAPES = ("replicasets", "deployments")
Obj = dict[str, Any]
# Server JSON left unread by the client: its model objects cost more CPU than the requests.
RAW: dict[str, Any] = {"_preload_content": False}


def pod_template(app: str, image: str, track: str) -> Obj:
    return {"metadata": {"labels": {"app": app, "track": track}},
            "spec": {"containers": [{"name": "app", "image": image}]}}


def _drained(response: Any) -> None:
    """Read an unparsed response to its end, so its connection goes back to the pool."""
    response.read()
    response.release_conn()


class ReadyCounts:
    """Ready replicas of every ReplicaSet or Deployment in the namespace, from one watch.

    Each waiting thread sleeps on its own event, woken only by a change of the object it waits
    for: one condition for all would wake every release's thread on every event in the namespace.
    """

    def __init__(self, lister: Callable[..., Any]) -> None:
        self._lister = lister
        self._ready: dict[str, int] = {}
        self._waiters: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReadyCounts:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(self._lister, NAMESPACE, timeout_seconds=30, deserialize=False):
                    meta, status = event["object"]["metadata"], event["object"].get("status") or {}
                    with self._lock:
                        self._ready[meta["name"]] = int(status.get("readyReplicas") or 0)
                        waiter = self._waiters.get(meta["name"])
                    if waiter is not None:
                        waiter.set()
                    if self._stop.is_set():
                        return
            except Exception:  # the cluster stopping under the watch, or a dropped connection
                if not self._stop.is_set():
                    time.sleep(0.2)

    def wait(self, name: str, replicas: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        changed = threading.Event()
        with self._lock:
            self._waiters[name] = changed
        try:
            while True:
                with self._lock:
                    ready = self._ready.get(name, 0)
                    changed.clear()
                if ready >= replicas:
                    return
                if not changed.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{name}: {ready} of {replicas} Ready")
        finally:
            with self._lock:
                self._waiters.pop(name, None)


class Floor:
    """One cluster, ``jobs`` workloads of one shape, and their releases."""

    def __init__(self, cluster: LocalCluster, shape: str, jobs: int) -> None:
        self.cluster, self.shape, self.jobs = cluster, shape, jobs
        self.api = cluster.api_client()
        self.apps = k8s.AppsV1Api(self.api)
        self.rs = shape == "replicasets"
        lister = self.apps.list_namespaced_replica_set if self.rs else self.apps.list_namespaced_deployment
        self.ready = ReadyCounts(lister).start()
        self.version: dict[str, int] = {}

    def _names(self) -> list[str]:
        return [f"app{i:04d}" for i in range(self.jobs)]

    def _create(self, name: str, track: str, replicas: int, image: str) -> None:
        labels = {"app": name.split("-")[0], "track": track}
        body = {"metadata": {"name": name, "labels": labels},
                "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                         "template": pod_template(labels["app"], image, track)}}
        if self.rs:
            _drained(self.apps.create_namespaced_replica_set(NAMESPACE, body, **RAW))
        else:
            _drained(self.apps.create_namespaced_deployment(NAMESPACE, body, **RAW))

    def _scale(self, name: str, replicas: int) -> None:
        patch = {"spec": {"replicas": replicas}}
        if self.rs:
            _drained(self.apps.patch_namespaced_replica_set(name, NAMESPACE, patch, **RAW))
        else:
            _drained(self.apps.patch_namespaced_deployment(name, NAMESPACE, patch, **RAW))

    def _delete(self, name: str) -> None:
        if self.rs:
            _drained(self.apps.delete_namespaced_replica_set(name, NAMESPACE, **RAW))
        else:
            _drained(self.apps.delete_namespaced_deployment(name, NAMESPACE, **RAW))

    def setup(self) -> None:
        k8s.CoreV1Api(self.api).create_namespace({"metadata": {"name": NAMESPACE}})
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda n: self._create(f"{n}-v0", "stable", REPLICAS, "app:v0"), self._names()))
            list(pool.map(lambda n: self.ready.wait(f"{n}-v0", REPLICAS), self._names()))
        self.version = dict.fromkeys(self._names(), 0)

    def release(self, app: str) -> float:
        """One release of ``app``; seconds it took."""
        started = time.monotonic()
        old, new = self.version[app], self.version[app] + 1
        stable, canary = f"{app}-v{old}", f"{app}-v{new}"
        if not self.rs:
            _drained(self.apps.patch_namespaced_deployment(stable, NAMESPACE, {"spec": {"paused": True}}, **RAW))
        for index, weight in enumerate(WEIGHTS):
            size = REPLICAS * weight // 100
            if index == 0:
                self._create(canary, f"r{new}", size, f"app:v{new}")
            else:
                self._scale(canary, size)
            self.ready.wait(canary, size)
            self._scale(stable, REPLICAS - size)
        self._delete(stable)
        self.version[app] = new
        return time.monotonic() - started

    def api_counts(self) -> Counter[str]:
        response = self.api.call_api("GET", f"{self.api.configuration.host}/metrics", _request_timeout=10)
        response.read()
        return count_requests(response.data.decode(), APISERVER)

    def round(self, releases: int) -> dict[str, Any]:
        apps = self._names()[:releases]
        before = self.api_counts()
        driver_before = cpu_seconds_self()
        usage = Usage(self.cluster.pids)
        with ThreadPoolExecutor(releases) as pool:
            times = sorted(pool.map(self.release, apps))
        wall, cpu = usage.cpu()
        driver = cpu_seconds_self() - driver_before
        calls = difference(before, self.api_counts(), top=20)
        return {"shape": self.shape, "releases": releases, "wall_s": round(wall, 1),
                "release_p50_s": round(times[len(times) // 2], 1), "cluster_cpu_s": cpu,
                "cluster_cpu_total_s": round(sum(cpu.values()), 1), "driver_cpu_s": round(driver, 1),
                "apiserver_requests": calls}


def cpu_seconds_self() -> float:
    """This process's own CPU seconds (its threads; not the cluster it started, whose CPU is counted apart)."""
    return time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", choices=SHAPES, action="append")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    for shape in args.shape or list(SHAPES):
        with LocalCluster(nodes=3, components=RAISED) as cluster:
            floor = Floor(cluster, shape, args.jobs)
            floor.setup()
            for number in range(1, args.rounds + 1):
                result = floor.round(args.releases)
                cpu = ", ".join(f"{k} {v:.1f}" for k, v in result["cluster_cpu_s"].items())
                print(f"{shape} round {number}: {args.releases} releases in {result['wall_s']} s "
                      f"(p50 {result['release_p50_s']} s); cluster {result['cluster_cpu_total_s']} CPU-s "
                      f"({cpu}); driver {result['driver_cpu_s']} CPU-s", flush=True)
                calls = ", ".join(f"{k} {v}" for k, v in result["apiserver_requests"].items())
                print(f"    API server requests: {calls}", flush=True)
                key = f"{args.label + ': ' if args.label else ''}{shape} (round {number})"
                figures[key] = {"when": datetime.now(UTC).isoformat(timespec="seconds"), **result}
            floor.ready.stop()
    known = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**known, **figures}, indent=2) + "\n")
    print(f"figures written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
