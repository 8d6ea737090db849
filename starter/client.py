"""Talking to canary job workflows: start, list, inspect and operate them.

These functions are shared by ``canaryctl``, the HTTP API and its web page, so they never
print and every failure leaves as a typed :class:`~starter.errors.CanaryError` with a one-line
message. Each job is one workflow with a deterministic id (``workflows.spec.workflow_id``), so
a job is always addressed by its Kubernetes namespace and name, never by a run id.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
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
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from starter.connection import ConnectionOverrides, connect_config
from starter.errors import CanaryError, Conflict, InvalidInput, JobEnded, JobNotFound, Unavailable
from workflows import names, search
from workflows.fields import NAME_PATTERN
from workflows.models import (
    CanaryJobInput,
    JobDetails,
    JobVersions,
    OperationRequest,
    OperationResult,
    Phase,
    UpdateRulesRequest,
)
from workflows.spec import JobSpec, older_workflow_ids, workflow_id
from workflows.ui_details import static_summary

CONNECT_TIMEOUT = 10.0
# A query is answered by a worker; without one the server holds the call until this runs out.
QUERY_TIMEOUT = 10.0
QUERY_FIRST_ATTEMPT = 3.0
# Updates are answered once the workflow's handler finished; handlers only change state.
UPDATE_TIMEOUT = 60.0
# A new job takes over its Deployment in one activity: seconds, unless no worker runs.
ATTACH_TIMEOUT = 60.0
# Operations that pass one gate of one release: sent with the release and step they mean.
GATE_OPERATIONS = (names.CONTINUE, names.PROMOTE)
# Failure types the job reports (workflows/canary.py, activities/errors.py), read by type.
INVALID_OPERATION_INPUT = "InvalidOperationInput"
ATTACH_FAILED = "AttachFailed"
WORKLOAD_NOT_FOUND = "WorkloadNotFound"
ROUTER_CONFIG_INVALID = "RouterConfigInvalid"
# Only for a workflow that fails its attach without the activity's failure type.
_MISSING_WORKLOAD = re.compile(r"^refused: workload: Deployment \S+ not found$")

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
    address: str | None = None, namespace: str | None = None, *, timeout: float = CONNECT_TIMEOUT,
    overrides: ConnectionOverrides | None = None, runtime: Runtime | None = None,
) -> Client:
    """Connect with the pydantic converter, which every canary payload needs.

    Where Temporal is comes from :mod:`starter.connection` (the CLI's profile file and
    ``TEMPORAL_*`` variables), with ``address``/``namespace`` and ``overrides`` on top.
    """
    config = connect_config((overrides or ConnectionOverrides()).merged(address=address, namespace=namespace))
    where = config["target_host"]
    try:
        async with asyncio.timeout(timeout):
            return await Client.connect(**config, data_converter=pydantic_data_converter, runtime=runtime)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise Unavailable(f"cannot reach Temporal at {where}: no answer within {timeout:.0f} s") from None
    except (RuntimeError, RPCError, ValueError) as err:
        raise Unavailable(f"cannot reach Temporal at {where}: {_connect_reason(err)}") from None


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


def _namespace_missing(err: RPCError) -> bool:
    # The server says which thing is missing in the status details, not only in its message.
    return any(detail.type_url.endswith(".NamespaceNotFoundFailure") for detail in err.grpc_status.details)


def _rpc_error(client: Client, err: RPCError, missing: CanaryError | None = None, job: str | None = None
               ) -> CanaryError:
    """Turn a gRPC failure into the user's terms: which job, which server, what to do.

    ``missing`` is what a NOT_FOUND means for the call at hand (no such job, or a job that
    ended while we spoke to it).
    """
    message = err.message or str(err)
    if err.status == RPCStatusCode.NOT_FOUND:
        if _namespace_missing(err):
            return Unavailable(f"Temporal namespace {client.namespace!r} not found at {_address(client)}")
        if missing is not None:
            return missing
    if err.status == RPCStatusCode.UNAVAILABLE:
        return Unavailable(f"cannot reach Temporal at {_address(client)}: {message}")
    if err.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
        what = f" for canary job {job}" if job else ""
        return Unavailable(f"no answer from Temporal{what} in time: is the canary worker running?")
    return Unavailable(f"Temporal: {message}")


async def _guard(client: Client, call: Awaitable[T], missing: CanaryError | None = None,
                 job: str | None = None) -> T:
    try:
        return await call
    except RPCError as err:
        raise _rpc_error(client, err, missing, job) from None


# -- finding a job ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Workflow:
    """A job's workflow as found: the handle every later call uses, and what describe said."""

    handle: WorkflowHandle[Any, Any]
    description: WorkflowExecutionDescription

    @property
    def running(self) -> bool:
        return self.description.status in (None, WorkflowExecutionStatus.RUNNING)


async def _find(client: Client, namespace: str, name: str) -> _Workflow | None:
    """The job's workflow: under ``workflow_id``, or under the legacy id while only that one runs.

    Jobs created by older clients run as ``canary-<namespace>-<job>`` until they end; they
    must stay addressable, and a job must never get a second workflow under the new id while
    its old one runs. A running workflow wins over an ended one; among ended ones, the new
    id's. No run id: always the newest run, so continue-as-new and re-applied jobs stay
    addressable.
    """
    ended: _Workflow | None = None
    for workflow_id_ in (workflow_id(namespace, name), *older_workflow_ids(namespace, name)):
        handle = client.get_workflow_handle(workflow_id_)
        try:
            description = await _guard(client, handle.describe(), _NOT_THERE, _job(namespace, name))
        except _NotThere:
            continue
        found = _Workflow(handle, description)
        if found.running:
            return found
        ended = ended or found
    return ended


class _NotThere(CanaryError):
    """Internal: describe found no workflow under this id."""


_NOT_THERE = _NotThere("no such workflow")


async def _workflow(client: Client, namespace: str, name: str) -> _Workflow:
    found = await _find(client, namespace, name)
    if found is None:
        raise JobNotFound(f"no canary job {_job(namespace, name)}")
    return found


@dataclass(frozen=True)
class _Ended:
    """Why a job's workflow ended before it attached, and what kind of failure that is for the caller."""

    reason: str  # "refused: <the job's reason>" or "its workflow was terminated before it attached"
    kind: type[CanaryError]
    field: str | None = None

    def error(self, namespace: str, name: str) -> CanaryError:
        """The answer to ``apply``: the job was refused (or killed) at creation."""
        separator = " " if self.reason.startswith("refused") else ": "
        return self.kind(f"canary job {_job(namespace, name)}{separator}{self.reason}", field=self.field)

    def missing(self, namespace: str, name: str) -> JobNotFound:
        """The answer to a lookup: for the caller such a job does not exist, and this is why."""
        return JobNotFound(f"no canary job {_job(namespace, name)}: {self.reason}")


async def _end_reason(found: _Workflow) -> _Ended:
    """Why a job's workflow ended before it attached: its refusal, typed, or how it ended.

    A missing Deployment is a bad ``workload.name`` (422 in the API), and so is a router the
    cluster cannot carry out (the ``traffic`` field it names); a Deployment that another job
    delivers, or anything else the attach refused, is a conflict.
    """
    status = found.description.status
    if status == WorkflowExecutionStatus.FAILED:
        try:
            await found.handle.result()
        except WorkflowFailureError as failure:
            reason = f"refused: {_failure_message(failure.cause)}"
            types = _attach_failure_types(failure.cause)
            if ROUTER_CONFIG_INVALID in types:
                # The router (or blue-green Services) the spec names does not fit the cluster: a bad field.
                fields = sorted(t for t in types if t.startswith(("traffic", "blueGreen")))
                return _Ended(reason, InvalidInput, fields[0] if fields else "traffic")
            # The second test is for a workflow that does not pass the activity's failure type on.
            if WORKLOAD_NOT_FOUND in types or (not types - {ATTACH_FAILED} and _MISSING_WORKLOAD.search(reason)):
                return _Ended(reason, InvalidInput, "workload.name")
            return _Ended(reason, Conflict)
    how = status.name.lower().replace("_", " ") if status else "ended"
    return _Ended(f"its workflow was {how} before it attached", JobEnded)


def _failure_message(cause: BaseException | None) -> str:
    return cause.message if isinstance(cause, ApplicationError) else str(cause)


def _attach_failure_types(cause: BaseException | None) -> set[str]:
    """Every failure type in the chain, and in its details: what the activity reported."""
    types: set[str] = set()
    while cause is not None:
        if isinstance(cause, ApplicationError):
            types.update(t for t in (cause.type, *cause.details) if isinstance(t, str))
        cause = getattr(cause, "cause", None)
    return types


# -- jobs ------------------------------------------------------------------------------------


class Applied(BaseModel):
    """What ``apply`` did: created the job (and its workflow), or gave a running job new rules."""

    created: bool
    message: str


async def apply_job(client: Client, spec: JobSpec, *, actor: str | None = None,
                    request_id: str | None = None) -> Applied:
    """Create the job's workflow, or hand a running job its new rules; say which happened.

    A job running under either id (see :func:`_find`) gets an ``update-rules`` update; only
    a job with no running workflow is started, under ``workflow_id``, with the FAIL conflict
    policy: if another caller started it a moment ago, we configure theirs instead of
    starting a second run. A job that ends while being configured is started afresh. The
    workload of a running job cannot change this way.
    """
    for _ in range(3):
        found = await _find(client, spec.namespace, spec.name)
        if found is None or not found.running:
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
                    static_summary=static_summary(spec),  # the Temporal UI names the job and its Deployment
                ))
            except WorkflowAlreadyStartedError:
                continue  # started by someone else just now: configure theirs
            await _wait_attached(client, spec)
            return Applied(created=True, message=f"canary job {_job(spec.namespace, spec.name)} created")
        _check_same_workload(found, spec)
        request = UpdateRulesRequest(
            rules=spec.rules.model_dump(mode="json", by_alias=True), actor=actor, request_id=request_id
        )
        try:
            result = await _update(client, found, spec.namespace, spec.name, names.UPDATE_RULES, request,
                                   UPDATE_TIMEOUT)
        except JobEnded:
            continue  # ended between our look and our update: start it afresh
        return Applied(created=False,
                       message=f"canary job {_job(spec.namespace, spec.name)} configured: {result.message}")
    raise Conflict(f"canary job {_job(spec.namespace, spec.name)} keeps ending while being applied")


async def _wait_attached(client: Client, spec: JobSpec, timeout: float = ATTACH_TIMEOUT) -> None:
    """Wait until the new job has taken over its Deployment, or say why it could not.

    A missing Deployment, or one that another job delivers, ends the workflow at once with
    the reason; the caller of ``apply`` must hear it, not find a failed workflow later.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = await _workflow(client, spec.namespace, spec.name)
        if not found.running:
            raise (await _end_reason(found)).error(spec.namespace, spec.name)
        try:
            current = await _query(client, found, spec.namespace, spec.name, names.DETAILS_QUERY, JobDetails)
        except Unavailable:
            current = None
        if current is not None and current.phase != Phase.INITIALIZING:
            return
        await asyncio.sleep(0.2)
    raise Unavailable(f"canary job {_job(spec.namespace, spec.name)} did not attach within {timeout:.0f} s: "
                      "is the canary worker running?")


def _check_same_workload(found: _Workflow, spec: JobSpec) -> None:
    """Refuse to re-point a running job at another Deployment (its state belongs to the old one)."""
    current = found.description.typed_search_attributes.get(search.CANARY_WORKLOAD)
    if current is not None and current != spec.workload.name:
        raise Conflict(
            f"canary job {_job(spec.namespace, spec.name)} delivers Deployment {current}, not "
            f"{spec.workload.name}; delete the job before pointing it at another workload"
        )


def _visibility_query(namespace: str | None, phase: str | None, include_closed: bool) -> str:
    clauses = [f"WorkflowType = '{names.WORKFLOW_TYPE}'"]
    if namespace is not None:
        if not re.fullmatch(NAME_PATTERN, namespace):
            raise InvalidInput(f"invalid namespace {namespace!r}", field="namespace")
        clauses.append(f"{search.CANARY_NAMESPACE.name} = '{namespace}'")
    if phase is not None:
        if phase not in {p.value for p in Phase}:
            raise InvalidInput(f"unknown phase {phase!r}; one of: {', '.join(p.value for p in Phase)}",
                               field="status")
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


async def _query(client: Client, found: _Workflow, namespace: str, name: str, query: str,
                 result_type: type[T]) -> T:
    return await _ask(client, found.handle, namespace, name, query, result_type)


async def _ask(client: Client, handle: WorkflowHandle[Any, Any], namespace: str, name: str, query: str,
               result_type: type[T]) -> T:
    try:
        # A query that arrives with a burst of updates can go unanswered (seen with 20 concurrent
        # continues on one job): it is asked once more after QUERY_FIRST_ATTEMPT, and the second
        # attempt has the rest of the budget (a worker replaying a long history answers by then).
        first = min(QUERY_FIRST_ATTEMPT, QUERY_TIMEOUT / 2)
        for attempt, attempt_timeout in enumerate((first, QUERY_TIMEOUT - first)):
            try:
                answer: T = await handle.query(query, result_type=result_type,
                                                     rpc_timeout=timedelta(seconds=attempt_timeout))
                return answer
            except RPCError as err:
                if err.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED) \
                        or attempt > 0:
                    raise _rpc_error(client, err, JobNotFound(f"no canary job {_job(namespace, name)}"),
                                     _job(namespace, name)) from None
        raise AssertionError("unreachable: the last attempt returns or raises")
    except WorkflowQueryFailedError as err:
        raise CanaryError(
            f"canary job {_job(namespace, name)}: query {query} failed: {err.message}") from None


async def _find_and_query(client: Client, namespace: str, name: str, query: str,
                          result_type: type[T]) -> tuple[_Workflow, T]:
    """The job's workflow and its answer to ``query``, the two asked at once.

    The query goes to the job's workflow id while describe finds which workflow is the job's:
    nearly always that one, so the answer is the one a query after the lookup would give, a
    round trip sooner (every ``continue`` reads the gate first). When the lookup lands on a
    workflow under an older id, or one started after the early query found none, it is asked of
    that workflow then. A job that does not answer fails once, after one query's time.
    """
    handle = client.get_workflow_handle(workflow_id(namespace, name))
    early = asyncio.ensure_future(_ask(client, handle, namespace, name, query, result_type))
    try:
        found = await _workflow(client, namespace, name)
    except BaseException:
        _drop(early)
        raise
    if found.handle.id == handle.id:
        try:
            return found, await early
        except JobNotFound:
            pass
    else:
        _drop(early)
    return found, await _query(client, found, namespace, name, query, result_type)


def _drop(task: asyncio.Future[Any]) -> None:
    """Give up an early answer: cancelled if still on its way, its error (if any) read and let go."""
    task.cancel()
    if task.done() and not task.cancelled():
        task.exception()


async def details(client: Client, namespace: str, name: str) -> JobDetails:
    """The job's current state (the ``details`` query).

    A job whose workflow ended before it attached (refused at creation, or killed) would
    answer "initializing" for ever: for the caller it does not exist, and why is the answer.
    """
    found, result = await _find_and_query(client, namespace, name, names.DETAILS_QUERY, JobDetails)
    if result.phase == Phase.INITIALIZING:
        await _check_attached(found, namespace, name)
    return result


async def versions(client: Client, namespace: str, name: str) -> JobVersions:
    """The job's main version and release history (the ``versions`` query)."""
    found, result = await _find_and_query(client, namespace, name, names.VERSIONS_QUERY, JobVersions)
    if result.stable is None:
        await _check_attached(found, namespace, name)
    return result


async def _check_attached(found: _Workflow, namespace: str, name: str) -> None:
    if not found.running:
        raise (await _end_reason(found)).missing(namespace, name)


async def operate(client: Client, namespace: str, name: str, operation: str, request: OperationRequest,
                  *, timeout: float = UPDATE_TIMEOUT) -> OperationResult:
    """Run one operation as a Temporal update and return what the workflow says it did.

    An update (not a signal) so that the caller learns whether the operation was accepted:
    a validator's rejection comes back typed (:class:`InvalidInput` or :class:`Conflict`).
    ``continue`` and ``promote`` act on one gate: when the caller names neither the release
    nor the step, the ones the job shows now are sent, so that a request that arrives after
    that gate was passed is refused instead of opening the next one.
    """
    if operation not in names.OPERATIONS:
        raise InvalidInput(f"unknown operation {operation!r}; one of: {', '.join(names.OPERATIONS)}",
                           field="operation")
    if operation in GATE_OPERATIONS and request.release is None and request.step is None:
        found, job = await _find_and_query(client, namespace, name, names.DETAILS_QUERY, JobDetails)
        request = request.model_copy(update=gate(job))
    else:
        found = await _workflow(client, namespace, name)
    return await _update(client, found, namespace, name, operation, request, timeout)


async def signal_operation(client: Client, namespace: str, name: str, operation: str,
                           request: OperationRequest) -> None:
    """Send one operation as a signal: no answer, but Temporal records it even while no worker runs.

    For a job whose workflow cannot answer an update (worker down, workflow task failing): the
    job runs the operation, with the same checks as the update, once its worker runs it again;
    a rejection then shows in the job's events.
    """
    if operation not in names.OPERATIONS:
        raise InvalidInput(f"unknown operation {operation!r}; one of: {', '.join(names.OPERATIONS)}",
                           field="operation")
    found = await _workflow(client, namespace, name)
    ended = JobEnded(f"canary job {_job(namespace, name)} has ended; apply it again to restart it")
    if not found.running:
        raise ended
    await _guard(client, found.handle.signal(operation, request), ended, _job(namespace, name))


def gate(job: JobDetails) -> dict[str, int | None]:
    """The release and (1-based) step a ``continue`` or ``promote`` means when sent now."""
    return {"release": job.canary.revision if job.canary else None,
            "step": job.current_step + 1 if job.current_step is not None else None}


RETRIED_UPDATE_ERRORS = (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED)


def _fresh_id() -> str:
    import uuid  # on use: most commands never send an update

    return uuid.uuid4().hex


async def _update(client: Client, found: _Workflow, namespace: str, name: str, operation: str,
                  request: OperationRequest, timeout: float) -> OperationResult:
    ended = JobEnded(f"canary job {_job(namespace, name)} has ended; apply it again to restart it")
    if not found.running:
        raise ended
    # One update id for every attempt: asking again attaches to the update Temporal already
    # holds (or, if it lost it, runs it once more; the job ignores a repeated request id).
    update_id = f"{operation}:{request.request_id or _fresh_id()}"
    try:
        async with asyncio.timeout(timeout):
            delay = 0.05
            while True:
                try:
                    result: OperationResult = await found.handle.execute_update(
                        operation, request, id=update_id, result_type=OperationResult)
                    return result
                except RPCError as err:
                    # Temporal admits 10 updates in flight per workflow: a burst waits its turn. An
                    # update admitted in a burst can also go unanswered (the call is cancelled after
                    # ~10 s, seen with 20 concurrent continues): ask again, within our own timeout.
                    if err.status not in RETRIED_UPDATE_ERRORS:
                        raise _rpc_error(client, err, ended, _job(namespace, name)) from None
                # (Not WorkflowUpdateRPCTimeoutOrCancelledError: that is also how our own timeout's
                # cancellation comes out of the SDK, and must end the loop.)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
    except WorkflowUpdateFailedError as err:
        raise _update_failure(err) from None
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise Unavailable(
            f"canary job {_job(namespace, name)}: {operation} not answered within {timeout:.0f} s; "
            "is the canary worker running? (it may still be applied when a worker picks it up)"
        ) from None


def _update_failure(err: WorkflowUpdateFailedError) -> CanaryError:
    """The validator's (or handler's) own message, typed by the rejection's kind.

    ``InvalidOperationInput`` names the field to fix; every other rejection (``OperationNotAllowed``,
    or anything a validator raised) is the job's state refusing the operation now.
    """
    cause = err.cause
    while isinstance(cause, ApplicationError) and not cause.message and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.message:
        if cause.type == INVALID_OPERATION_INPUT:
            field = cause.details[0] if cause.details and isinstance(cause.details[0], str) else None
            return InvalidInput(cause.message, field=field)
        return Conflict(cause.message)
    return Conflict(str(cause) if cause is not None else str(err))
