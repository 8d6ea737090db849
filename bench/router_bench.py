"""Benchmark: ``continue`` until the router's object holds the next weight; prints figures, asserts nothing.

    .venv/bin/python bench/router_bench.py [fixed] [sized] [--trials 24]

Everything is real: a fresh local Kubernetes cluster (serving Istio's CRDs), the Temporal dev
server, and the worker as its own process (``worker.py``), as ``bench/canary_bench.py`` sets
them up. The job routes through an Istio VirtualService; a watch on that object (started
before the first trial) stamps each change as the API server announces it, so a sample is the
time from sending ``continue`` (the client reads the gate first, as ``canaryctl`` does) until
the watch sees the VirtualService with the next step's canary weight.

fixed: ``setCanaryScale: {replicas: 2}`` first, then ``setWeight`` 1, 2, 3 ... with a pause
    after each: every ``continue`` is one weight write and nothing else (the pure router path).
sized: the default sizing on a Deployment of 10 (weights 4, 8, ... 96: 23 continues): a step
    that needs another canary pod waits for it to be Ready before the weight moves.

The machine's load average is printed before and after each bench and kept with its figures
(the machine may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from typing import Any

# bench_env first: it puts the repository on sys.path.
from bench_env import ROOT, chosen, create_workload, environment, percentile, set_image, wait_phase, write_figures
from kubernetes import client as k8s
from kubernetes import watch
from temporalio.client import Client

from devenv.cluster import LocalCluster
from starter import client as canary
from workflows import names
from workflows.models import OperationRequest, Phase
from workflows.spec import JobSpec

RESULTS = ROOT / "bench" / "results" / "router.json"
FIGURES: dict[str, Any] = {}
GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"
TARGET_MS = 200


def report(name: str, samples: list[float], load_before: list[float]) -> None:
    p50, p95 = statistics.median(samples) * 1000, percentile(samples, 95) * 1000
    print(f"{name}: n={len(samples)} p50={p50:.0f} ms p95={p95:.0f} ms min={min(samples) * 1000:.0f} ms "
          f"max={max(samples) * 1000:.0f} ms (target p50/p95 < {TARGET_MS} ms)", flush=True)
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"  load average now: {' '.join(map(str, load))} on {os.cpu_count()} cores", flush=True)
    FIGURES[name] = {"n": len(samples), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                     "min_ms": round(min(samples) * 1000, 1), "max_ms": round(max(samples) * 1000, 1),
                     "load_average_before": load_before, "load_average_after": load, "cores": os.cpu_count()}


class WeightWatch:
    """Every canary weight the VirtualService held, stamped when the API server's watch delivered it."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.namespace, self.name = namespace, name
        self.seen: list[tuple[float, int]] = []
        self._changed = threading.Condition()
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                           field_selector=f"metadata.name={name}")
        self._version = listed["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, name="vs-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:
            if not self._stopped.is_set():
                raise  # a watch that dies mid-bench must say so; after stop() it is just the cluster going away

    def _follow(self) -> None:
        for event in self._watch.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                        PLURAL, field_selector=f"metadata.name={self.name}",
                                        resource_version=self._version, timeout_seconds=3600):
            at = time.monotonic()
            route = event["object"]["spec"]["http"][0]["route"]
            weight = next(int(d.get("weight", 0)) for d in route if d["destination"]["host"] == "web-canary")
            with self._changed:
                self.seen.append((at, weight))
                self._changed.notify_all()

    def first(self, weight: int, after: float, timeout: float = 60) -> float:
        """When the object first held ``weight`` after ``after`` (monotonic)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for at, held in self.seen:
                    if at >= after and held == weight:
                        return at
                if not self._changed.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() > deadline:
                    raise SystemExit(f"the VirtualService never held canary weight {weight}")

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()


class Bench:
    def __init__(self, cluster: LocalCluster, temporal: Client) -> None:
        self.cluster, self.temporal = cluster, temporal
        self.api = cluster.api_client()
        self.apps, self.core = k8s.AppsV1Api(self.api), k8s.CoreV1Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)

    def setup(self, namespace: str, replicas: int) -> None:
        """A Deployment and its Service, and the user's VirtualService at 100 % stable."""
        self.core.create_namespace({"metadata": {"name": namespace}})
        labels = {"app": "web"}
        create_workload(self.apps, namespace, "web", replicas)
        self.core.create_namespaced_service(namespace, {"metadata": {"name": "web"}, "spec": {
            "selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}})
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService", "metadata": {"name": "web"},
            "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
                {"destination": {"host": "web-stable"}, "weight": 100},
                {"destination": {"host": "web-canary"}, "weight": 0}]}]}})

    async def details_phase(self, namespace: str, phases: set[Phase], timeout: float = 120) -> None:
        await wait_phase(self.temporal, namespace, "web", phases, timeout)

    async def run(self, name: str, namespace: str, replicas: int, first: list[dict[str, Any]],
                  weights: list[int]) -> None:
        load_before = [round(x, 2) for x in os.getloadavg()]
        self.setup(namespace, replicas)
        steps = [*first]
        for weight in weights:
            steps += [{"setWeight": weight}, {"pause": {}}]
        spec = JobSpec.model_validate({
            "name": "web", "namespace": namespace, "workload": {"name": "web"}, "steps": steps,
            "progressDeadline": "2m",
            "traffic": {"routing": "istio", "stableService": "web-stable", "canaryService": "web-canary",
                        "istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}})
        await canary.apply_job(self.temporal, spec)
        await self.details_phase(namespace, {Phase.HEALTHY})
        watcher = WeightWatch(self.api, namespace, "web")
        try:
            set_image(self.apps, namespace, "web", "registry.local/web:1")
            await asyncio.to_thread(watcher.first, weights[0], 0.0)
            await self.details_phase(namespace, {Phase.PAUSED})
            samples = []
            for weight in weights[1:]:
                started = time.monotonic()
                await canary.operate(self.temporal, namespace, "web", names.CONTINUE, OperationRequest(actor="bench"))
                seen = await asyncio.to_thread(watcher.first, weight, started)
                samples.append(seen - started)
                await self.details_phase(namespace, {Phase.PAUSED})
        finally:
            watcher.stop()
        report(name, samples, load_before)
        await canary.operate(self.temporal, namespace, "web", names.TERMINATE, OperationRequest(actor="bench"))


BENCHES = ("fixed", "sized")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", help="fixed and/or sized (default: both)")
    parser.add_argument("--trials", type=int, default=24, help="continues measured in `fixed` (sized: 23)")
    args = parser.parse_args()
    args.which = chosen(parser, args.which, BENCHES)

    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)} on {os.cpu_count()} cores", flush=True)
    async with environment() as env:
        bench = Bench(env.cluster, env.temporal)
        if "fixed" in args.which:
            await bench.run("continue -> VirtualService weight (canary scale fixed)", "bench-router-fixed", 4,
                            [{"setCanaryScale": {"replicas": 2}}], list(range(1, args.trials + 2)))
        if "sized" in args.which:
            await bench.run("continue -> VirtualService weight (canary sized by weight, 10 replicas)",
                            "bench-router-sized", 10, [], list(range(4, 100, 4)))
    write_figures(RESULTS, FIGURES)


if __name__ == "__main__":
    asyncio.run(main())
