"""The job's product metrics, emitted from workflow code through the SDK's replay-safe meter.

``workflow.metric_meter()`` records nothing while a workflow replays its history, so a
release counted when it ran is not counted again when a worker rebuilds that workflow after
a restart or a cache eviction; the numbers reach Prometheus through the same Runtime endpoint
as the SDK's own metrics. Labels stay bounded: the job's namespace and name, the outcome, the
step kind, the operation. (``namespace``, ``task_queue`` and ``workflow_type`` are the SDK's
labels on every workflow metric, so the Kubernetes namespace is ``job_namespace``, and
Prometheus owns ``job``, so the job is ``job_name``.)

Operations are counted by a worker interceptor rather than in the handlers: it sees every
update and signal by name, and whether its validator refused it, without the handlers knowing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temporalio import workflow
from temporalio.worker import (
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from workflows import names
from workflows.models import Version

RELEASES_STARTED = "canary_releases_started"
RELEASES_FINISHED = "canary_releases_finished"
RELEASE_DURATION = "canary_release_duration_seconds"
STEP_DURATION = "canary_step_duration_seconds"
OPERATIONS = "canary_operations"


def _job_labels(namespace: str, job: str) -> dict[str, str | int | float | bool]:
    return {"job_namespace": namespace, "job_name": job}


def release_started(namespace: str, job: str, version: Version) -> None:
    """A release of ``version`` began (not when a continued-as-new run resumes it)."""
    workflow.metric_meter().create_counter(RELEASES_STARTED, "Releases started, by trigger").add(
        1, {**_job_labels(namespace, job), "trigger": version.trigger.value})


def release_finished(namespace: str, job: str, version: Version) -> None:
    """A release ended: its outcome, its length, and how long each of its steps ran.

    Step durations are taken from the release's own step records, so a step that was cut
    off (``stopped``) or ``failed`` is measured as well as one that ``succeeded``.
    """
    if version.outcome is None:
        return
    meter = workflow.metric_meter()
    labels = _job_labels(namespace, job)
    meter.create_counter(RELEASES_FINISHED, "Releases ended, by outcome").add(
        1, {**labels, "outcome": version.outcome.value})
    if version.finished is not None:
        meter.create_histogram_float(RELEASE_DURATION, "From a release's start to its end", "s").record(
            (version.finished - version.started).total_seconds(), {**labels, "outcome": version.outcome.value})
    steps = meter.create_histogram_float(STEP_DURATION, "How long a release step ran, by kind and result", "s")
    for step in version.steps:
        if step.started is not None and step.finished is not None:
            kind = step.description.split(" ", 1)[0]
            steps.record((step.finished - step.started).total_seconds(),
                         {**labels, "step": kind, "result": step.status.value})


def _count_operation(name: str, via: str, result: str, extra: Mapping[str, str] | None = None) -> None:
    if name not in names.OPERATIONS:
        return
    workflow.metric_meter().create_counter(OPERATIONS, "Operations sent to jobs, by name, channel and result").add(
        1, {"operation": name, "via": via, "result": result, **(extra or {})})


class _OperationCounter(WorkflowInboundInterceptor):
    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        try:
            super().handle_update_validator(input)
        except Exception:
            _count_operation(input.update, "update", "rejected")
            raise

    async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
        try:
            result = await super().handle_update_handler(input)
        except Exception:
            _count_operation(input.update, "update", "failed")
            raise
        _count_operation(input.update, "update", "accepted")
        return result

    async def handle_signal(self, input: HandleSignalInput) -> None:
        # A signal's rejection is recorded as a job event, not raised: it counts as received.
        await super().handle_signal(input)
        _count_operation(input.signal, "signal", "received")


class OperationMetrics(Interceptor):
    """Worker interceptor counting every operation a job receives (``canary_operations``)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        """The inbound interceptor for every workflow of the worker."""
        return _OperationCounter
