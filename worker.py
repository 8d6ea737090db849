"""The canary-delivery worker: runs job workflows and the Kubernetes activities.

Configuration comes from the usual places: Temporal from the Temporal CLI's profile file and
``TEMPORAL_*`` variables (``TEMPORAL_PROFILE``, ``TEMPORAL_ADDRESS``, ``TEMPORAL_API_KEY``,
``TEMPORAL_TLS_*``; see :mod:`starter.connection`), flags on top, ``CANARY_TASK_QUEUE``,
``CANARY_PROMETHEUS_ADDRESS`` (the Prometheus that analysis queries naming no ``address`` go to) and,
for Kubernetes, the in-cluster service account when running in a pod, else ``KUBECONFIG`` / ``~/.kube/config``.
``CANARY_METRICS_ADDRESS`` (e.g. ``0.0.0.0:9464``) serves Prometheus ``/metrics``: the SDK's and the
product's (``workflows.telemetry``), ``CANARY_HEALTH_ADDRESS`` the probes (``worker_health``), and
``CANARY_SHUTDOWN_GRACE`` is how long SIGTERM lets running activities finish.
The API client is built here, once, outside the workflow sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.blue_green import BlueGreenActivities
from activities.informer import DeploymentInformer
from activities.kube import DeploymentCache, KubeActivities
from activities.metrics import MetricActivities
from activities.notifier import JobNotifier
from activities.routers.activities import RouterActivities
from activities.webhooks import call_webhook
from starter import lifecycle
from starter.connection import ConnectionOverrides, connect_config, describe, metrics_runtime, overrides_from_args
from starter.connection import add_arguments as add_connection_arguments
from starter.errors import CanaryError
from worker_health import HealthServer, WorkerChecks
from workflows.analysis_spec import cel_environment
from workflows.canary import CanaryJobWorkflow
from workflows.names import TASK_QUEUE
from workflows.telemetry import OperationMetrics

# Activities are short calls and waits of a release (a job's watch is the worker's shared one),
# so this bounds the releases that can wait on pods at once, not the jobs a worker holds.
DEFAULT_ACTIVITY_THREADS = 200
# Job workflows kept in memory between their tasks, about 0.06 MiB each (its state and its
# sandbox) now that they share the workflow module: 1000 cached cost a worker ~40 MiB more than
# 400 (bench/fleet_bench.py). A job evicted from it replays its history on its next task (an
# edit, an operation), which costs milliseconds; jobs in a release stay cached, being the most
# recently used.
DEFAULT_CACHED_WORKFLOWS = 1000
# The sandbox imports a workflow's module afresh for every run it holds: ~0.34 MiB of code objects
# per cached job for workflows/canary.py and blue_green.py (the rest of workflows/ is already
# passed through). Shared here, one copy serves every job. The sandbox's restrictions and global
# state isolation guarded only those two modules' own lines, which import nothing non-deterministic
# and keep no mutable globals; the tests run them in the full sandbox (their workers use the
# default runner), so a clock or I/O call slipped into them still fails there.
SHARED_WORKFLOW_MODULES = ("workflows",)
# A job's workflow tasks go to the worker that has it cached; when that worker dies, they wait
# this long before any worker may take them. The SDK's 10 s would delay every job's next step
# (and an edit's detection) by 10 s after a crash; a live worker polls within milliseconds.
STICKY_TIMEOUT = timedelta(seconds=1)
# On SIGTERM running activities get this long to finish before they are cancelled: activities
# are single Kubernetes calls or short waits, so a write half done is rare, and a cancelled one
# is retried by the next worker (the chart's terminationGracePeriodSeconds must exceed it).
DEFAULT_SHUTDOWN_GRACE = 20.0


def kubernetes_client(kubeconfig: str | None = None, *, pool_size: int = DEFAULT_ACTIVITY_THREADS) -> k8s.ApiClient:
    """In-cluster config inside a pod, else the kubeconfig file.

    The connection pool holds ``pool_size`` connections, one per activity thread: with the
    client's default of 10, a busy worker opened and discarded a connection per call
    ("Connection pool is full") by the hundred.
    """
    configuration = k8s.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(config_file=kubeconfig or os.environ.get("KUBECONFIG"),
                                    client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return k8s.ApiClient(configuration)


# A step's activity learns of a cancellation only from a heartbeat's answer: the longest an
# interrupt (terminate, promote, new rules, delete) waits for a running step. Each heartbeat is
# also a write on the Temporal server: at 1 s they were half its writes during a fleet's
# releases (bench/fleet_bench.py counts them); 2 s halves that and keeps interrupts prompt.
HEARTBEAT_THROTTLE = timedelta(seconds=2)
# Above this the SDK sends them every 0.8 x the waits' heartbeat timeout (5 s) anyway.
MAX_HEARTBEAT_SECONDS = 4.0


def build_worker(temporal: Client, api: k8s.ApiClient, *, task_queue: str = TASK_QUEUE,
                 activity_threads: int = DEFAULT_ACTIVITY_THREADS, prometheus_address: str | None = None,
                 shutdown_grace: float = 0.0, cache: DeploymentCache | None = None,
                 set_cache: DeploymentCache | None = None, cached_workflows: int = DEFAULT_CACHED_WORKFLOWS,
                 heartbeat_every: timedelta = HEARTBEAT_THROTTLE) -> Worker:
    """A worker for job workflows, the activities bound to ``api`` (Kubernetes, routers, Services), metrics, webhooks.

    ``cache``, ``set_cache``: the worker's informers, whose copies of the Deployments and of the
    canary ReplicaSets the waits read.
    """
    cel_environment()  # built here, not in the first workflow task that checks a condition
    activities = KubeActivities(api, cache=cache, set_cache=set_cache)
    routers = RouterActivities(api)
    blue_green = BlueGreenActivities(api)
    metrics = MetricActivities(prometheus_address)
    return Worker(
        temporal,
        task_queue=task_queue,
        workflows=[CanaryJobWorkflow],
        activities=[*activities.all(), *routers.all(), *blue_green.all(), metrics.measure_metric, call_webhook],
        activity_executor=ThreadPoolExecutor(activity_threads, thread_name_prefix="canary-activity"),
        max_concurrent_activities=activity_threads,
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        max_cached_workflows=cached_workflows,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*SHARED_WORKFLOW_MODULES)),
        interceptors=[OperationMetrics()],
        graceful_shutdown_timeout=timedelta(seconds=shutdown_grace),
        # A step runs as one activity, and the workflow waits for it to stop when an operator
        # terminates, promotes or changes the rules: the cancellation arrives with a heartbeat's
        # answer, so heartbeats go out every HEARTBEAT_THROTTLE, not every 0.8 x heartbeat timeout.
        max_heartbeat_throttle_interval=heartbeat_every,
    )


@asynccontextmanager
async def serve(temporal: Client, api: k8s.ApiClient, *, task_queue: str = TASK_QUEUE,
                activity_threads: int = DEFAULT_ACTIVITY_THREADS, prometheus_address: str | None = None,
                watch_namespaces: Sequence[str] | None = None, shutdown_grace: float = 0.0,
                cached_workflows: int = DEFAULT_CACHED_WORKFLOWS,
                heartbeat_every: timedelta = HEARTBEAT_THROTTLE) -> AsyncIterator[Worker]:
    """Run the worker and its shared watch on the Deployments jobs hold, until the block ends.

    The watch starts once the worker polls, so the first list's reports find a worker to run
    the jobs' workflow tasks; it stops (and its thread is joined) before the worker does.
    """
    notifier = JobNotifier(temporal)
    informer = DeploymentInformer(api, notifier.report, namespaces=watch_namespaces)
    canaries = DeploymentInformer(api, None, namespaces=watch_namespaces, replica_sets=True)
    worker = build_worker(temporal, api, task_queue=task_queue, activity_threads=activity_threads,
                          prometheus_address=prometheus_address, shutdown_grace=shutdown_grace, cache=informer,
                          set_cache=canaries, cached_workflows=cached_workflows, heartbeat_every=heartbeat_every)
    executor = worker.config()["activity_executor"]
    try:
        async with worker:
            notifier.start()
            informer.start()
            canaries.start()
            try:
                yield worker
            finally:
                await asyncio.to_thread(canaries.stop)
                await asyncio.to_thread(informer.stop)
                await notifier.stop()
    finally:
        # The worker has waited for its activities; their threads end here, not at finalization.
        if executor is not None:
            await asyncio.to_thread(executor.shutdown)


@dataclass(frozen=True)
class ServeOptions:
    """How ``canary-worker`` runs beside its Temporal connection (flags or ``CANARY_*``)."""

    task_queue: str = TASK_QUEUE
    kubeconfig: str | None = None
    prometheus_address: str | None = None
    metrics_address: str | None = None
    health_address: str | None = None
    watch_namespaces: tuple[str, ...] | None = None
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    cached_workflows: int = DEFAULT_CACHED_WORKFLOWS
    heartbeat_every: timedelta = HEARTBEAT_THROTTLE


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "0.0.0.0", int(port)


async def run(overrides: ConnectionOverrides, options: ServeOptions) -> None:
    """Run until SIGINT or SIGTERM, then let running activities finish (up to the grace) and stop."""
    config = connect_config(overrides)
    runtime = metrics_runtime(options.metrics_address, service="canary-worker")
    temporal = await Client.connect(**config, data_converter=pydantic_data_converter, runtime=runtime)
    api = kubernetes_client(options.kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logging.info("worker polling %s on %s", options.task_queue, describe(config))
    with api:
        async with serve(temporal, api, task_queue=options.task_queue, prometheus_address=options.prometheus_address,
                         watch_namespaces=options.watch_namespaces, shutdown_grace=options.shutdown_grace,
                         cached_workflows=options.cached_workflows,
                         heartbeat_every=options.heartbeat_every) as worker:
            health = None
            if options.health_address:
                health = HealthServer(WorkerChecks(temporal, api, worker), *_host_port(options.health_address))
                await health.start()
            await stop.wait()
            logging.info("stopping: running activities get up to %.0f s to finish", options.shutdown_grace)
            if health is not None:
                await health.stop()


def main() -> None:
    """Entry point of ``canary-worker`` and ``python worker.py``."""
    parser = argparse.ArgumentParser(description="canary-delivery worker")
    add_connection_arguments(parser)
    # The worker's first flag for the Temporal namespace, kept for scripts that use it.
    parser.add_argument("--namespace", dest="temporal_namespace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--task-queue", default=os.environ.get("CANARY_TASK_QUEUE", TASK_QUEUE))
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--prometheus-address", default=os.environ.get("CANARY_PROMETHEUS_ADDRESS") or None,
                        help="Prometheus for analysis queries that name no address, e.g. http://127.0.0.1:9090")
    parser.add_argument("--metrics-address", default=os.environ.get("CANARY_METRICS_ADDRESS") or None,
                        help="serve Prometheus /metrics on host:port, e.g. 0.0.0.0:9464 (default: off)")
    parser.add_argument("--health-address", default=os.environ.get("CANARY_HEALTH_ADDRESS") or None,
                        help="serve /livez and /readyz on host:port, e.g. 0.0.0.0:8081 (default: off)")
    parser.add_argument("--watch-namespace", action="append", dest="watch_namespaces",
                        default=[n for n in os.environ.get("CANARY_WATCH_NAMESPACES", "").split(",") if n] or None,
                        help="watch Deployments in this namespace only (repeat; default: all namespaces)")
    parser.add_argument("--shutdown-grace", type=float,
                        default=float(os.environ.get("CANARY_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE)),
                        help="seconds running activities get to finish after SIGTERM (default: %(default)s)")
    parser.add_argument("--cached-workflows", type=int,
                        default=os.environ.get("CANARY_CACHED_WORKFLOWS", str(DEFAULT_CACHED_WORKFLOWS)),
                        help="job workflows kept in memory between tasks, about 0.06 MiB each (default: %(default)s)")
    parser.add_argument("--heartbeat-seconds", type=float,
                        # A string default goes through ``type`` too: a bad variable is a usage error.
                        default=os.environ.get("CANARY_HEARTBEAT_SECONDS", str(HEARTBEAT_THROTTLE.total_seconds())),
                        help="how often a running step heartbeats: the longest an interrupt (terminate, promote, "
                             "new rules) waits for it, and one Temporal write each; more than 0, at most "
                             f"{MAX_HEARTBEAT_SECONDS:g} (default: %(default)s)")
    args = parser.parse_args()
    if not 0 < args.heartbeat_seconds <= MAX_HEARTBEAT_SECONDS:
        parser.error(f"--heartbeat-seconds (or CANARY_HEARTBEAT_SECONDS) must be more than 0 and at most "
                     f"{MAX_HEARTBEAT_SECONDS:g}, not {args.heartbeat_seconds:g}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        overrides = overrides_from_args(args)
        connect_config(overrides)
    except CanaryError as err:
        parser.exit(2, f"canary-worker: error: {err.message}\n")
    options = ServeOptions(
        task_queue=args.task_queue, kubeconfig=args.kubeconfig, prometheus_address=args.prometheus_address,
        metrics_address=args.metrics_address, health_address=args.health_address,
        watch_namespaces=tuple(args.watch_namespaces) if args.watch_namespaces else None,
        shutdown_grace=args.shutdown_grace, cached_workflows=args.cached_workflows,
        heartbeat_every=timedelta(seconds=args.heartbeat_seconds))
    # lifecycle.run: the SDK's Rust threads leave the interpreter before it finalizes (exit 134 otherwise).
    lifecycle.run(run(overrides, options))


if __name__ == "__main__":
    main()
