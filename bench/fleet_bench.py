"""A fleet on one worker: many attached jobs, idle and releasing; prints figures, asserts nothing.

    .venv/bin/python bench/fleet_bench.py [idle] [releases] [releases-small]
        [--jobs 1000] [--releases 200] [--releases-small 50] [--window 60] [--detections 10]
        [--concurrency 32] [--cluster-defaults] [--label NAME]

Everything is real: a fresh local Kubernetes cluster (its controller-manager and scheduler
client rate limits raised, as printed, unless ``--cluster-defaults``), the Temporal dev
server, and the worker as its own process (``worker.py``), so its memory, threads and CPU
can be read from /proc. Every phase first attaches ``--jobs`` jobs, each to its own
Deployment of 4 replicas (KWOK pods) with steps 25 -> 50 -> 100 and no pauses; Deployments
and jobs are created ``--concurrency`` at a time.

idle            all jobs attached and healthy, nothing happening for ``--window`` seconds:
                worker RSS and threads, CPU of the worker and the Temporal server as % of one
                core; then detection latency (edit -> canary pods requested, p50) on
                ``--detections`` jobs spread over the fleet, one release at a time, while all
                stay attached.
releases        ``--releases`` of the attached jobs released at once: all must end promoted
                (stuck and failed ones counted), wall time, CPU-seconds of worker and Temporal.
releases-small  the same with ``--releases-small``.

``--rounds N`` runs each release phase N times on the same jobs: the first release of a job's
run also records, once, a marker and a search-attribute upsert per code version it passes
(``workflow.patched``); rounds after the first show what every later release costs.

Both release phases and the first detection also count the Temporal history events of one
job's release (per step, by type, workflow tasks). Whether a release has finished is judged
from the cluster (one watch, see ``deployment_mirror``), not by querying jobs, so the
benchmark itself adds no load to the processes it measures; the jobs are queried once at
the end to confirm each one says promoted. Figures are printed and merged, per phase and
size, into ``bench/results/fleet.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_env import percentile  # noqa: E402
from deployment_mirror import DeploymentMirror  # noqa: E402
from proc_stats import Snapshot, status_field  # noqa: E402
from temporal_rpcs import APISERVER, count_requests, difference, read_counts  # noqa: E402

from activities.templates import CANARY_TRACK, JOB_KEY, TRACK_LABEL  # noqa: E402
from devenv.cluster import LocalCluster  # noqa: E402
from devenv.components import ComponentSettings  # noqa: E402
from devenv.processes import free_port  # noqa: E402
from devenv.temporal import TemporalDevServer  # noqa: E402
from devenv.temporal_postgres import TemporalPostgresServer  # noqa: E402
from starter import client as canary  # noqa: E402
from starter.errors import CanaryError  # noqa: E402
from workflows.models import Phase  # noqa: E402
from workflows.spec import JobSpec, workflow_id  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fleet.json"
NAMESPACE = "bench-fleet"
REPLICAS = 4
STEPS: list[dict[str, Any]] = [{"setWeight": 25}, {"setWeight": 50}, {"setWeight": 100}]
PHASES = ("idle", "releases", "releases-small")
# Client limits out of the controllers' way, as Argo Rollouts was measured (--qps 500 --burst 1000).
RAISED = ComponentSettings(
    controller_manager_qps=500, controller_manager_burst=1000,
    concurrent_deployment_syncs=50, concurrent_replicaset_syncs=50,
    scheduler_qps=500, scheduler_burst=1000,
)
PODS_PER_NODE = 400  # kwok nodes allow 500
T = TypeVar("T")


def progress_printer(what: str, total: int) -> Callable[[int, int], None]:
    """Print ``what: n/total`` about every tenth of the way (and at the end)."""
    step = max(1, total // 10)
    last = [0]

    def show(done: int, _total: int) -> None:
        if done - last[0] >= step or done == total:
            last[0] = done
            print(f"  {what}: {done}/{total}", flush=True)

    return show


async def bounded(calls: Iterable[Callable[[], Awaitable[T]]], concurrency: int,
                  progress: Callable[[int, int], None]) -> list[T | BaseException]:
    """Run the calls at most ``concurrency`` at a time; results (or exceptions) in order."""
    calls = list(calls)
    gate, done = asyncio.Semaphore(concurrency), [0]

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            try:
                return await call()
            finally:
                done[0] += 1
                progress(done[0], len(calls))

    return await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)


def git_head() -> str:
    """The commit measured (with ``+dirty`` for local changes), so results can be told apart."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no")
                                                   else "")


# The processes whose CPU is ours to count; the rest is the cluster's, reported for context.
OURS = ("worker", "temporal", "temporal_db")


def temporal_cpu(cpu: dict[str, float]) -> float:
    """Temporal's CPU: the server, and its database when that is a separate process (PostgreSQL)."""
    return cpu["temporal"] + cpu.get("temporal_db", 0.0)


def db_part(cpu: dict[str, float]) -> str:
    return f" (of which PostgreSQL {cpu['temporal_db']:.1f} s)" if "temporal_db" in cpu else ""


class Usage:
    """CPU seconds of the measured processes between two moments."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.before = {name: Snapshot.of(pid) for name, pid in pids.items()}

    def cpu(self) -> tuple[float, dict[str, float]]:
        """Wall seconds since the start, and CPU seconds per process over them."""
        wall = time.monotonic() - self.started
        return wall, {name: round(Snapshot.of(pid).cpu_s - self.before[name].cpu_s, 2)
                      for name, pid in self.pids.items()}


class PeakSampler:
    """Worker RSS and threads sampled every second in the background; the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.rss_mib, self.threads = pid, 0.0, 0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            snap = Snapshot.of(self.pid)
            self.rss_mib, self.threads = max(self.rss_mib, snap.rss_mib), max(self.threads, snap.threads)
            await asyncio.sleep(1)

    def __enter__(self) -> PeakSampler:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()


class LogLines:
    """Lines the worker logged since a moment: failed attempts with tracebacks show up here."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, path.stat().st_size

    def count(self) -> int:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            return log.read().count(b"\n")


class FleetBench:
    def __init__(self, cluster: LocalCluster, temporal: Client, worker_pid: int, temporal_pid: int,
                 worker_log: Path, concurrency: int, temporal_db_pid: int | None = None) -> None:
        self.cluster, self.temporal = cluster, temporal
        self.worker_pid, self.temporal_pid, self.worker_log = worker_pid, temporal_pid, worker_log
        self.temporal_db_pid = temporal_db_pid
        self.temporal_metrics: str | None = None  # the dev server's /metrics URL, when it has one
        self.concurrency = concurrency
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = concurrency + 4
        self.api = k8s.ApiClient(configuration)
        self.apps, self.core = k8s.AppsV1Api(self.api), k8s.CoreV1Api(self.api)
        self.threads = ThreadPoolExecutor(concurrency, thread_name_prefix="bench")
        self.mirror = DeploymentMirror(self.api, NAMESPACE)
        self.jobs: list[str] = []
        self.image: dict[str, str] = {}
        self.releases: dict[str, int] = {}

    def _apiserver_counts(self) -> Counter[str]:
        """The API server's request and watch-event counters (its ``/metrics``, read as the admin)."""
        response = self.api.call_api("GET", f"{self.api.configuration.host}/metrics", _request_timeout=10)
        response.read()
        return count_requests(response.data.decode(), APISERVER)

    def measured(self) -> dict[str, int]:
        """The processes whose CPU the figures report: ours, then the cluster's for context."""
        db = {"temporal_db": self.temporal_db_pid} if self.temporal_db_pid is not None else {}
        return {"worker": self.worker_pid, "temporal": self.temporal_pid, **db, **self.cluster.pids}

    # -- the fleet ---------------------------------------------------------------------

    async def attach(self, count: int, timeout: float) -> dict[str, Any]:
        """Create ``count`` Deployments and a job on each; return once all are healthy."""
        started = time.monotonic()
        self.core.create_namespace({"metadata": {"name": NAMESPACE}})
        self.mirror.start()
        self.jobs = [f"app{i:04d}" for i in range(count)]
        loop = asyncio.get_running_loop()
        print(f"creating {count} Deployments of {REPLICAS} replicas, {self.concurrency} at a time", flush=True)
        failures = await bounded(
            [partial(loop.run_in_executor, self.threads, self._create_workload, name) for name in self.jobs],
            self.concurrency, progress_printer("Deployments created", count))
        self._raise_first(failures, "creating Deployments")
        await asyncio.to_thread(self.mirror.wait_all, self.jobs, self._available, timeout,
                                progress_printer("Deployments available", count))
        created = time.monotonic() - started
        print(f"attaching {count} jobs, {self.concurrency} at a time", flush=True)
        attaching = time.monotonic()
        failures = await bounded([partial(self._apply, name) for name in self.jobs],
                                 self.concurrency, progress_printer("jobs attached", count))
        self._raise_first(failures, "attaching jobs")
        await self._wait_healthy(count, timeout)
        figures = {"deployments_s": round(created, 1), "attach_s": round(time.monotonic() - attaching, 1)}
        print(f"fleet ready: {count} Deployments in {figures['deployments_s']} s, {count} jobs attached and "
              f"healthy in {figures['attach_s']} s", flush=True)
        return figures

    def _create_workload(self, name: str) -> None:
        labels = {"app": name}
        self.image[name] = f"registry.local/{name}:0"
        self.releases[name] = 0
        self.apps.create_namespaced_deployment(NAMESPACE, {
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": self.image[name]}]}}},
        })

    async def _apply(self, name: str) -> None:
        spec = JobSpec.model_validate({"name": name, "namespace": NAMESPACE, "workload": {"name": name},
                                       "steps": STEPS, "progressDeadline": "5m"})
        await canary.apply_job(self.temporal, spec)

    @staticmethod
    def _raise_first(results: list[Any], what: str) -> None:
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise SystemExit(f"{what}: {len(errors)} failed; the first: {type(errors[0]).__name__}: {errors[0]}")

    async def _wait_healthy(self, count: int, timeout: float) -> None:
        """Until visibility says every job is healthy (one count call, not a query per job)."""
        query = f"CanaryNamespace='{NAMESPACE}' AND CanaryPhase='{Phase.HEALTHY.value}' AND ExecutionStatus='Running'"
        deadline = time.monotonic() + timeout
        while (healthy := (await self.temporal.count_workflows(query)).count) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {healthy} of {count} jobs healthy after {timeout:.0f} s")
            await asyncio.sleep(1)

    # -- releases ----------------------------------------------------------------------

    def _edit(self, name: str) -> None:
        self.releases[name] += 1
        self.image[name] = f"registry.local/{name}:{self.releases[name]}"
        self.apps.patch_namespaced_deployment(name, NAMESPACE, {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": self.image[name]}]}}}})

    def _available(self, name: str) -> bool:
        view = self.mirror.views.get(name)
        return view is not None and view.rolled_out(self.image[name], REPLICAS)

    def _promoted(self, name: str) -> bool:
        return self.mirror.promoted(name, self.image[name], REPLICAS)

    def _canary_requested(self, name: str) -> bool:
        """The job's canary (a ReplicaSet of its own, or a canary Deployment) asks for pods of the new image."""
        sets = self.apps.list_namespaced_replica_set(
            NAMESPACE, label_selector=f"{JOB_KEY}={name},{TRACK_LABEL}={CANARY_TRACK}").items
        canaries: list[Any] = [rs for rs in sets
                               if not any(ref.controller for ref in rs.metadata.owner_references or [])]
        if not canaries:
            try:
                canaries = [self.apps.read_namespaced_deployment(f"{name}-canary", NAMESPACE)]
            except k8s.exceptions.ApiException as error:
                if error.status == 404:
                    return False
                raise
        return any((c.spec.replicas or 0) > 0 and c.spec.template.spec.containers[0].image == self.image[name]
                   for c in canaries)

    def _wait_requested(self, name: str, timeout: float = 120) -> float:
        """Poll the API server tightly (as canary_bench does); the monotonic time canary pods were asked for."""
        deadline = time.monotonic() + timeout
        while not self._canary_requested(name):
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: no canary pods requested within {timeout:.0f} s")
            time.sleep(0.005)
        return time.monotonic()

    async def _outcomes(self, names: list[str]) -> tuple[Counter[str], list[datetime]]:
        """Ask each job once how its release ended: promoted, failed, or still going (stuck).

        Also when each promoted job recorded its promotion, to check the cluster-side judgement.
        """
        promoted_at: list[datetime] = []

        async def outcome(name: str) -> str:
            try:
                details = await canary.details(self.temporal, NAMESPACE, name)
            except CanaryError as error:
                return f"unanswered ({type(error).__name__})"
            if details.phase == Phase.HEALTHY and details.stable is not None \
                    and details.stable.images.get("app") == self.image[name]:
                if details.stable.finished is not None:
                    promoted_at.append(details.stable.finished)
                return "promoted"
            if details.phase == Phase.FAILED or details.phase == Phase.HEALTHY:
                return "failed"
            return f"stuck ({details.phase.value})"

        results = await bounded([partial(outcome, name) for name in names], self.concurrency, lambda *_: None)
        return Counter(r if isinstance(r, str) else f"error ({type(r).__name__})" for r in results), promoted_at

    async def _explain_unfinished(self, names: list[str], patience: float = 30.0) -> None:
        """For jobs the cluster shows promoted but that have not said so: what they run, and whether they finish.

        The cluster-side judgement can come first (a hand-over's canary is gone before its
        activity returns), so "stuck" at the moment of asking may be only late.
        """
        waiting: dict[str, str] = {}
        for name in names:
            details = await canary.details(self.temporal, NAMESPACE, name)
            stable = details.stable
            if details.phase == Phase.HEALTHY and stable and stable.images.get("app") == self.image[name]:
                continue
            description = await self.temporal.get_workflow_handle(workflow_id(NAMESPACE, name)).describe()
            pending = []
            for a in description.raw_description.pending_activities:
                failure = a.last_failure.message[:160] if a.HasField("last_failure") else ""
                beat = a.heartbeat_details.payloads[0].data.decode()[:200] if a.heartbeat_details.payloads else ""
                pending.append(f"{a.activity_type.name} attempt {a.attempt}"
                               + (f", last failure: {failure}" if failure else "")
                               + (f", heartbeat: {beat}" if beat else ""))
            waiting[name] = f"{details.phase.value}; {'; '.join(pending) or 'no activity pending'}"
        for name, what in list(waiting.items())[:5]:
            print(f"    unfinished {name}: {what}", flush=True)
        began = time.monotonic()
        while waiting and time.monotonic() - began < patience:
            for name in list(waiting):
                details = await canary.details(self.temporal, NAMESPACE, name)
                if details.phase != Phase.PROMOTING:
                    print(f"    {name}: {details.phase.value} {time.monotonic() - began:.1f} s later", flush=True)
                    del waiting[name]
            await asyncio.sleep(0.5)
        if waiting:
            print(f"    still unfinished after {patience:.0f} s: {sorted(waiting)}", flush=True)

    async def _history_mark(self, name: str) -> tuple[str, int]:
        description = await self.temporal.get_workflow_handle(workflow_id(NAMESPACE, name)).describe()
        return description.run_id or "", description.history_length

    async def _history_since(self, name: str, mark: tuple[str, int]) -> dict[str, Any]:
        """The history events of ``name`` after ``mark``, following continue-as-new to the current run."""
        run_id, offset = mark
        events: list[Any] = []
        runs = 0
        while True:
            runs += 1
            history = await self.temporal.get_workflow_handle(workflow_id(NAMESPACE, name), run_id=run_id) \
                .fetch_history()
            events += history.events[offset:]
            last = history.events[-1] if history.events else None
            if last is None or last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                break
            run_id, offset = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id, 0
        kinds = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_").lower() for e in events)
        activities = Counter(e.activity_task_scheduled_event_attributes.activity_type.name for e in events
                             if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        return {
            "events": len(events),
            "events_per_step": round(len(events) / len(STEPS), 1),
            "workflow_tasks": kinds.get("workflow_task_completed", 0),
            "activities": kinds.get("activity_task_scheduled", 0),
            "timers": kinds.get("timer_started", 0),
            "bytes": sum(e.ByteSize() for e in events),
            "runs": runs,
            "by_type": dict(kinds.most_common()),
            "activities_by_name": dict(activities.most_common()),
        }

    async def _wait_phase(self, name: str, phase: Phase, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (await canary.details(self.temporal, NAMESPACE, name)).phase != phase:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not reach {phase.value}")
            await asyncio.sleep(0.1)

    @staticmethod
    def print_history(what: str, history: dict[str, Any]) -> None:
        top = ", ".join(f"{kind} {n}" for kind, n in list(history["by_type"].items())[:8])
        print(f"{what}: {history['events']} history events ({history['events_per_step']} per step of "
              f"{len(STEPS)}, promotion included), {history['workflow_tasks']} workflow tasks, "
              f"{history['activities']} activities, "
              f"{history['bytes'] / 1024:.1f} KiB, {history['runs']} run(s); {top}", flush=True)
        print("    activities: " + ", ".join(f"{name} {n}" for name, n in history["activities_by_name"].items()),
              flush=True)

    # -- phases ------------------------------------------------------------------------

    async def idle(self, window: float, detections: int, settle: float) -> dict[str, Any]:
        print(f"(a) idle: {len(self.jobs)} jobs attached; settling {settle:.0f} s, then measuring {window:.0f} s",
              flush=True)
        await asyncio.sleep(settle)
        log = LogLines(self.worker_log)
        usage = Usage(self.measured())
        with PeakSampler(self.worker_pid) as peak:
            await asyncio.sleep(window)
            wall, cpu = usage.cpu()
            end = Snapshot.of(self.worker_pid)
        figures: dict[str, Any] = {
            "jobs": len(self.jobs), "window_s": round(wall, 1),
            "worker_rss_mib": round(end.rss_mib, 1), "worker_rss_peak_mib": round(peak.rss_mib, 1),
            "worker_threads": end.threads, "worker_threads_peak": peak.threads,
            "worker_cpu_pct": round(100 * cpu["worker"] / wall, 2),
            "temporal_cpu_pct": round(100 * temporal_cpu(cpu) / wall, 2),
            "worker_plus_temporal_cpu_pct": round(100 * (cpu["worker"] + temporal_cpu(cpu)) / wall, 2),
            "cluster_cpu_pct": {name: round(100 * s / wall, 2) for name, s in cpu.items() if name not in OURS},
            "worker_log_lines": log.count(),
        }
        print(f"(a) idle {len(self.jobs)} jobs over {wall:.0f} s: worker RSS {end.rss_mib:.0f} MiB "
              f"(peak {peak.rss_mib:.0f}), threads {end.threads} (peak {peak.threads}); CPU worker "
              f"{figures['worker_cpu_pct']:.1f} % + Temporal {figures['temporal_cpu_pct']:.1f} % = "
              f"{figures['worker_plus_temporal_cpu_pct']:.1f} % of one core; worker logged "
              f"{figures['worker_log_lines']} lines", flush=True)
        print("    cluster CPU, % of one core: " + ", ".join(
            f"{name} {pct:.1f}" for name, pct in figures["cluster_cpu_pct"].items()), flush=True)
        figures.update(await self.detection(detections))
        return figures

    async def detection(self, trials: int) -> dict[str, Any]:
        """Edit -> canary pods requested on jobs spread over the fleet, one release at a time."""
        picked = [self.jobs[i * len(self.jobs) // trials] for i in range(trials)] if trials else []
        samples: list[float] = []
        history: dict[str, Any] | None = None
        for n, name in enumerate(picked):
            mark = await self._history_mark(name) if n == 0 else None
            await asyncio.sleep(0.5)  # the previous release's last writes are not this one's
            started = time.monotonic()
            self._edit(name)
            seen = await asyncio.to_thread(self._wait_requested, name)
            samples.append(seen - started)
            done = await asyncio.to_thread(self.mirror.wait_all, [name], self._promoted, 300)
            if name not in done:
                raise SystemExit(f"{name}: the detection release was not promoted within 300 s")
            if mark is not None:
                await self._wait_phase(name, Phase.HEALTHY)
                history = await self._history_since(name, mark)
        figures: dict[str, Any] = {}
        if samples:
            figures["detection"] = {"n": len(samples), "p50_ms": round(statistics.median(samples) * 1000, 1),
                                    "p90_ms": round(percentile(samples, 90) * 1000, 1),
                                    "max_ms": round(max(samples) * 1000, 1)}
            d = figures["detection"]
            print(f"(a) detection, edit -> canary pods requested, {len(self.jobs)} jobs attached: n={d['n']} "
                  f"p50={d['p50_ms']:.0f} ms p90={d['p90_ms']:.0f} ms max={d['max_ms']:.0f} ms", flush=True)
        if history is not None:
            self.print_history("(a) one quiet release", history)
            figures["history_one_quiet_release"] = history
        return figures

    async def release(self, tag: str, count: int, timeout: float) -> dict[str, Any]:
        """``count`` jobs released at once; until every one is promoted or ``timeout`` passes."""
        if count > len(self.jobs):
            raise SystemExit(f"{count} releases need at least {count} jobs (--jobs)")
        names = self.jobs[:count]
        mark = await self._history_mark(names[0])
        print(f"({tag}) releasing {count} of {len(self.jobs)} jobs at once "
              f"(steps {' -> '.join(str(s['setWeight']) for s in STEPS)}, {REPLICAS} replicas)", flush=True)
        log = LogLines(self.worker_log)
        loop = asyncio.get_running_loop()
        rpcs_before = read_counts(self.temporal_metrics) if self.temporal_metrics else None
        api_before = self._apiserver_counts()
        with PeakSampler(self.worker_pid) as peak:
            usage = Usage(self.measured())
            edits_began = datetime.now(UTC)
            await asyncio.gather(*(loop.run_in_executor(self.threads, self._edit, name) for name in names))
            edited = time.monotonic() - usage.started
            done = await asyncio.to_thread(self.mirror.wait_all, names, self._promoted, timeout,
                                           progress_printer("promoted", count))
            wall, cpu = usage.cpu()
        rpcs = (difference(rpcs_before, read_counts(self.temporal_metrics), top=25)
                if self.temporal_metrics and rpcs_before is not None else None)
        api_calls = difference(api_before, self._apiserver_counts(), top=30)
        finished = sorted(t - usage.started for t in done.values())
        outcomes, promoted_at = await self._outcomes(names)
        late = 0
        if any(key != "promoted" for key in outcomes):
            # The cluster can show a promotion done a moment before its job records it: look again
            # once the unfinished have had their patience; the jobs' records time the late ones.
            await self._explain_unfinished(names)
            first_look = outcomes.get("promoted", 0)
            outcomes, promoted_at = await self._outcomes(names)
            late = outcomes.get("promoted", 0) - first_look
        # The same wall time as the jobs recorded it (their promotion times, the server's clock).
        job_wall = (max(promoted_at) - edits_began).total_seconds() if promoted_at else None
        history = await self._history_since(names[0], mark)
        figures: dict[str, Any] = {
            "jobs": len(self.jobs), "releases": count, "wall_s": round(wall, 1),
            "wall_by_job_records_s": round(job_wall, 1) if job_wall is not None else None,
            "edits_s": round(edited, 2),
            "promoted_seen_on_cluster": len(done), "outcomes": dict(outcomes),
            "promoted": outcomes.get("promoted", 0), "not_promoted": count - outcomes.get("promoted", 0),
            "promoted_after_the_cluster_showed_it": late,
            "finish_p50_s": round(statistics.median(finished), 1) if finished else None,
            "worker_cpu_s": cpu["worker"], "temporal_cpu_s": round(temporal_cpu(cpu), 2),
            **({"temporal_db_cpu_s": cpu["temporal_db"]} if "temporal_db" in cpu else {}),
            "worker_plus_temporal_cpu_s": round(cpu["worker"] + temporal_cpu(cpu), 2),
            "cluster_cpu_s": {name: s for name, s in cpu.items() if name not in OURS},
            "worker_rss_peak_mib": round(peak.rss_mib, 1), "worker_threads_peak": peak.threads,
            "worker_log_lines": log.count(),
            "history_one_release": history,
            **({"temporal_requests": rpcs} if rpcs else {}),
            "apiserver_requests": api_calls,
        }
        not_promoted = {k: v for k, v in outcomes.items() if k != "promoted"}
        print(f"({tag}) {count} releases: {figures['promoted']} promoted"
              f"{f' ({late} recorded after the cluster showed them done)' if late else ''}"
              f"{', not promoted: ' + str(not_promoted) if not_promoted else ''}; wall {wall:.1f} s "
              f"({figures['wall_by_job_records_s']} s by the jobs' records) "
              f"(edits sent in {edited:.2f} s, half done at {figures['finish_p50_s']} s); CPU worker "
              f"{cpu['worker']:.1f} s + Temporal {temporal_cpu(cpu):.1f} s{db_part(cpu)} = "
              f"{figures['worker_plus_temporal_cpu_s']:.1f} CPU-s; worker peak RSS {peak.rss_mib:.0f} MiB, "
              f"threads {peak.threads}; worker logged {figures['worker_log_lines']} lines", flush=True)
        print("    cluster CPU-s: " + ", ".join(f"{name} {s:.1f}" for name, s in figures["cluster_cpu_s"].items()),
              flush=True)
        self.print_history(f"({tag}) one of the releases", history)
        if rpcs:
            print("    Temporal requests: " + ", ".join(f"{op} {n}" for op, n in rpcs.items()), flush=True)
        print("    API server requests: " + ", ".join(f"{op} {n}" for op, n in api_calls.items()), flush=True)
        return figures

    def close(self) -> None:
        self.mirror.stop()
        self.threads.shutdown(wait=False)
        self.api.close()


def merge_results(figures: dict[str, Any]) -> None:
    """Merge this run's phases into the results file; phases not run keep their earlier figures."""
    known = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({**known, **figures}, indent=2) + "\n")
    print(f"figures written to {RESULTS.relative_to(ROOT)}: {', '.join(figures)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Checked below, not with choices=: argparse checks an empty "*" list against them as one value.
    parser.add_argument("which", nargs="*", help=f"{', '.join(PHASES)} (default: all)")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=200)
    parser.add_argument("--releases-small", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1,
                        help="release phases run this many times back to back: the first release of a job's run "
                             "also records its version markers once (workflow.patched), later ones do not")
    parser.add_argument("--window", type=float, default=60, help="idle measuring window, seconds")
    parser.add_argument("--settle", type=float, default=10, help="quiet time before the idle window, seconds")
    parser.add_argument("--detections", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32, help="Deployments / jobs created at a time")
    parser.add_argument("--timeout", type=float, default=900, help="for the fleet to attach, and for each phase")
    parser.add_argument("--cluster-defaults", action="store_true",
                        help="run the control plane at its components' default client limits")
    parser.add_argument("--worker-log", default="", help="keep the worker's log here (default: the cluster's run dir)")
    parser.add_argument("--temporal", choices=("dev", "postgres"), default="dev",
                        help="the dev server (SQLite in memory; default) or a full server on PostgreSQL "
                             "(build it first: scripts/build-temporal-server.sh)")
    parser.add_argument("--label", default="", help="prefix of the result keys, e.g. the variant measured")
    args = parser.parse_args()
    args.which = args.which or list(PHASES)
    unknown = [name for name in args.which if name not in PHASES]
    if unknown:
        parser.error(f"unknown phase {unknown[0]!r}; choose from {', '.join(PHASES)}")

    settings = ComponentSettings() if args.cluster_defaults else RAISED
    biggest = args.jobs * REPLICAS * 2  # room for every canary at full size
    nodes = max(3, math.ceil(biggest / PODS_PER_NODE))
    print(f"local cluster: {nodes} kwok nodes; component settings:\n  "
          + settings.describe().replace("\n", "\n  "), flush=True)
    prefix = f"{args.label}: " if args.label else ""
    run: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "commit": git_head(),
           "components": settings.as_dict(), "temporal": args.temporal}
    results: dict[str, Any] = {}
    metrics_port = free_port()
    server = (TemporalPostgresServer() if args.temporal == "postgres"
              else TemporalDevServer(extra_args=["--metrics-port", str(metrics_port)]))
    with LocalCluster(nodes=nodes, components=settings) as cluster, server:
        assert server.pid is not None
        db_pid = server.db_pid if isinstance(server, TemporalPostgresServer) else None
        temporal = await Client.connect(server.address, data_converter=pydantic_data_converter)
        env = {**os.environ, "TEMPORAL_ADDRESS": server.address, "KUBECONFIG": str(cluster.kubeconfig)}
        worker_log = Path(args.worker_log) if args.worker_log else cluster.run_dir / "worker.log"
        with worker_log.open("wb") as log:
            worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, stdout=log,
                                      stderr=subprocess.STDOUT)
            bench = FleetBench(cluster, temporal, worker.pid, server.pid, worker_log, args.concurrency, db_pid)
            if isinstance(server, TemporalDevServer):
                bench.temporal_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            try:
                fleet = await bench.attach(args.jobs, args.timeout)
                run["worker_rss_after_attach_mib"] = round(status_field(worker.pid, "VmRSS") / 1024, 1)
                if "idle" in args.which:
                    figures = await bench.idle(args.window, args.detections, args.settle)
                    results[f"{prefix}idle ({args.jobs} jobs)"] = {**run, **fleet, **figures}
                for phase, count in (("releases", args.releases), ("releases-small", args.releases_small)):
                    if phase not in args.which:
                        continue
                    for round_ in range(1, args.rounds + 1):
                        await asyncio.sleep(args.settle)
                        tag = ("b" if phase == "releases" else "c") + (str(round_) if args.rounds > 1 else "")
                        figures = await bench.release(tag, count, args.timeout)
                        again = f", round {round_}" if round_ > 1 else ""
                        results[f"{prefix}releases ({count} of {args.jobs} jobs{again})"] = {**run, **figures}
            finally:
                bench.close()
                worker.terminate()
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(10)
    if results:
        merge_results(results)


if __name__ == "__main__":
    asyncio.run(main())
