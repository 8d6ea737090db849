"""Promotion with pods that take a while to become Ready: the canary's pods handed over, or new ones.

    .venv/bin/python bench/promotion_bench.py [--trials 5] [--ready-delay 3s]

Everything is real: a fresh local cluster, the Temporal dev server and the worker process. Two
jobs, each on its own Deployment of 4 replicas, steps ``setWeight: 50`` then a pause; every pod
of the workloads carries the local cluster's ready-delay annotation, so it is Ready that long
after it starts (as a real application warms up). Each trial releases a new image, waits at the
pause and sends ``promote``; the figure is the time from ``promote`` until the job says the new
revision is stable, and how many pods were created meanwhile.

``handed over`` trials promote as the product does without a router or analysis: the canary
ReplicaSet becomes the Deployment's own (activities/canary_set.py). ``grown`` trials run on a
job that also has an analysis template (never run: no step refers to it), so its promotion grows
the Deployment's own pods, as every job with analysis does (a mesh names a pod's workload for
life when the pod is created). Trials alternate. Prints its figures, asserts nothing; writes
them to bench/results/promotion.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench_env import ROOT, canary_replicas, create_workload, environment, wait_phase, write_figures
from kubernetes import client as k8s
from temporalio.client import Client

from activities.templates import TRACK_LABEL
from devenv.cluster import READY_DELAY_ANNOTATION
from starter import client as canary
from workflows import names
from workflows.models import OperationRequest, Phase
from workflows.spec import JobSpec

RESULTS = ROOT / "bench" / "results" / "promotion.json"
NAMESPACE, REPLICAS = "bench-promote", 4
KINDS = {"web": "handed over", "api": "grown"}  # workload -> how its job promotes
# Present, never run: any analysis template makes a promotion grow new pods.
UNUSED_TEMPLATE = {"name": "success-rate", "metrics": [{
    "name": "success-rate", "interval": "1m", "successCondition": "result >= 0.99",
    "provider": {"prometheus": {"address": "http://127.0.0.1:1", "query": 'up{workload="{{workload}}"}'}}}]}


def pod_uids(core: k8s.CoreV1Api, name: str) -> set[str]:
    return {p.metadata.uid for p in core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}").items}


def ready_canary_pods(core: k8s.CoreV1Api, name: str) -> list[k8s.V1Pod]:
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name},{TRACK_LABEL}=canary").items
    return [p for p in pods if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


async def trial(temporal: Client, apps: k8s.AppsV1Api, core: k8s.CoreV1Api, n: int, name: str,
                delay: str) -> tuple[float, int]:
    apps.patch_namespaced_deployment(name, NAMESPACE, {"spec": {"template": {
        "metadata": {"annotations": {READY_DELAY_ANNOTATION: delay}},
        "spec": {"containers": [{"name": "app", "image": f"registry.local/{name}:{n}"}]}}}})
    await wait_phase(temporal, NAMESPACE, name, {Phase.PAUSED})
    while canary_replicas(apps, NAMESPACE, name) < REPLICAS // 2 or len(ready_canary_pods(core, name)) < REPLICAS // 2:
        await asyncio.sleep(0.1)
    before = pod_uids(core, name)
    revision = (await canary.details(temporal, NAMESPACE, name)).canary
    started = time.monotonic()
    await canary.operate(temporal, NAMESPACE, name, names.PROMOTE, OperationRequest(actor="bench"))
    while True:
        details = await canary.details(temporal, NAMESPACE, name)
        if (details.phase == Phase.HEALTHY and details.stable is not None and revision is not None
                and details.stable.revision == revision.revision):
            break
        if details.phase not in (Phase.PAUSED, Phase.PROMOTING, Phase.PROGRESSING):
            raise SystemExit(f"trial {n}: the job is {details.phase.value}: {details.last_error}")
        await asyncio.sleep(0.02)
    took = time.monotonic() - started
    made = len(pod_uids(core, name) - before)
    stray = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name},{TRACK_LABEL}").items
    print(f"  trial {n} ({KINDS[name]}): {took:.2f} s, {made} pods created, {len(stray)} canary pods left", flush=True)
    return took, made


async def main(trials: int, delay: str) -> None:
    async with environment() as env:
        api = env.cluster.api_client()
        apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        for name in KINDS:
            create_workload(apps, NAMESPACE, name, REPLICAS)
            rules: dict[str, object] = {"steps": [{"setWeight": 50}, {"pause": {}}], "progressDeadline": "2m"}
            if KINDS[name] == "grown":
                rules["analysis"] = {"templates": [UNUSED_TEMPLATE]}
            spec = JobSpec.model_validate({"name": name, "namespace": NAMESPACE, "workload": {"name": name}, **rules})
            await canary.apply_job(env.temporal, spec)
            await wait_phase(env.temporal, NAMESPACE, name, {Phase.HEALTHY})
        results: dict[str, list[tuple[float, int]]] = {kind: [] for kind in KINDS.values()}
        n = 0
        for _ in range(trials):
            for name, kind in KINDS.items():  # alternating, so drift hits both alike
                n += 1
                results[kind].append(await trial(env.temporal, apps, core, n, name, delay))
        figures = {}
        for kind, samples in results.items():
            times = [t for t, _ in samples]
            figures[kind] = {"trials": len(samples), "ready_delay": delay, "p50_s": round(statistics.median(times), 2),
                             "max_s": round(max(times), 2), "pods_created": sorted({m for _, m in samples})}
            print(f"promote -> new revision stable, {kind}: p50 {statistics.median(times):.2f} s, "
                  f"max {max(times):.2f} s; pods created per promotion {sorted({m for _, m in samples})}",
                  flush=True)
        write_figures(RESULTS, figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--ready-delay", default="3s")
    args = parser.parse_args()
    asyncio.run(main(args.trials, args.ready_delay))
