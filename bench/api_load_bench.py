"""How fast does the HTTP API answer 200 concurrent GETs? Prints its figures, asserts nothing.

    .venv/bin/python bench/api_load_bench.py [--concurrency 200] [--rounds 5] [--jobs 3] [--label after]
                                             [--kinds list,details] [--profile api.prof]

Everything is real: a fresh local Kubernetes cluster, the Temporal dev server, the worker as
its own process (``worker.py``) and the API as its own process (``python -m starter.api``,
as ``canaryctl dev up`` runs it, with a tokens file of digests). A few jobs are applied, one of
them paused in a release so that its page shows a canary, then each kind of GET is sent in
rounds of ``--concurrency`` requests at once, all with a viewer's bearer token (the page with
a signed-in session cookie, as a browser sends it):

- ``list``: ``GET /api/v1/jobs`` (visibility, no worker involved);
- ``details``: ``GET /api/v1/namespaces/<ns>/jobs/<name>`` (the JSON API), jobs in turn;
- ``page``: ``GET /ui/namespaces/<ns>/jobs/<name>`` (the HTML job page), jobs in turn;
- ``mixed``: the three kinds interleaved in every round;
- ``healthz``: ``GET /healthz`` (nothing behind it): the floor that the load generator, the
  HTTP stack and the machine itself set.

Per kind: p50/p95/p99 of each request's latency (send until the whole body is read), errors
(any status but 200, or no answer), requests per second (requests over the rounds' wall time)
and the CPU seconds that the API, the worker, the Temporal server and the load generator each
spent meanwhile: where the time goes. ``--profile`` runs the API under cProfile as well.
Written to ``bench/results/api_load.json`` (``--label`` names the run, so a before and an
after can sit side by side). The load generator is a separate process from the API, but shares
the machine's cores with it, the worker and Temporal: figures are for the whole box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client as k8s
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devenv.cluster import LocalCluster  # noqa: E402
from devenv.processes import free_port  # noqa: E402
from devenv.temporal import TemporalDevServer  # noqa: E402
from starter import client as canary  # noqa: E402
from workflows.models import Phase  # noqa: E402
from workflows.spec import JobSpec  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "api_load.json"
NAMESPACE = "bench-load"
VIEWER_TOKEN = "bench-viewer-token-0123456789"
KINDS = ("healthz", "list", "details", "page", "mixed")


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    kind: str
    latencies: list[float]
    errors: int
    wall: float
    cpu: dict[str, float]  # CPU seconds each process spent during the rounds

    def summary(self) -> dict[str, Any]:
        ms = [s * 1000 for s in self.latencies] or [0.0]
        return {"n": len(self.latencies) + self.errors, "errors": self.errors,
                "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(percentile(ms, 95), 1),
                "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(max(ms), 1),
                "req_per_s": round((len(self.latencies) + self.errors) / self.wall, 1) if self.wall else 0.0,
                "cpu_s": {who: round(seconds, 2) for who, seconds in self.cpu.items()}}

    def line(self) -> str:
        s = self.summary()
        return (f"{self.kind:8s} n={s['n']} errors={s['errors']} p50={s['p50_ms']:.0f} ms p95={s['p95_ms']:.0f} ms "
                f"p99={s['p99_ms']:.0f} ms max={s['max_ms']:.0f} ms {s['req_per_s']:.0f} req/s; CPU s: "
                + " ".join(f"{who} {seconds:.1f}" for who, seconds in s["cpu_s"].items()))


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer")
        time.sleep(0.2)


class Jobs:
    """A namespace of Deployments, each delivered by a job; the first is paused in a release."""

    def __init__(self, cluster: LocalCluster, temporal: Client) -> None:
        api = cluster.api_client()
        self.apps, self.core, self.temporal = k8s.AppsV1Api(api), k8s.CoreV1Api(api), temporal

    async def create(self, count: int) -> list[str]:
        self.core.create_namespace({"metadata": {"name": NAMESPACE}})
        names_ = [f"web{i}" for i in range(count)]
        for name in names_:
            labels = {"app": name}
            self.apps.create_namespaced_deployment(NAMESPACE, {
                "metadata": {"name": name, "labels": labels},
                "spec": {"replicas": 4, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels}, "spec": {
                             "containers": [{"name": "app", "image": f"registry.local/{name}:1"}]}}},
            })
        steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
        await asyncio.gather(*(canary.apply_job(self.temporal, JobSpec.model_validate(
            {"name": name, "namespace": NAMESPACE, "workload": {"name": name}, "steps": steps,
             "progressDeadline": "2m"})) for name in names_))
        await asyncio.gather(*(self.wait(name, {Phase.HEALTHY}) for name in names_))
        self.apps.patch_namespaced_deployment(names_[0], NAMESPACE, {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": f"registry.local/{names_[0]}:2"}]}}}})
        await self.wait(names_[0], {Phase.PAUSED})
        return names_

    async def wait(self, name: str, phases: set[Phase], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (await canary.details(self.temporal, NAMESPACE, name)).phase not in phases:
            if time.monotonic() > deadline:
                raise SystemExit(f"{NAMESPACE}/{name} did not reach {phases}")
            await asyncio.sleep(0.1)


class Load:
    """Rounds of concurrent GETs against the API; one connection per concurrent request.

    aiohttp, not httpx: at 200 concurrent requests httpx's own connection pool spent about ten
    times the CPU the API did (5.8 s against 0.4 s for 1000 ``/healthz``), so it measured itself.
    """

    def __init__(self, url: str, jobs: list[str], concurrency: int, pids: dict[str, int]) -> None:
        self.url, self.jobs, self.concurrency, self.pids = url, jobs, concurrency, pids
        self.http = aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=concurrency),
                                          timeout=aiohttp.ClientTimeout(total=60),
                                          cookie_jar=aiohttp.CookieJar(unsafe=True),  # 127.0.0.1 is an IP
                                          headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
        self.failures: dict[str, int] = {}

    async def sign_in(self) -> None:
        """The page is read as a browser does: with the session cookie of a sign-in."""
        async with self.http.post("/ui/login", data={"token": VIEWER_TOKEN}, headers={"Origin": self.url},
                                  allow_redirects=False) as signed:
            if signed.status != 303:
                raise SystemExit(f"sign-in failed: {signed.status} {(await signed.text())[:200]}")

    def path(self, kind: str, i: int) -> str:
        name = self.jobs[i % len(self.jobs)]
        if kind == "mixed":
            kind = ("list", "details", "page")[i % 3]
        return {"healthz": "/healthz", "list": "/api/v1/jobs",
                "details": f"/api/v1/namespaces/{NAMESPACE}/jobs/{name}",
                "page": f"/ui/namespaces/{NAMESPACE}/jobs/{name}"}[kind]

    async def one(self, path: str) -> float | None:
        started = time.perf_counter()
        try:
            async with self.http.get(path, allow_redirects=False) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as err:
            self._failed(f"{type(err).__name__}: {err}")
            return None
        elapsed = time.perf_counter() - started
        if status != 200:
            self._failed(f"{status} {path}: {body[:160].decode(errors='replace')}")
            return None
        return elapsed

    def _failed(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1

    async def run(self, kind: str, rounds: int) -> Figures:
        latencies: list[float] = []
        errors = 0
        wall = 0.0
        cpu_before = {who: cpu_seconds(pid) for who, pid in self.pids.items()}
        for _ in range(rounds):
            started = time.perf_counter()
            results = await asyncio.gather(*(self.one(self.path(kind, i)) for i in range(self.concurrency)))
            wall += time.perf_counter() - started
            latencies += [r for r in results if r is not None]
            errors += sum(1 for r in results if r is None)
            await asyncio.sleep(0.5)  # bursts, not a stream: each round starts from an idle API
        cpu = {who: cpu_seconds(pid) - cpu_before[who] for who, pid in self.pids.items()}
        return Figures(kind, latencies, errors, wall, cpu)


# Runs the API's own main() under cProfile. main() returns (no os._exit) when given argv, and
# uvicorn re-raises the SIGTERM it caught once it has shut down, to the handler it found: a
# no-op here, so that the profile is written.
PROFILED_API = ("import cProfile, signal, sys; from starter.api.__main__ import main; "
                "signal.signal(signal.SIGTERM, lambda *_: None); "
                "cProfile.run('main(sys.argv[2:])', sys.argv[1])")


def start_api(env: dict[str, str], address: str, port: int, log: Any, tokens_file: Path,
              profile: Path | None) -> subprocess.Popen[bytes]:
    """``python -m starter.api`` as ``canaryctl dev up`` runs it (or under cProfile, with ``--profile``)."""
    options = ["--host", "127.0.0.1", "--port", str(port), "--address", address, "--tokens-file", str(tokens_file),
               "--log-level", "warning"]
    command = ["-c", PROFILED_API, str(profile)] if profile else ["-m", "starter.api"]
    return subprocess.Popen([sys.executable, *command, *options], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="bursts of --concurrency GETs per kind")
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--label", default="latest", help="the key the figures are written under")
    parser.add_argument("--profile", type=Path, help="run the API under cProfile and write its stats here")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of: {', '.join(KINDS)}")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kind {unknown[0]!r}; choose from {', '.join(KINDS)}")

    figures: dict[str, Any] = {}
    with LocalCluster(nodes=2) as cluster, TemporalDevServer() as server:
        temporal = await Client.connect(server.address, data_converter=pydantic_data_converter)
        env = {**os.environ, "TEMPORAL_ADDRESS": server.address, "KUBECONFIG": str(cluster.kubeconfig),
               "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env.pop("CANARY_API_TOKENS", None)
        worker_log = open(cluster.run_dir / "worker.log", "wb")
        api_log = open(cluster.run_dir / "api.log", "wb")
        worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, stdout=worker_log,
                                  stderr=subprocess.STDOUT)
        with tempfile.TemporaryDirectory(prefix="canary-load-") as tmp:
            tokens_file = Path(tmp) / "tokens.json"
            tokens_file.write_text(json.dumps({"tokens": [{"token": VIEWER_TOKEN, "role": "viewer",
                                                           "name": "bench-viewer"}]}))
            port = free_port()
            api = start_api(env, server.address, port, api_log, tokens_file, args.profile)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_http(f"{url}/healthz")
                jobs = await Jobs(cluster, temporal).create(args.jobs)
                assert server.pid is not None
                pids = {"api": api.pid, "worker": worker.pid, "temporal": server.pid, "load": os.getpid()}
                load = Load(url, jobs, args.concurrency, pids)
                try:
                    await load.sign_in()
                    await load.run("mixed", 1)  # warm-up: connections, templates, the worker's cache
                    print(f"{args.concurrency} concurrent GETs x {args.rounds} rounds per kind, "
                          f"{len(jobs)} jobs, label {args.label!r}:", flush=True)
                    for kind in kinds:
                        result = await load.run(kind, args.rounds)
                        print(result.line(), flush=True)
                        figures[kind] = result.summary()
                finally:
                    await load.http.close()
                    for what, count in load.failures.items():
                        print(f"  failed x{count}: {what}", flush=True)
            finally:
                for child in (api, worker):
                    child.terminate()
                for child in (api, worker):
                    child.wait(30)
                worker_log.close()
                api_log.close()
    known = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    known[args.label] = {"concurrency": args.concurrency, "rounds": args.rounds, "jobs": args.jobs, **figures}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(known, indent=2) + "\n")
    print(f"figures written to {RESULTS.relative_to(ROOT)} under {args.label!r}")


if __name__ == "__main__":
    asyncio.run(main())
