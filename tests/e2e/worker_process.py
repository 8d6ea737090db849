"""The production worker as its own process, so a test can kill it the way an OOM kill or a
node loss would (SIGKILL: no cleanup, running activity attempts simply vanish)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle

from workflows.canary import CanaryJobWorkflow
from workflows.models import CanaryJobInput
from workflows.spec import JobSpec, workflow_id

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """``worker.py`` on a task queue of its own, which no in-process test worker polls."""

    def __init__(self, address: str, kubeconfig: Path, log: Path, queue: str | None = None) -> None:
        self.address, self.kubeconfig, self.log = address, kubeconfig, log
        self.queue = queue or f"kill-{uuid.uuid4().hex[:8]}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "TEMPORAL_ADDRESS": self.address, "CANARY_TASK_QUEUE": self.queue,
               "KUBECONFIG": str(self.kubeconfig)}
        self.process = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env,
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def kill(self) -> None:
        """SIGKILL and reap: the worker gets no chance to hand anything back."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """kill -9, then a new worker at once: what a supervisor does after a crash."""
        self.kill()
        self.start()

    async def crash_holding(self, handle: WorkflowHandle[CanaryJobWorkflow, str], activity: str,
                            within: float = 10.0) -> bool:
        """kill -9 the worker while it holds an attempt of ``activity``, then start a new one.

        Poll-style activities run for milliseconds, so a plain kill nearly always lands between
        attempts. Frozen (SIGSTOP), the worker's open long-polls still take the next attempt from
        the server and never run it: killed then, that attempt is lost the way a crash mid-call
        loses it. Returns whether an attempt was held (else it is a plain crash after ``within``).
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        held = False
        while not held and loop.time() < deadline:
            held = activity in await running_activities(handle)
            if not held:
                await asyncio.sleep(0.05)
        self.restart()
        return held

    async def start_job(self, temporal: Client, spec: JobSpec) -> WorkflowHandle[CanaryJobWorkflow, str]:
        """Start the job on this worker's queue under the id every client uses for it."""
        return await temporal.start_workflow(CanaryJobWorkflow.run, CanaryJobInput(job=spec),
                                             id=workflow_id(spec.namespace, spec.name), task_queue=self.queue)


async def scheduled_writes(handle: WorkflowHandle[CanaryJobWorkflow, str]) -> Counter[str]:
    """How often each activity was scheduled, keyed ``name:replicas`` (a shift: ``name:canary/stable[+prepare]``).

    Retries of one attempt do not schedule again, so a count above one means the workflow
    itself decided to do that write twice (a step replayed after a crash, say).
    """
    scheduled: Counter[str] = Counter()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            payload = json.loads(attributes.input.payloads[0].data) if attributes.input.payloads else {}
            size = payload.get("replicas", "")
            if "canary" in payload:  # shift_replicas: both sides, "-" for one it leaves alone
                size = f"{payload['canary']}/{'-' if payload.get('stable') is None else payload['stable']}"
                if payload.get("prepare") is not None:
                    size += "+prepare"  # the release's first step also set the canary's template
            scheduled[f"{attributes.activity_type.name}:{size}"] += 1
    return scheduled


async def running_activities(handle: WorkflowHandle[CanaryJobWorkflow, str]) -> list[str]:
    """Activities a worker has picked up and not finished: what a crash of that worker loses."""
    description = await handle.describe()
    return [pending.activity_type.name for pending in description.raw_description.pending_activities
            if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED]
