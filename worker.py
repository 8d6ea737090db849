"""The canary-delivery worker: runs job workflows and the Kubernetes activities.

Configuration comes from the usual places: ``TEMPORAL_ADDRESS`` / ``TEMPORAL_NAMESPACE``
(defaults ``127.0.0.1:7233`` / ``default``), ``CANARY_TASK_QUEUE``, ``CANARY_PROMETHEUS_ADDRESS`` (the
Prometheus that analysis queries naming no ``address`` go to) and, for Kubernetes, the
in-cluster service account when running in a pod, else ``KUBECONFIG`` / ``~/.kube/config``.
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
from datetime import timedelta

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.informer import DeploymentInformer
from activities.kube import KubeActivities
from activities.metrics import MetricActivities
from activities.notifier import JobNotifier
from activities.routers.activities import RouterActivities
from activities.webhooks import call_webhook
from starter import lifecycle
from workflows.analysis_spec import cel_environment
from workflows.canary import CanaryJobWorkflow
from workflows.names import TASK_QUEUE

# Activities are short calls and waits of a release (a job's watch is the worker's shared one),
# so this bounds the releases that can wait on pods at once, not the jobs a worker holds.
DEFAULT_ACTIVITY_THREADS = 200
# A job's workflow tasks go to the worker that has it cached; when that worker dies, they wait
# this long before any worker may take them. The SDK's 10 s would delay every job's next step
# (and an edit's detection) by 10 s after a crash; a live worker polls within milliseconds.
STICKY_TIMEOUT = timedelta(seconds=1)


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


def build_worker(temporal: Client, api: k8s.ApiClient, *, task_queue: str = TASK_QUEUE,
                 activity_threads: int = DEFAULT_ACTIVITY_THREADS, prometheus_address: str | None = None) -> Worker:
    """A worker for job workflows, the activities bound to ``api`` (Kubernetes, routers), metrics and webhooks."""
    cel_environment()  # built here, not in the first workflow task that checks a condition
    activities = KubeActivities(api)
    routers = RouterActivities(api)
    metrics = MetricActivities(prometheus_address)
    return Worker(
        temporal,
        task_queue=task_queue,
        workflows=[CanaryJobWorkflow],
        activities=[*activities.all(), *routers.all(), metrics.measure_metric, call_webhook],
        activity_executor=ThreadPoolExecutor(activity_threads, thread_name_prefix="canary-activity"),
        max_concurrent_activities=activity_threads,
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
    )


@asynccontextmanager
async def serve(temporal: Client, api: k8s.ApiClient, *, task_queue: str = TASK_QUEUE,
                activity_threads: int = DEFAULT_ACTIVITY_THREADS, prometheus_address: str | None = None,
                watch_namespaces: Sequence[str] | None = None) -> AsyncIterator[Worker]:
    """Run the worker and its shared watch on the Deployments jobs hold, until the block ends.

    The watch starts once the worker polls, so the first list's reports find a worker to run
    the jobs' workflow tasks; it stops (and its thread is joined) before the worker does.
    """
    worker = build_worker(temporal, api, task_queue=task_queue, activity_threads=activity_threads,
                          prometheus_address=prometheus_address)
    notifier = JobNotifier(temporal)
    informer = DeploymentInformer(api, notifier.report, namespaces=watch_namespaces)
    executor = worker.config()["activity_executor"]
    try:
        async with worker:
            notifier.start()
            informer.start()
            try:
                yield worker
            finally:
                await asyncio.to_thread(informer.stop)
                await notifier.stop()
    finally:
        # The worker has waited for its activities; their threads end here, not at finalization.
        if executor is not None:
            await asyncio.to_thread(executor.shutdown)


async def run(address: str, namespace: str, task_queue: str, kubeconfig: str | None,
              prometheus_address: str | None = None) -> None:
    """Run until SIGINT or SIGTERM, then finish in-flight tasks and stop."""
    temporal = await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logging.info("worker polling %s on %s/%s", task_queue, address, namespace)
    with kubernetes_client(kubeconfig) as api:
        async with serve(temporal, api, task_queue=task_queue, prometheus_address=prometheus_address):
            await stop.wait()


def main() -> None:
    """Entry point of ``canary-worker`` and ``python worker.py``."""
    parser = argparse.ArgumentParser(description="canary-delivery worker")
    parser.add_argument("--address", default=os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233"))
    parser.add_argument("--namespace", default=os.environ.get("TEMPORAL_NAMESPACE", "default"))
    parser.add_argument("--task-queue", default=os.environ.get("CANARY_TASK_QUEUE", TASK_QUEUE))
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--prometheus-address", default=os.environ.get("CANARY_PROMETHEUS_ADDRESS") or None,
                        help="Prometheus for analysis queries that name no address, e.g. http://127.0.0.1:9090")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # lifecycle.run: the SDK's Rust threads leave the interpreter before it finalizes (exit 134 otherwise).
    lifecycle.run(run(args.address, args.namespace, args.task_queue, args.kubeconfig, args.prometheus_address))


if __name__ == "__main__":
    main()
