"""How long an edit waits after the worker crashed: kill -9, a new worker at once, edit.

    .venv/bin/python bench/worker_kill_bench.py [--rounds 10]

Everything is real: a fresh local Kubernetes cluster, the Temporal dev server, and the worker
as its own process (``worker.py``) so it can be killed with SIGKILL, which is what an OOM kill
or a lost node does: the watch activity it ran vanishes without a word to the server.

Each round: the job is quiet (healthy or terminated, its watch running on the current
worker); the worker is killed and a new one started straight away; the Deployment is edited;
the sample is the time from the edit until the canary asks for pods (the canary Deployment's
``spec.replicas`` > 0, or a canary pod exists). The round's release is then terminated.
Prints p50 / p90 / max and writes them to ``bench/results/worker_kill.json``. The target is
a p50 under 5 s; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from kubernetes import client as k8s
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devenv.cluster import LocalCluster  # noqa: E402
from devenv.temporal import TemporalDevServer  # noqa: E402
from starter import client as canary  # noqa: E402
from starter.errors import CanaryError  # noqa: E402
from workflows import names  # noqa: E402
from workflows.models import OperationRequest, Phase  # noqa: E402
from workflows.spec import JobSpec, workflow_id  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "worker_kill.json"
NAMESPACE, NAME = "bench-kill", "web"
TARGET_P50 = 5.0


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


class Worker:
    """``worker.py`` as a process that can be killed and replaced."""

    def __init__(self, address: str, kubeconfig: Path, log: IO[bytes]) -> None:
        self.env = {**os.environ, "TEMPORAL_ADDRESS": address, "KUBECONFIG": str(kubeconfig)}
        self.log = log
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=self.env, stdout=self.log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def crash_and_replace(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = self._spawn()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class Bench:
    def __init__(self, cluster: LocalCluster, temporal: Client) -> None:
        self.temporal = temporal
        api = cluster.api_client()
        self.apps, self.core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)

    def setup(self) -> None:
        self.core.create_namespace({"metadata": {"name": NAMESPACE}})
        labels = {"app": NAME}
        self.apps.create_namespaced_deployment(NAMESPACE, {
            "metadata": {"name": NAME, "labels": labels},
            "spec": {"replicas": 4, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": f"registry.local/{NAME}:0"}]}}},
        })

    def set_image(self, image: str) -> None:
        self.apps.patch_namespaced_deployment(NAME, NAMESPACE, {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": image}]}}}})

    def canary_requested(self) -> bool:
        try:
            deployment = self.apps.read_namespaced_deployment(f"{NAME}-canary", NAMESPACE)
        except k8s.exceptions.ApiException as error:
            if error.status == 404:
                return False
            raise
        if (deployment.spec.replicas or 0) > 0:
            return True
        pods = self.core.list_namespaced_pod(NAMESPACE, label_selector="canary-delivery.dev/track=canary")
        return any(p.metadata.deletion_timestamp is None for p in pods.items)

    def wait_requested(self, timeout: float = 300) -> float:
        """Poll the API server tightly; the monotonic time canary pods were first asked for."""
        deadline = time.monotonic() + timeout
        while not self.canary_requested():
            if time.monotonic() > deadline:
                raise SystemExit(f"no canary pods requested within {timeout:.0f} s")
            time.sleep(0.02)
        return time.monotonic()

    async def wait_phase(self, phases: set[Phase], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (await canary.details(self.temporal, NAMESPACE, NAME)).phase in phases:
                    return
            except CanaryError:
                pass  # no worker answering queries yet
            if time.monotonic() > deadline:
                raise SystemExit(f"the job did not reach {sorted(phases)} within {timeout:.0f} s")
            await asyncio.sleep(0.1)

    async def wait_watch_running(self, timeout: float = 300) -> None:
        """Until a worker has picked up the job's watch: the crash must take a running watch along."""
        handle = self.temporal.get_workflow_handle(workflow_id(NAMESPACE, NAME))
        deadline = time.monotonic() + timeout
        while True:
            pending = (await handle.describe()).raw_description.pending_activities
            if any(p.activity_type.name == "watch_workload"
                   and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED for p in pending):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"no watch running within {timeout:.0f} s")
            await asyncio.sleep(0.1)

    async def run(self, worker: Worker, rounds: int) -> list[float]:
        self.setup()
        spec = JobSpec.model_validate({"name": NAME, "namespace": NAMESPACE, "workload": {"name": NAME},
                                       "steps": [{"setWeight": 25}, {"pause": {}}], "progressDeadline": "2m"})
        await canary.apply_job(self.temporal, spec)
        await self.wait_phase({Phase.HEALTHY})
        samples: list[float] = []
        for n in range(1, rounds + 1):
            await self.wait_watch_running()
            worker.crash_and_replace()
            started = time.monotonic()
            self.set_image(f"registry.local/{NAME}:{n}")
            seen = await asyncio.to_thread(self.wait_requested)
            samples.append(seen - started)
            print(f"round {n}: edit -> canary pods requested {samples[-1]:.2f} s", flush=True)
            await self.wait_phase({Phase.PAUSED})
            await canary.operate(self.temporal, NAMESPACE, NAME, names.TERMINATE, OperationRequest(actor="bench"))
            await self.wait_phase({Phase.TERMINATED})
        return samples


def summarise(samples: list[float]) -> dict[str, Any]:
    return {
        "what": "kill -9 of the worker, a new one at once, then a Deployment edit: "
                "seconds from the edit until canary pods are requested",
        "rounds": len(samples),
        "p50_s": round(statistics.median(samples), 3),
        "p90_s": round(percentile(samples, 90), 3),
        "max_s": round(max(samples), 3),
        "target_p50_s": TARGET_P50,
        "samples_s": [round(s, 3) for s in samples],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    with LocalCluster(nodes=3) as cluster, TemporalDevServer() as server:
        temporal = await Client.connect(server.address, data_converter=pydantic_data_converter)
        with open(cluster.run_dir / "worker.log", "wb") as log:
            worker = Worker(server.address, cluster.kubeconfig, log)
            try:
                samples = await Bench(cluster, temporal).run(worker, args.rounds)
            finally:
                worker.stop()
    figures = summarise(samples)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    verdict = "meets" if figures["p50_s"] < TARGET_P50 else "misses"
    print(f"worker kill -> edit -> canary pods requested: n={figures['rounds']} p50={figures['p50_s']:.2f} s "
          f"p90={figures['p90_s']:.2f} s max={figures['max_s']:.2f} s ({verdict} the p50 target of "
          f"{TARGET_P50:.0f} s); written to {RESULTS.relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
