"""Time-skipping Temporal environment and a worker around the in-memory Kubernetes port."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.temporal_envs import local_env, time_skipping_env
from tests.workflow.fake_kube import FakeKube
from workflows import names
from workflows.canary import CanaryJobWorkflow
from workflows.models import CanaryJobInput, JobDetails, JobVersions, OperationRequest, OperationResult
from workflows.spec import JobSpec

T = TypeVar("T")

# Temporal's time-skipping test server sometimes stops answering queries and sleeps right
# around a continue-as-new (a signal racing the hop is lost, a query or a sleep hangs until its
# RPC gives up), where the real server (tests/e2e/test_continue_as_new.py) does not. A test that
# hops is marked with this: rerun, on a fresh server, only for those errors, never for an
# assertion about the job.
HOPS = pytest.mark.flaky(reruns=2, only_rerun=["TestServerStuck", "RPCError"])


class TestServerStuck(AssertionError):
    """The test server did not answer a query for the whole wait (see ``HOPS``)."""


@pytest_asyncio.fixture
async def env(request: pytest.FixtureRequest) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own; the dev server for tests marked ``real_server``.

    Time is global to a test server: one test's leftovers (an activity still in flight, a
    workflow task its stopped worker never completed) held the clock of the next test's
    ``env.sleep`` until the RPC gave up. A server starts in about 0.1 s, so each test gets one.
    A test whose point is a continue-as-new in the middle of a release, with queries on both
    sides of it, runs on the dev server (see ``HOPS``), as long as its timers are seconds.
    """
    start = local_env if request.node.get_closest_marker("real_server") else time_skipping_env
    async with await start() as environment:
        yield environment


@pytest.fixture
async def apply_worker(env: WorkflowEnvironment) -> AsyncIterator[FakeKube]:
    """A worker on the job task queue, so ``starter.client.apply_job`` runs as it does for a user."""
    kube = FakeKube()
    worker = Worker(env.client, task_queue=names.TASK_QUEUE, workflows=[CanaryJobWorkflow],
                    activities=kube.activities(), activity_executor=ThreadPoolExecutor(4))
    task = asyncio.get_running_loop().create_task(worker.run())
    yield kube
    await worker.shutdown()
    await task


def job_spec(**overrides: Any) -> JobSpec:
    spec: dict[str, Any] = {
        "name": "web", "namespace": "shop", "workload": {"name": "web"},
        "steps": [{"setWeight": 25}, {"pause": {"duration": "1h"}}, {"setWeight": 50}, {"pause": {}}],
        "progressDeadline": "30s",
    }
    spec.update(overrides)
    return JobSpec.model_validate(spec)


@dataclass
class Job:
    """A running job workflow under test, with its fake cluster."""

    env: WorkflowEnvironment
    handle: WorkflowHandle[Any, Any]
    kube: FakeKube

    @property
    def client(self) -> Client:
        return self.env.client

    async def details(self) -> JobDetails:
        return await self.handle.query(names.DETAILS_QUERY, result_type=JobDetails)

    async def versions(self) -> JobVersions:
        return await self.handle.query(names.VERSIONS_QUERY, result_type=JobVersions)

    async def operate(self, operation: str, request: OperationRequest | None = None) -> OperationResult:
        return await self.handle.execute_update(operation, request or OperationRequest(),
                                                result_type=OperationResult)

    async def edit_image(self, image: str) -> None:
        self.kube.edit_image(image)
        await self.handle.signal(names.WORKLOAD_CHANGED)

    async def wait_for(self, check: Callable[[JobDetails], bool], what: str, timeout: float = 20) -> JobDetails:
        return await eventually(self.details, check, what, timeout)


async def eventually(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], what: str,
                     timeout: float = 20) -> T:
    deadline = asyncio.get_running_loop().time() + timeout

    stuck = False  # the last query went unanswered

    async def attempt() -> T | None:
        nonlocal stuck
        try:
            value = await probe()
        except RPCError as error:
            # A query that lands while the job continues-as-new waits for the new run's first
            # task; under load that can exceed the query deadline. Ask again.
            if not any(sign in str(error) for sign in ("deadline", "Timeout expired", "h2 protocol")):
                raise
            stuck = True
            return None
        stuck = False
        return value

    value = await attempt()
    while value is None or not check(value):
        if asyncio.get_running_loop().time() > deadline:
            if stuck:
                raise TestServerStuck(f"queries went unanswered while waiting for {what}; last answer: {value!r}")
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.05)
        value = await attempt()
    return value


@pytest_asyncio.fixture
async def start_job(env: WorkflowEnvironment) -> AsyncIterator[Callable[..., Awaitable[Job]]]:
    """Start a job workflow on a fresh task queue, with a worker around a FakeKube.

    Watch off unless ``watch=True``: then the job follows the shared watch's reports, which the
    test sends itself (``workload-changed`` with a WorkloadChange).
    """
    workers: list[Worker] = []
    handles: list[WorkflowHandle[Any, Any]] = []

    async def start(kube: FakeKube | None = None, spec: JobSpec | None = None, **input_fields: Any) -> Job:
        kube = kube or FakeKube()
        queue = f"q-{uuid.uuid4().hex[:8]}"
        worker = Worker(env.client, task_queue=queue, workflows=[CanaryJobWorkflow], activities=kube.activities(),
                        activity_executor=ThreadPoolExecutor(4))
        workers.append(worker)
        asyncio.get_running_loop().create_task(worker.run())
        spec = spec or job_spec()
        handle = await env.client.start_workflow(
            CanaryJobWorkflow.run, CanaryJobInput(job=spec, **{"watch": False, **input_fields}),
            id=f"canary-{spec.namespace}-{spec.name}-{uuid.uuid4().hex[:6]}", task_queue=queue,
        )
        handles.append(handle)
        return Job(env, handle, kube)

    yield start
    for handle in handles:
        try:
            await handle.terminate("test over")
        except Exception:
            pass
    for worker in workers:
        await worker.shutdown()

