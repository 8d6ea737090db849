"""Deliver the shared watch's reports to the job workflows as ``workload-changed`` signals.

Reports arrive from the informer's thread; signals leave from the worker's event loop, a few
at a time. Per job only the newest report waits (a burst of edits to one Deployment is one
signal), and a job's signals are sent one after another, so the newest is also the last one
it receives. A signal that Temporal refuses for a while (server away) is tried again; one to
a job that no longer runs is dropped: its Deployment is nobody's business now.

``canary_detection_latency_seconds`` measures, per delivered signal, the time from the watch
event reaching the worker to the job's workflow holding the change: the part of "how long
until a ``kubectl set image`` starts a release" that this worker adds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from workflows import names
from workflows.models import WorkloadChange
from workflows.spec import older_workflow_ids, workflow_id

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, job
CONCURRENCY = 16
RETRY_FIRST, RETRY_MAX = 0.2, 10.0
DETECTION_LATENCY = "canary_detection_latency_seconds"


class JobNotifier:
    """Coalescing, bounded-concurrency signal sender; start it inside the worker's event loop."""

    def __init__(self, temporal: Client, *, concurrency: int = CONCURRENCY) -> None:
        self._temporal = temporal
        self._concurrency = concurrency
        self._latest: dict[Key, WorkloadChange] = {}
        # When the oldest report not yet delivered arrived, per job: coalesced reports keep it.
        self._since: dict[Key, float] = {}
        runtime = temporal.service_client.config.runtime or Runtime.default()
        self._latency = runtime.metric_meter.create_histogram_float(
            DETECTION_LATENCY, "From a Deployment's watch event to its job's workflow holding the change", "s")
        self._queued: set[Key] = set()
        self._busy: set[Key] = set()
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the senders on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._send_forever()) for _ in range(self._concurrency)]

    async def stop(self) -> None:
        """Stop sending; reports still waiting are dropped (the next start lists again)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def report(self, namespace: str, job: str, change: WorkloadChange) -> None:
        """Queue ``change`` for the job; safe to call from any thread."""
        if not job or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._put, (namespace, job), change)

    def _put(self, key: Key, change: WorkloadChange) -> None:
        self._latest[key] = change
        self._since.setdefault(key, time.monotonic())
        self._enqueue(key)

    def _enqueue(self, key: Key) -> None:
        if key not in self._queued and key not in self._busy:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def _send_forever(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            change = self._latest.pop(key, None)
            if change is None:
                continue
            self._busy.add(key)
            try:
                await self._deliver(key, change)
            finally:
                self._busy.discard(key)
                if key in self._latest:
                    self._enqueue(key)

    async def _deliver(self, key: Key, change: WorkloadChange) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                await self._signal(key, change)
                self._delivered(key)
                return
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:
                    self._since.pop(key, None)
                    log.debug("no running job %s/%s for its Deployment's change", *key)
                    return
                log.warning("signalling job %s/%s failed (%s); again in %.1f s", *key, error, delay)
            if key in self._latest:
                return  # a newer report replaces this one; it is queued after we return
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    def _delivered(self, key: Key) -> None:
        since = self._since.pop(key, None)
        if key in self._latest:
            # A newer report waits; its latency runs from now, the older one's is measured here.
            self._since[key] = time.monotonic()
        if since is not None:
            self._latency.record(time.monotonic() - since, {"kind": "workload-changed"})

    async def _signal(self, key: Key, change: WorkloadChange) -> None:
        namespace, job = key
        # The job runs under today's id, or (created by an older client) under an older one.
        ids = (workflow_id(namespace, job), *older_workflow_ids(namespace, job))
        for index, id_ in enumerate(ids):
            try:
                await self._temporal.get_workflow_handle(id_).signal(names.WORKLOAD_CHANGED, change)
                return
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND or index == len(ids) - 1:
                    raise
