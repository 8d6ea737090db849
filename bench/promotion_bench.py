"""Promotion with pods that take a while to become Ready: the canary's pods handed over, or new ones.

    .venv/bin/python bench/promotion_bench.py [--trials 5] [--ready-delay 3s]

Everything is real: a fresh local cluster, the Temporal dev server and the worker process. One
job, 4 replicas, steps ``setWeight: 50`` then a pause; every pod of the workload carries the
local cluster's ready-delay annotation, so it is Ready that long after it starts (as a real
application warms up). Each trial releases a new image, waits at the pause and sends
``promote``; the figure is the time from ``promote`` until the job says the new revision is
stable, and how many pods were created meanwhile.

``handed over`` trials promote as the product does without a router (activities/adoption.py).
``grown`` trials first take the job's label off the canary's pod template, as a canary set up by
older code lacks it, so the same promotion grows the Deployment's own pods instead (that costs
the canary one rollout before ``promote``, which is not timed). Prints its figures, asserts
nothing; writes them to bench/results/promotion.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench_env import ROOT, create_workload, environment, wait_phase, write_figures
from kubernetes import client as k8s
from temporalio.client import Client

from activities.templates import JOB_KEY, TRACK_LABEL
from devenv.cluster import READY_DELAY_ANNOTATION
from starter import client as canary
from workflows import names
from workflows.models import OperationRequest, Phase
from workflows.spec import JobSpec

RESULTS = ROOT / "bench" / "results" / "promotion.json"
NAMESPACE, NAME, REPLICAS = "bench-promote", "web", 4


def pod_uids(core: k8s.CoreV1Api) -> set[str]:
    return {p.metadata.uid for p in core.list_namespaced_pod(NAMESPACE, label_selector=f"app={NAME}").items}


def canary_ready(apps: k8s.AppsV1Api, without_job_label: bool) -> bool:
    try:
        d = apps.read_namespaced_deployment(f"{NAME}-canary", NAMESPACE)
    except k8s.exceptions.ApiException:
        return False
    labels = d.spec.template.metadata.labels or {}
    return ((d.status.available_replicas or 0) >= (d.spec.replicas or 1) == (d.status.updated_replicas or 0)
            and (JOB_KEY not in labels) == without_job_label)


async def trial(temporal: Client, apps: k8s.AppsV1Api, core: k8s.CoreV1Api, n: int, grown: bool,
                delay: str) -> tuple[float, int]:
    apps.patch_namespaced_deployment(NAME, NAMESPACE, {"spec": {"template": {
        "metadata": {"annotations": {READY_DELAY_ANNOTATION: delay}},
        "spec": {"containers": [{"name": "app", "image": f"registry.local/{NAME}:{n}"}]}}}})
    await wait_phase(temporal, NAMESPACE, NAME, {Phase.PAUSED})
    if grown:
        apps.patch_namespaced_deployment(f"{NAME}-canary", NAMESPACE, [
            {"op": "remove", "path": "/spec/template/metadata/labels/" + JOB_KEY.replace("/", "~1")}])
    while not canary_ready(apps, grown):
        await asyncio.sleep(0.1)
    before = pod_uids(core)
    started = time.monotonic()
    await canary.operate(temporal, NAMESPACE, NAME, names.PROMOTE, OperationRequest(actor="bench"))
    while True:
        details = await canary.details(temporal, NAMESPACE, NAME)
        if details.phase == Phase.HEALTHY and details.stable is not None and details.stable.revision == n + 1:
            break
        if details.phase not in (Phase.PAUSED, Phase.PROMOTING, Phase.PROGRESSING):
            raise SystemExit(f"trial {n}: the job is {details.phase.value}: {details.last_error}")
        await asyncio.sleep(0.02)
    took = time.monotonic() - started
    made = len(pod_uids(core) - before)
    stray = core.list_namespaced_pod(NAMESPACE, label_selector=TRACK_LABEL).items
    print(f"  trial {n} ({'grown' if grown else 'handed over'}): {took:.2f} s, {made} pods created, "
          f"{len(stray)} canary pods left", flush=True)
    return took, made


async def main(trials: int, delay: str) -> None:
    async with environment() as env:
        api = env.cluster.api_client()
        apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        create_workload(apps, NAMESPACE, NAME, REPLICAS)
        spec = JobSpec.model_validate({"name": NAME, "namespace": NAMESPACE, "workload": {"name": NAME},
                                       "steps": [{"setWeight": 50}, {"pause": {}}], "progressDeadline": "2m"})
        await canary.apply_job(env.temporal, spec)
        await wait_phase(env.temporal, NAMESPACE, NAME, {Phase.HEALTHY})
        results: dict[str, list[tuple[float, int]]] = {"handed over": [], "grown": []}
        n = 0
        for _ in range(trials):
            for kind in ("handed over", "grown"):  # alternating, so drift hits both alike
                n += 1
                results[kind].append(await trial(env.temporal, apps, core, n, kind == "grown", delay))
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
