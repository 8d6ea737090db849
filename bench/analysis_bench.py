"""Does metric analysis catch bad canaries, pass good ones, and how fast does a bad one go?

    .venv/bin/python bench/analysis_bench.py [--runs 20] [--concurrency 5] [--rate 80]

Everything is real: a fresh local Kubernetes cluster, the Temporal dev server, the worker as
its own process (``worker.py``) querying a real Prometheus (1 s scrapes) that scrapes the
simulated mesh (``devenv.metrics.start_metrics``, 80 requests/s per Service: see MESH_RATE).
Each run has a namespace of its own: a Deployment of 4 pods serving 0.1 % errors, its Service,
and a job ``setWeight 50 -> analysis -> setWeight 75`` whose analysis is the built-in
``request-success-rate`` (success ``result >= 0.99``, failure ``result < 0.97``, interval 2 s,
initialDelay 6 s, window 6 s, count 2). The release then ships either a bad canary (5 %
errors) or a healthy one (0.1 %). Runs go ``--concurrency`` at a time, bad and healthy
interleaved, so the figures are taken under that much concurrent load.

Figures (printed, and written to ``bench/results/analysis.json``; nothing is asserted):

- bad canaries rolled back, and how many of those at the analysis's first measurement;
- healthy canaries promoted;
- detection latency: from the first sample of the canary's 5xx series that Prometheus scraped
  (the raw samples of ``istio_requests_total{destination_workload="web-canary",
  response_code=~"5.."}``, i.e. the first moment any query could have seen an error) until
  the canary Deployment is at zero replicas, polled every 50 ms: ``spec.replicas`` 0 (the
  job's rollback write) and also ``status.replicas`` 0 (its pods gone); p50 / p95;
- how much of that is waiting for the analysis: first 5xx scraped -> first measurement's ``at``;
- reaction latency: from the failing measurement's ``at`` (when the worker asked
  Prometheus) until the canary's ``spec.replicas`` is 0; p50 / p95.

All three clocks (Prometheus' sample timestamps, the worker's ``at``, this script's polls)
are the wall clock of this one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devenv.cluster import LocalCluster  # noqa: E402
from devenv.metrics import start_metrics, stop_metrics  # noqa: E402
from devenv.temporal import TemporalDevServer  # noqa: E402
from devenv.traffic import ERROR_RATE_ANNOTATION  # noqa: E402
from starter import client as canary  # noqa: E402
from starter.errors import CanaryError  # noqa: E402
from workflows.models import JobDetails, Phase  # noqa: E402
from workflows.spec import JobSpec, workflow_id  # noqa: E402
from workflows.verdict import MeasurementPhase  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "analysis.json"
NAME = "web"
# Requests/s per Service. The e2e tests' 40 gives a canary at 50 % about 0.7 errors/s at 5 %: a
# 6 s window then holds ~4 errors, and losing the first to a series that starts mid-window can
# read 5 % as 2.5 % (inconclusive, not failed). 80 keeps the count, not the rate, from deciding.
MESH_RATE = 80.0
BAD, HEALTHY = "0.05", "0.001"
POLL = 0.05  # the canary Deployment is read this often while a bad canary runs
RUN_TIMEOUT = 150.0
METRIC = {
    "name": "success-rate", "interval": "2s", "count": 2, "initialDelay": "6s",
    "successCondition": "result >= 0.99", "failureCondition": "result < 0.97",
}


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def rules(namespace: str) -> dict[str, Any]:
    metric = {**METRIC, "provider": {"builtin": {"check": "request-success-rate", "workload": NAME,
                                                 "namespace": namespace, "window": "6s"}}}
    return {
        "steps": [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "canary-health"}]}},
                  {"setWeight": 75}],
        "analysis": {"templates": [{"name": "canary-health", "metrics": [metric]}]},
        "progressDeadline": "60s",
    }


@dataclass
class Run:
    """What one release did; times are wall-clock seconds (``time.time()``)."""

    namespace: str
    bad: bool
    outcome: str = "timeout"  # rolled-back | promoted | failed | paused: <why> | timeout (<phase>)
    measurements: int = 0  # of the analysis when it ended
    first_value: float | None = None
    first_at: float | None = None  # ``at`` of the analysis's first measurement
    failing_at: float | None = None  # ``at`` of the measurement that failed
    first_error_scraped: float | None = None
    spec_zero: float | None = None
    status_zero: float | None = None
    error: str = ""

    @property
    def detection_spec(self) -> float | None:
        if self.first_error_scraped is None or self.spec_zero is None:
            return None
        return self.spec_zero - self.first_error_scraped

    @property
    def detection_status(self) -> float | None:
        if self.first_error_scraped is None or self.status_zero is None:
            return None
        return self.status_zero - self.first_error_scraped

    @property
    def to_first_measurement(self) -> float | None:
        if self.first_error_scraped is None or self.first_at is None:
            return None
        return self.first_at - self.first_error_scraped

    @property
    def reaction(self) -> float | None:
        if self.failing_at is None or self.spec_zero is None:
            return None
        return self.spec_zero - self.failing_at


class Bench:
    def __init__(self, cluster: LocalCluster, temporal: Client, prometheus: str) -> None:
        self.temporal, self.prometheus = temporal, prometheus
        api = cluster.api_client()
        self.apps, self.core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)

    # -- the cluster (blocking; called in threads) ------------------------------------------

    def create_shop(self, namespace: str) -> None:
        """Namespace, 4 pods of version 1 serving 0.1 % errors, their Service; until available."""
        labels = {"app": NAME}
        self.core.create_namespace({"metadata": {"name": namespace}})
        self.apps.create_namespaced_deployment(namespace, {
            "metadata": {"name": NAME, "labels": labels},
            "spec": {"replicas": 4, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": {ERROR_RATE_ANNOTATION: HEALTHY}},
                                  "spec": {"containers": [{"name": "app", "image": f"registry.local/{NAME}:1"}]}}},
        })
        self.core.create_namespaced_service(namespace, {
            "metadata": {"name": NAME},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}})
        deadline = time.monotonic() + 60
        while (self.apps.read_namespaced_deployment_status(NAME, namespace).status.available_replicas or 0) < 4:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{namespace}/{NAME} not available within 60 s")
            time.sleep(0.2)

    def release(self, namespace: str, error_rate: str) -> None:
        """``kubectl set image`` plus the canary's simulated behaviour, in one pod template edit."""
        self.apps.patch_namespaced_deployment(NAME, namespace, {"spec": {"template": {
            "metadata": {"annotations": {ERROR_RATE_ANNOTATION: error_rate}},
            "spec": {"containers": [{"name": "app", "image": f"registry.local/{NAME}:2"}]}}}})

    def canary_replicas(self, namespace: str) -> tuple[int, int]:
        """The canary Deployment's (spec, status) replicas; (0, 0) while it does not exist."""
        try:
            found = self.apps.read_namespaced_deployment(f"{NAME}-canary", namespace)
        except k8s.exceptions.ApiException as error:
            if error.status == 404:
                return 0, 0
            raise
        return int(found.spec.replicas or 0), int(found.status.replicas or 0)

    def watch_canary_to_zero(self, run: Run, stop: threading.Event) -> None:
        """Poll every 50 ms: once the canary asked for pods, note when spec and status reach 0."""
        requested = False
        while not stop.is_set() and run.status_zero is None:
            spec, status = self.canary_replicas(run.namespace)
            now = time.time()
            requested = requested or spec > 0
            if requested and spec == 0 and run.spec_zero is None:
                run.spec_zero = now
            if requested and spec == 0 and status == 0:
                run.status_zero = now
            time.sleep(POLL)

    def tear_down(self, namespace: str) -> None:
        """Delete the namespace, so the simulator stops sending traffic to runs that are over."""
        try:
            self.core.delete_namespace(namespace)
        except k8s.exceptions.ApiException as error:
            if error.status != 404:
                raise

    def first_error_scraped(self, namespace: str) -> float | None:
        """Timestamp of the first raw sample of any canary 5xx series Prometheus holds."""
        selector = (f'istio_requests_total{{reporter="destination", destination_workload_namespace="{namespace}", '
                    f'destination_workload="{NAME}-canary", response_code=~"5.."}}[30m]')
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": selector})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        firsts = [float(series["values"][0][0]) for series in body["data"]["result"] if series["values"]]
        return min(firsts) if firsts else None

    # -- the job --------------------------------------------------------------------------

    async def details(self, namespace: str) -> JobDetails | None:
        try:
            return await canary.details(self.temporal, namespace, NAME)
        except CanaryError:
            return None

    async def wait_until(self, namespace: str, done: Any, timeout: float = RUN_TIMEOUT) -> JobDetails | None:
        """Poll ``details`` until ``done(details)``; the last details seen (None if there were none)."""
        deadline = time.monotonic() + timeout
        last = await self.details(namespace)
        while last is None or not done(last):
            if time.monotonic() > deadline:
                return last
            await asyncio.sleep(0.25)
            last = await self.details(namespace)
        return last

    async def run(self, namespace: str, bad: bool) -> Run:
        run = Run(namespace, bad)
        try:
            await asyncio.to_thread(self.create_shop, namespace)
            spec = JobSpec.model_validate({"name": NAME, "namespace": namespace, "workload": {"name": NAME},
                                           **rules(namespace)})
            await canary.apply_job(self.temporal, spec)
            await self.wait_until(namespace, lambda d: d.phase == Phase.HEALTHY, 60)
            await asyncio.to_thread(self.release, namespace, BAD if bad else HEALTHY)
            stop = threading.Event()
            watcher = asyncio.create_task(asyncio.to_thread(self.watch_canary_to_zero, run, stop)) if bad else None
            # PAUSED: the analysis was inconclusive and the job asks a human; the bench stops there.
            final = await self.wait_until(namespace, lambda d: d.phase in (Phase.FAILED, Phase.PAUSED) or (
                d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2))
            if watcher is not None:
                # A rolled-back canary reaches zero within moments; any other ending may never.
                await asyncio.wait({watcher}, timeout=30 if ended_in_rollback(final) else 0)
                stop.set()
                await watcher
            self.judge(run, final)
            if bad:
                run.first_error_scraped = await asyncio.to_thread(self.first_error_scraped, namespace)
        except Exception as error:  # a run that breaks is counted as missed, not fatal to the bench
            run.error = f"{type(error).__name__}: {error}"
        finally:
            await self.end(namespace)
        print(f"{'bad    ' if bad else 'healthy'} {namespace}: {run.outcome}, {run.measurements} measurement(s)"
              + (f", first value {run.first_value:.4f}" if run.first_value is not None else "")
              + (f", 5xx scraped -> canary spec 0 {run.detection_spec:.2f} s" if run.detection_spec is not None
                 else "")
              + (f" ({run.error})" if run.error else ""), flush=True)
        return run

    @staticmethod
    def judge(run: Run, final: JobDetails | None) -> None:
        if final is None:
            return
        if final.phase == Phase.HEALTHY and final.stable is not None and final.stable.revision == 2:
            run.outcome = "promoted"
        elif final.phase == Phase.FAILED:
            run.outcome = "rolled-back" if final.stable is not None and final.stable.revision == 1 else "failed"
        elif final.phase == Phase.PAUSED:
            run.outcome = f"paused: {final.pause_reason}"
        else:
            run.outcome = f"timeout ({final.phase})"
        if final.analyses:
            [metric] = final.analyses[-1].metrics
            run.measurements = metric.status.measured
            if metric.measurements:
                run.first_value = metric.measurements[0].value
                first_at = metric.measurements[0].at
                run.first_at = first_at.timestamp() if first_at is not None else None
            failing = [m for m in metric.measurements if m.phase == MeasurementPhase.FAILED]
            if failing and failing[0].at is not None:
                run.failing_at = failing[0].at.timestamp()

    async def end(self, namespace: str) -> None:
        try:
            await self.temporal.get_workflow_handle(workflow_id(namespace, NAME)).terminate("bench run over")
        except Exception:
            pass  # never started, or already over
        await asyncio.to_thread(self.tear_down, namespace)


def ended_in_rollback(final: JobDetails | None) -> bool:
    """Whether the job ended the release by rolling it back (the canary is then on its way to 0)."""
    return final is not None and final.phase == Phase.FAILED


def distribution(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    return {"n": len(samples), "p50_s": round(statistics.median(samples), 3),
            "p95_s": round(percentile(samples, 95), 3), "min_s": round(min(samples), 3),
            "max_s": round(max(samples), 3)}


def summarise(runs: list[Run], concurrency: int, rate: float, wall: float) -> dict[str, Any]:
    bad = [r for r in runs if r.bad]
    healthy = [r for r in runs if not r.bad]
    rolled_back = [r for r in bad if r.outcome == "rolled-back"]
    return {
        "what": "request-success-rate analysis (success >= 0.99, failure < 0.97, interval 2s, initialDelay 6s, "
                "window 6s, count 2) on the real cluster, Prometheus (1 s scrapes) and simulated mesh "
                f"({rate:g} req/s per Service); bad canary {BAD} errors, healthy {HEALTHY}",
        "concurrency": concurrency,
        "mesh_rate_per_service": rate,
        "wall_s": round(wall, 1),
        "bad_runs": len(bad),
        "bad_rolled_back": len(rolled_back),
        "bad_rolled_back_at_first_measurement": sum(1 for r in rolled_back if r.measurements == 1),
        "healthy_runs": len(healthy),
        "healthy_promoted": sum(1 for r in healthy if r.outcome == "promoted"),
        "detection_first_5xx_scraped_to_canary_spec_zero": distribution(
            [d for r in rolled_back if (d := r.detection_spec) is not None]),
        "detection_first_5xx_scraped_to_canary_status_zero": distribution(
            [d for r in rolled_back if (d := r.detection_status) is not None]),
        "first_5xx_scraped_to_first_measurement": distribution(
            [d for r in rolled_back if (d := r.to_first_measurement) is not None]),
        "reaction_failing_measurement_to_canary_spec_zero": distribution(
            [d for r in rolled_back if (d := r.reaction) is not None]),
        "runs": [{**asdict(r), "detection_spec_s": r.detection_spec, "to_first_measurement_s": r.to_first_measurement,
                  "reaction_s": r.reaction} for r in runs],
    }


def show(figures: dict[str, Any]) -> None:
    def line(title: str, key: str) -> str:
        d = figures[key]
        if not d["n"]:
            return f"{title}: no samples"
        return (f"{title}: n={d['n']} p50={d['p50_s']:.2f} s p95={d['p95_s']:.2f} s "
                f"min={d['min_s']:.2f} s max={d['max_s']:.2f} s")

    print(f"\n{figures['bad_runs'] + figures['healthy_runs']} runs, {figures['concurrency']} at a time, "
          f"{figures['wall_s']:.0f} s wall", flush=True)
    print(f"bad canaries (5 % errors) rolled back: {figures['bad_rolled_back']}/{figures['bad_runs']}, "
          f"{figures['bad_rolled_back_at_first_measurement']} of them at the first measurement")
    print(f"healthy canaries (0.1 % errors) promoted: {figures['healthy_promoted']}/{figures['healthy_runs']}")
    print(line("first 5xx sample scraped -> canary spec.replicas 0",
               "detection_first_5xx_scraped_to_canary_spec_zero"))
    print(line("first 5xx sample scraped -> canary status.replicas 0",
               "detection_first_5xx_scraped_to_canary_status_zero"))
    print(line("  of which: first 5xx sample scraped -> first measurement", "first_5xx_scraped_to_first_measurement"))
    print(line("failing measurement (its at) -> canary spec.replicas 0",
               "reaction_failing_measurement_to_canary_spec_zero"), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="bad runs, and as many healthy ones")
    parser.add_argument("--concurrency", type=int, default=5, help="runs at a time")
    parser.add_argument("--rate", type=float, default=MESH_RATE, help="mesh requests/s per Service")
    args = parser.parse_args()
    # Each running bad canary holds a thread polling its Deployment; the default pool has 6 on 2 cores.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(4 * args.concurrency + 8))

    with LocalCluster(nodes=3) as cluster, TemporalDevServer() as server:
        prometheus, simulator = start_metrics(cluster.kubeconfig, rate=args.rate)
        temporal = await Client.connect(server.address, data_converter=pydantic_data_converter)
        env = {**os.environ, "TEMPORAL_ADDRESS": server.address, "KUBECONFIG": str(cluster.kubeconfig),
               "CANARY_PROMETHEUS_ADDRESS": prometheus.address}
        log = open(cluster.run_dir / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            bench = Bench(cluster, temporal, prometheus.address)
            gate = asyncio.Semaphore(args.concurrency)

            async def one(index: int, bad: bool) -> Run:
                async with gate:
                    return await bench.run(f"bench-{'bad' if bad else 'ok'}-{index:02d}", bad)

            print(f"{args.runs} bad and {args.runs} healthy releases, {args.concurrency} at a time", flush=True)
            started = time.monotonic()
            runs = await asyncio.gather(*(one(i, bad) for i in range(args.runs) for bad in (True, False)))
            wall = time.monotonic() - started
        finally:
            worker.terminate()
            worker.wait(30)
            log.close()
            stop_metrics(prometheus, simulator)
    figures = summarise(list(runs), args.concurrency, args.rate, wall)
    show(figures)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
