"""Benchmarks of the canary delivery path; prints its figures, asserts nothing.

    .venv/bin/python bench/canary_bench.py [detection] [operation] [fleet] [--releases 20] [--jobs 50]

Everything is real: a fresh local Kubernetes cluster, the Temporal dev server, and the
worker as its own process (``worker.py``), so its memory can be read from /proc.

(a) detection: a Deployment edit until the canary (its ReplicaSet, or a canary Deployment)
    asks for pods (its ``spec.replicas`` > 0), over N releases; p50 and p99. Each release is
    terminated before the next edit, so every sample starts from a quiet job.
(b) operation: ``continue`` (the update call) until the next weight's canary replicas are
    visible on the cluster; p50 and p99.
(c) fleet: J jobs released at once, 3 setWeight steps and no pauses each: wall time from
    the edits until every job is promoted, and the worker's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench_env import (  # first: it puts the repository on sys.path; fleet_bench takes percentile from here
    ROOT,
    canary_replicas,
    chosen,
    create_workload,
    environment,
    percentile,
    set_image,
    wait_phase,
    write_figures,
)
from kubernetes import client as k8s
from temporalio.client import Client

from devenv.cluster import LocalCluster
from starter import client as canary
from workflows import names
from workflows.models import OperationRequest, Phase
from workflows.spec import JobSpec

RESULTS = ROOT / "bench" / "results" / "canary.json"
FIGURES: dict[str, dict[str, float]] = {}  # what this run measured, written to RESULTS at the end


def report(name: str, samples: list[float]) -> None:
    print(f"{name}: n={len(samples)} p50={statistics.median(samples) * 1000:.0f} ms "
          f"p99={percentile(samples, 99) * 1000:.0f} ms min={min(samples) * 1000:.0f} ms "
          f"max={max(samples) * 1000:.0f} ms", flush=True)
    FIGURES[name] = {"n": len(samples), "p50_ms": round(statistics.median(samples) * 1000, 1),
                     "p99_ms": round(percentile(samples, 99) * 1000, 1), "min_ms": round(min(samples) * 1000, 1),
                     "max_ms": round(max(samples) * 1000, 1)}


class Bench:
    def __init__(self, cluster: LocalCluster, temporal: Client, address: str) -> None:
        self.cluster, self.temporal, self.address = cluster, temporal, address
        self.api = cluster.api_client()
        self.apps, self.core = k8s.AppsV1Api(self.api), k8s.CoreV1Api(self.api)

    def namespace(self, name: str) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def workload(self, namespace: str, name: str, replicas: int) -> None:
        create_workload(self.apps, namespace, name, replicas)

    def set_image(self, namespace: str, name: str, image: str) -> None:
        set_image(self.apps, namespace, name, image)

    def canary_replicas(self, namespace: str, name: str) -> int:
        return canary_replicas(self.apps, namespace, name)

    async def wait_phase(self, namespace: str, name: str, phases: set[Phase], timeout: float = 120) -> None:
        await wait_phase(self.temporal, namespace, name, phases, timeout)

    def wait_canary(self, namespace: str, name: str, predicate: Any, timeout: float = 60) -> float:
        """Poll the API server tightly; return the monotonic time the predicate first held."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.canary_replicas(namespace, name)):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise SystemExit(f"{namespace}/{name}: canary never matched")
            time.sleep(0.005)

    async def apply(self, namespace: str, name: str, steps: list[dict[str, Any]]) -> None:
        spec = JobSpec.model_validate({"name": name, "namespace": namespace, "workload": {"name": name},
                                       "steps": steps, "progressDeadline": "2m"})
        await canary.apply_job(self.temporal, spec)
        await self.wait_phase(namespace, name, {Phase.HEALTHY})

    async def detection(self, releases: int) -> None:
        ns = self.namespace("bench-detect")
        self.workload(ns, "web", 4)
        await self.apply(ns, "web", [{"setWeight": 25}, {"pause": {}}])
        samples = []
        for n in range(1, releases + 1):
            started = time.monotonic()
            self.set_image(ns, "web", f"registry.local/web:{n}")
            seen = await asyncio.to_thread(self.wait_canary, ns, "web", lambda r: r > 0)
            samples.append(seen - started)
            await self.wait_phase(ns, "web", {Phase.PAUSED})
            await canary.operate(self.temporal, ns, "web", names.TERMINATE, OperationRequest(actor="bench"))
            await self.wait_phase(ns, "web", {Phase.TERMINATED})
            await asyncio.to_thread(self.wait_canary, ns, "web", lambda r: r == 0)
        report("(a) detection latency, edit -> canary pods requested", samples)

    async def operation(self, samples_wanted: int) -> None:
        ns = self.namespace("bench-operate")
        self.workload(ns, "web", 10)
        weights = list(range(5, 100, 5))  # 19 gates per release
        steps: list[dict[str, Any]] = []
        for weight in weights:
            steps += [{"setWeight": weight}, {"pause": {}}]
        await self.apply(ns, "web", steps)
        samples: list[float] = []
        calls: list[float] = []  # the continue call alone: find the job, read its gate, the update's answer
        release = 0
        while len(samples) < samples_wanted:
            release += 1
            self.set_image(ns, "web", f"registry.local/web:op{release}")
            await self.wait_phase(ns, "web", {Phase.PAUSED})
            for weight in weights[1:]:
                if len(samples) >= samples_wanted:
                    break
                expected = -(-10 * weight // 100)
                before = self.canary_replicas(ns, "web")
                started = time.monotonic()
                await canary.operate(self.temporal, ns, "web", names.CONTINUE, OperationRequest(actor="bench"))
                answered = time.monotonic()
                if expected != before:
                    seen = await asyncio.to_thread(self.wait_canary, ns, "web", lambda r, e=expected: r == e)
                    samples.append(seen - started)
                    calls.append(answered - started)
                await self.wait_phase(ns, "web", {Phase.PAUSED})
            await canary.operate(self.temporal, ns, "web", names.TERMINATE, OperationRequest(actor="bench"))
            await self.wait_phase(ns, "web", {Phase.TERMINATED})
        report("(b) operation latency, continue -> next weight on the cluster", samples)
        report("(b) of which the continue call until answered", calls)

    async def fleet(self, jobs: int, worker_pid: int) -> None:
        ns = self.namespace("bench-fleet")
        names_ = [f"app{i:02d}" for i in range(jobs)]
        for name in names_:
            self.workload(ns, name, 2)
        await asyncio.gather(*(self.apply(ns, name, [{"setWeight": 33}, {"setWeight": 66}, {"setWeight": 100}])
                               for name in names_))
        rss_before = vm_kib(worker_pid, "VmRSS")
        started = time.monotonic()
        for name in names_:
            self.set_image(ns, name, f"registry.local/{name}:1")

        async def promoted(name: str) -> None:
            deadline = time.monotonic() + 600
            while True:
                details = await canary.details(self.temporal, ns, name)
                if details.phase == Phase.HEALTHY and details.stable is not None and details.stable.revision == 2:
                    return
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} was not promoted")
                await asyncio.sleep(0.5)

        await asyncio.gather(*(promoted(name) for name in names_))
        wall = time.monotonic() - started
        peak = vm_kib(worker_pid, "VmHWM")
        print(f"(c) {jobs} jobs x 3 steps released at once: wall {wall:.1f} s; worker RSS before "
              f"{rss_before / 1024:.0f} MiB, peak (VmHWM) {peak / 1024:.0f} MiB", flush=True)
        FIGURES["(c) fleet"] = {"jobs": jobs, "wall_s": round(wall, 1),
                                "worker_rss_before_mib": round(rss_before / 1024),
                                "worker_peak_mib": round(peak / 1024)}


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


BENCHES = ("detection", "operation", "fleet")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", help="detection, operation and/or fleet (default: all three)")
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    args.which = chosen(parser, args.which, BENCHES)

    async with environment() as env:
        bench = Bench(env.cluster, env.temporal, env.address)
        if "detection" in args.which:
            await bench.detection(args.releases)
        if "operation" in args.which:
            await bench.operation(args.samples)
        if "fleet" in args.which:
            await bench.fleet(args.jobs, env.worker.pid)
    write_figures(RESULTS, FIGURES)


if __name__ == "__main__":
    asyncio.run(main())
