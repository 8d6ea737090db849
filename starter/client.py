"""Talking to canary job workflows: start, list, inspect and operate them.

These functions are shared by ``canaryctl`` and (later) an HTTP API, so they never print and
every failure leaves as :class:`~starter.errors.CanaryError` with a one-line message. Each job
is one workflow with a deterministic id (``workflows.spec.workflow_id``), so a job is always
addressed by its Kubernetes namespace and name, never by a run id.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from starter.errors import CanaryError
from workflows import names, search
from workflows.models import (
    CanaryJobInput,
    JobDetails,
    JobVersions,
    OperationRequest,
    OperationResult,
    Phase,
    UpdateRulesRequest,
)
from workflows.spec import NAME_PATTERN, JobSpec, workflow_id

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_TEMPORAL_NAMESPACE = "default"
CONNECT_TIMEOUT = 10.0
# A query is answered by a worker; without one the server holds the call until this runs out.
QUERY_TIMEOUT = 10.0
# Updates are answered once the workflow's handler finished; handlers only change state.
UPDATE_TIMEOUT = 60.0
# A new job takes over its Deployment in one activity: seconds, unless no worker runs.
ATTACH_TIMEOUT = 60.0

T = TypeVar("T")


class JobSummary(BaseModel):
    """One line of ``canaryctl list``: what visibility knows without asking a worker."""

    namespace: str
    name: str
    workload: str | None
    phase: str | None
    status: str
    started: datetime
    workflow_id: str


# -- connection ------------------------------------------------------------------------------


async def connect(
    address: str | None = None, namespace: str | None = None, *, timeout: float = CONNECT_TIMEOUT
) -> Client:
    """Connect with the pydantic converter, which every canary payload needs.

    The address comes from the argument, then ``$TEMPORAL_ADDRESS``, then the dev server's
    default; the Temporal namespace from the argument, then ``$TEMPORAL_NAMESPACE``.
    """
    address = address or os.environ.get("TEMPORAL_ADDRESS") or DEFAULT_ADDRESS
    namespace = namespace or os.environ.get("TEMPORAL_NAMESPACE") or DEFAULT_TEMPORAL_NAMESPACE
    try:
        async with asyncio.timeout(timeout):
            return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)
    except TimeoutError:
        raise CanaryError(f"cannot reach Temporal at {address}: no answer within {timeout:.0f} s") from None
    except (RuntimeError, RPCError, ValueError) as err:
        raise CanaryError(f"cannot reach Temporal at {address}: {_connect_reason(err)}") from None


def _connect_reason(err: BaseException) -> str:
    """The useful part of the SDK's connect error (the OS message inside a Rust debug dump)."""
    text = str(err)
    for pattern in (r'message: "([^"]+)"', r'error: "([^"]+)"'):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return text.removeprefix("Failed client connect: ").splitlines()[0] if text else type(err).__name__


def _address(client: Client) -> str:
    return str(client.service_client.config.target_host)


# -- errors ----------------------------------------------------------------------------------


def _job(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _rpc_error(
    client: Client, err: RPCError, namespace: str | None = None, name: str | None = None
) -> CanaryError:
    """Turn a gRPC failure into the user's terms: which job, which server, what to do."""
    message = err.message or str(err)
    lowered = message.lower()
    if err.status == RPCStatusCode.NOT_FOUND:
        if "namespace" in lowered:
            return CanaryError(f"Temporal namespace {client.namespace!r} not found at {_address(client)}")
        if name is not None and namespace is not None:
            if "already completed" in lowered:
                return CanaryError(
                    f"canary job {_job(namespace, name)} has ended; apply it again to restart it")
            return CanaryError(f"no canary job {_job(namespace, name)}")
    if err.status == RPCStatusCode.UNAVAILABLE:
        return CanaryError(f"cannot reach Temporal at {_address(client)}: {message}")
    if err.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
        what = f" for canary job {_job(namespace, name)}" if name and namespace else ""
        return CanaryError(f"no answer from Temporal{what} in time: is the canary worker running?")
    return CanaryError(f"Temporal: {message}")


async def _guard(client: Client, call: Awaitable[T], namespace: str | None = None,
                 name: str | None = None) -> T:
    try:
        return await call
    except RPCError as err:
        raise _rpc_error(client, err, namespace, name) from None


# -- jobs ------------------------------------------------------------------------------------


def _handle(client: Client, namespace: str, name: str) -> WorkflowHandle[Any, Any]:
    # No run id: always the newest run, so continue-as-new and re-applied jobs stay addressable.
    return client.get_workflow_handle(workflow_id(namespace, name))


async def apply_job(client: Client, spec: JobSpec, *, actor: str | None = None,
                    request_id: str | None = None) -> str:
    """Create the job's workflow, or hand a running job its new rules; say which happened.

    Starting with the FAIL conflict policy and catching "already started" has the effect of
    USE_EXISTING (never a second run for one job) while telling us, through the public API,
    that the job existed, so its rules must be sent as an ``update-rules`` update. A job that
    has ended is simply started again. The workload of a running job cannot change this way.
    """
    for _ in range(3):
        try:
            await _guard(client, client.start_workflow(
                names.WORKFLOW_TYPE,
                CanaryJobInput(job=spec),
                id=workflow_id(spec.namespace, spec.name),
                task_queue=names.TASK_QUEUE,
                search_attributes=TypedSearchAttributes([
                    SearchAttributePair(search.CANARY_JOB, spec.name),
                    SearchAttributePair(search.CANARY_NAMESPACE, spec.namespace),
                    SearchAttributePair(search.CANARY_WORKLOAD, spec.workload.name),
                ]),
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            ), spec.namespace, spec.name)
            await _wait_attached(client, spec)
            return f"canary job {_job(spec.namespace, spec.name)} created"
        except WorkflowAlreadyStartedError:
            pass
        await _check_same_workload(client, spec)
        request = UpdateRulesRequest(
            rules=spec.rules.model_dump(mode="json", by_alias=True), actor=actor, request_id=request_id
        )
        try:
            result = await operate(client, spec.namespace, spec.name, names.UPDATE_RULES, request)
        except CanaryError as err:
            if "has ended" in err.message:
                continue  # ended between our start and our update: start it afresh
            raise
        return f"canary job {_job(spec.namespace, spec.name)} configured: {result.message}"
    raise CanaryError(f"canary job {_job(spec.namespace, spec.name)} keeps ending while being applied")


async def _wait_attached(client: Client, spec: JobSpec, timeout: float = ATTACH_TIMEOUT) -> None:
    """Wait until the new job has taken over its Deployment, or say why it could not.

    A missing Deployment, or one that another job delivers, ends the workflow at once with
    the reason; the caller of ``apply`` must hear it, not find a failed workflow later.
    """
    handle = _handle(client, spec.namespace, spec.name)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        description = await _guard(client, handle.describe(), spec.namespace, spec.name)
        if description.status == WorkflowExecutionStatus.FAILED:
            try:
                await handle.result()
            except WorkflowFailureError as failure:
                cause = failure.cause
                message = cause.message if isinstance(cause, ApplicationError) else str(cause)
                raise CanaryError(f"canary job {_job(spec.namespace, spec.name)} refused: {message}") from None
        if description.status != WorkflowExecutionStatus.RUNNING:
            raise CanaryError(f"canary job {_job(spec.namespace, spec.name)} ended while attaching "
                              f"({description.status.name.lower() if description.status else 'unknown'})")
        try:
            current = await details(client, spec.namespace, spec.name)
        except CanaryError:
            current = None
        if current is not None and current.phase != Phase.INITIALIZING:
            return
        await asyncio.sleep(0.2)
    raise CanaryError(f"canary job {_job(spec.namespace, spec.name)} did not attach within {timeout:.0f} s: "
                      "is the canary worker running?")


async def _check_same_workload(client: Client, spec: JobSpec) -> None:
    """Refuse to re-point a running job at another Deployment (its state belongs to the old one)."""
    description = await _guard(client, _handle(client, spec.namespace, spec.name).describe(),
                               spec.namespace, spec.name)
    current = description.typed_search_attributes.get(search.CANARY_WORKLOAD)
    if current is not None and current != spec.workload.name:
        raise CanaryError(
            f"canary job {_job(spec.namespace, spec.name)} delivers Deployment {current}, not "
            f"{spec.workload.name}; delete the job before pointing it at another workload"
        )


def _visibility_query(namespace: str | None, phase: str | None, include_closed: bool) -> str:
    clauses = [f"WorkflowType = '{names.WORKFLOW_TYPE}'"]
    if namespace is not None:
        if not re.fullmatch(NAME_PATTERN, namespace):
            raise CanaryError(f"invalid namespace {namespace!r}")
        clauses.append(f"{search.CANARY_NAMESPACE.name} = '{namespace}'")
    if phase is not None:
        if phase not in {p.value for p in Phase}:
            raise CanaryError(f"unknown phase {phase!r}; one of: {', '.join(p.value for p in Phase)}")
        clauses.append(f"{search.CANARY_PHASE.name} = '{phase}'")
    if not include_closed:
        clauses.append("ExecutionStatus = 'Running'")
    return " AND ".join(clauses)


async def list_jobs(client: Client, namespace: str | None = None, phase: str | None = None, *,
                    include_closed: bool = False) -> list[JobSummary]:
    """Jobs as visibility sees them (eventually consistent, and no worker needed)."""
    query = _visibility_query(namespace, phase, include_closed)
    jobs: list[JobSummary] = []
    try:
        async for execution in client.list_workflows(query):
            attributes = execution.typed_search_attributes
            job_ns = attributes.get(search.CANARY_NAMESPACE)
            job_name = attributes.get(search.CANARY_JOB)
            jobs.append(JobSummary(
                namespace=job_ns or "?",
                name=job_name or execution.id,
                workload=attributes.get(search.CANARY_WORKLOAD),
                phase=attributes.get(search.CANARY_PHASE),
                status=execution.status.name.lower() if execution.status else "unknown",
                started=execution.start_time,
                workflow_id=execution.id,
            ))
    except RPCError as err:
        raise _rpc_error(client, err) from None
    return sorted(jobs, key=lambda job: (job.namespace, job.name, job.started))


async def _query(client: Client, namespace: str, name: str, query: str, result_type: type[T]) -> T:
    handle = _handle(client, namespace, name)
    try:
        return await _guard(client, handle.query(
            query, result_type=result_type, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT)
        ), namespace, name)
    except WorkflowQueryFailedError as err:
        raise CanaryError(
            f"canary job {_job(namespace, name)}: query {query} failed: {err.message}") from None


async def details(client: Client, namespace: str, name: str) -> JobDetails:
    """The job's current state (the ``details`` query)."""
    return await _query(client, namespace, name, names.DETAILS_QUERY, JobDetails)


async def versions(client: Client, namespace: str, name: str) -> JobVersions:
    """The job's main version and release history (the ``versions`` query)."""
    return await _query(client, namespace, name, names.VERSIONS_QUERY, JobVersions)


async def operate(client: Client, namespace: str, name: str, operation: str, request: OperationRequest,
                  *, timeout: float = UPDATE_TIMEOUT) -> OperationResult:
    """Run one operation as a Temporal update and return what the workflow says it did.

    An update (not a signal) so that the caller learns whether the operation was accepted:
    a validator's rejection comes back as its own message.
    """
    if operation not in names.OPERATIONS:
        raise CanaryError(f"unknown operation {operation!r}; one of: {', '.join(names.OPERATIONS)}")
    handle = _handle(client, namespace, name)
    try:
        async with asyncio.timeout(timeout):
            return await _guard(client, handle.execute_update(
                operation, request, result_type=OperationResult
            ), namespace, name)
    except WorkflowUpdateFailedError as err:
        raise _update_failure(err) from None
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise CanaryError(
            f"canary job {_job(namespace, name)}: {operation} not answered within {timeout:.0f} s; "
            "is the canary worker running? (it may still be applied when a worker picks it up)"
        ) from None


def _update_failure(err: WorkflowUpdateFailedError) -> CanaryError:
    """The validator's (or handler's) own message and kind, without the SDK's wrapping."""
    cause = err.cause
    while isinstance(cause, ApplicationError) and not cause.message and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.message:
        field = cause.details[0] if cause.details and isinstance(cause.details[0], str) else None
        return CanaryError(cause.message, kind=cause.type, field=field)
    return CanaryError(str(cause) if cause is not None else str(err))
