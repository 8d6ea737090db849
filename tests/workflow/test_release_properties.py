"""Release safety under any sequence of edits, operations, outages, restarts and time.

A Hypothesis ``RuleBasedStateMachine`` drives one canary job workflow (on Temporal's
time-skipping test server) against an in-memory cluster (``fake_cluster.FakeCluster``):
users edit the image, operators send every operation (valid, stale, invalid, duplicated
at once), the Deployment disappears and comes back, the worker restarts (its workflows
replay from history), and time runs out on timers. After every rule the workflow is let
settle and the invariants of ``invariants.py`` are checked; each violated invariant raises
its own exception type, so Hypothesis shrinks and reports each kind of bug apart.

How async code runs under a synchronous state machine: the Temporal client, the test
server and the workers live on pytest-asyncio's *session* event loop (the ``env``
fixture). The test itself is an async test on that loop; it hands the whole Hypothesis run
to a worker thread (``asyncio.to_thread``) and keeps awaiting it, so the session loop stays
free to run the workers. Every rule then submits its coroutine back to the session loop
with ``asyncio.run_coroutine_threadsafe`` and blocks its own thread on the result, with a
timeout. So every Temporal object is only ever touched on the loop that created it, the
fake cluster is mutated only on that loop too (no locks), and Hypothesis sees plain
synchronous rules. Each example gets a fresh fake, task queue, worker and workflow.

``HYPOTHESIS_PROFILE=thorough`` runs many more and longer examples (see tests/conftest.py);
``CANARY_INVARIANTS=I2,I7`` checks only some invariants, to hunt one bug at a time.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.templates import template_hash, user_template
from tests.temporal_envs import time_skipping_env
from tests.workflow.conftest import job_spec
from tests.workflow.fake_cluster import FakeCluster
from tests.workflow.invariants import (
    Ledger,
    check_alive,
    check_gates,
    check_history,
    check_newest_wins,
    check_reported_matches_cluster,
    check_stable_pods,
    merge_events,
)
from workflows import names
from workflows.canary import CanaryJobWorkflow
from workflows.models import (
    CanaryJobInput,
    JobDetails,
    JobVersions,
    OperationRequest,
    OperationResult,
    Phase,
    RollbackRequest,
    UpdateRulesRequest,
    UpdateVersionRequest,
)

T = TypeVar("T")

CHECKED = frozenset(os.environ.get("CANARY_INVARIANTS", "I1,I2,I3,I4,I6,I7").split(","))
CALL_TIMEOUT = 20.0  # seconds an update or query may take before the job counts as stuck
SETTLE_TIMEOUT = 6.0  # seconds of real time a rule waits for the workflow to come to rest
RULE_TIMEOUT = 60.0  # a rule's coroutine as a whole (the settle included)

GATED = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
STEP_SETS = [
    GATED,
    [{"setWeight": 25}, {"pause": {"duration": "1h"}}, {"setWeight": 50}, {"pause": {}}],
    [{"setWeight": 50}, {"pause": {}}],
]
RULE_SETS = [
    {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 90}, {"pause": {}}]},
    {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]},
    {"steps": [{"pause": {}}]},
    {"steps": [{"setWeight": 40}, {"pause": {"duration": "10m"}}]},
    {"steps": [{"setWeight": 20}, {"pause": {"duration": "3000000d"}}]},
    {"steps": [{"setWeight": 20}, {"pause": {}}], "maxPause": "3000000d"},
    {"steps": []},  # invalid: no steps
    {"steps": [{"setWeight": 150}]},  # invalid: weight above 100
]
KINDS = ["good", "good", "crash", "never", "late2", "late4"]
images = st.builds(lambda kind, version: f"registry.local/web:{kind}-{version}",
                   st.sampled_from(KINDS), st.integers(1, 3))
bad_images = st.sampled_from(["registry.local/web:Bad Tag", "UPPER/web:1", "registry.local/web:"])
# How an operation names its target: not at all, the gate that waits now, or an old one.
NAMING = st.sampled_from(["none", "none", "current", "stale-step", "stale-release"])


class Violation(AssertionError):
    """An invariant does not hold; subclasses tell Hypothesis which one, so bugs are shrunk apart."""


VIOLATIONS: dict[str, type[Violation]] = {
    key: type(f"{key.replace('-named', 'Named')}Violation", (Violation,),
              {"__doc__": f"Invariant {key} does not hold."})
    for key in ("I1", "I2", "I2-named", "I3", "I4", "I6", "I7")
}


class Loop:
    """The session loop, reached from the Hypothesis thread."""

    def __init__(self, env: WorkflowEnvironment, loop: asyncio.AbstractEventLoop) -> None:
        self.env = env
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = RULE_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


async def _bounded(awaitable: Awaitable[T], timeout: float = CALL_TIMEOUT) -> T:
    return await asyncio.wait_for(awaitable, timeout)


class ReleaseMachine(RuleBasedStateMachine):
    """One job under arbitrary inputs; the invariants are checked after every rule."""

    loop: ClassVar[Loop]

    def __init__(self) -> None:
        super().__init__()
        self.fake = FakeCluster()
        self.ledger = Ledger()
        self.queue = f"prop-{uuid.uuid4().hex[:10]}"
        self.worker: Worker | None = None
        self.worker_task: asyncio.Task[None] | None = None
        self.handle: WorkflowHandle[Any, Any] | None = None
        self.details: JobDetails | None = None
        self.versions: JobVersions | None = None
        self.status = "RUNNING"
        self.at_rest = False
        self.event_types: list[str] = []

    # -- plumbing (runs on the session loop) -----------------------------------------------------

    @property
    def env(self) -> WorkflowEnvironment:
        return self.loop.env

    def _do(self, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one rule's action on the session loop, then let the job settle and look at it."""
        self.ledger.rules += 1
        self.fake.step = self.ledger.rules

        async def body() -> None:
            await action()
            await self._settle()
            await self._observe()

        self.loop.run(body())

    async def _start_worker(self) -> None:
        self.worker = Worker(self.env.client, task_queue=self.queue, workflows=[CanaryJobWorkflow],
                             activities=self.fake.activities(), max_cached_workflows=0)
        self.worker_task = asyncio.get_running_loop().create_task(self.worker.run())

    async def _stop_worker(self) -> None:
        if self.worker is not None:
            await _bounded(self.worker.shutdown(), 20)
            self.worker = None

    async def _settle(self) -> None:
        """Wait until the workflow rests, or waits on a poll (a rule may then land mid-poll).

        Resting: no pending activity and the same history length and job details over a few
        looks. Polling: the only pending activities are retries of a readiness poll. Bounded:
        a job that never settles is judged as it is.
        """
        assert self.handle is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        last: tuple[Any, ...] | None = None
        same = 0
        self.at_rest = False
        while loop.time() < deadline:
            await asyncio.sleep(0.04)
            try:
                description = await _bounded(self.handle.describe(), 5)
            except (RPCError, TimeoutError):
                continue
            if description.status is None or description.status.name != "RUNNING":
                return
            raw = description.raw_description
            pending = list(raw.pending_activities)
            polling = bool(pending) and all(a.attempt > 1 for a in pending)
            details = await self._query_details(1.0)
            key = (raw.workflow_execution_info.history_length, len(pending),
                   details.model_dump_json() if details else None)
            same = same + 1 if key == last else 0
            last = key
            if same >= 2 and details is not None and (not pending or polling):
                self.at_rest = not pending
                return

    async def _query_details(self, timeout: float = CALL_TIMEOUT) -> JobDetails | None:
        assert self.handle is not None
        try:
            return await _bounded(self.handle.query(names.DETAILS_QUERY, result_type=JobDetails), timeout)
        except (RPCError, TimeoutError):
            return None

    async def _observe(self) -> None:
        """Read status, details, versions and history; the test server may drop a call under load."""
        for attempt in range(3):
            try:
                await self._observe_once()
                return
            except (RPCError, TimeoutError):
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)

    async def _observe_once(self) -> None:
        assert self.handle is not None
        description = await _bounded(self.handle.describe())
        self.status = description.status.name if description.status is not None else "UNKNOWN"
        self.details = await self._query_details()
        try:
            self.versions = await _bounded(self.handle.query(names.VERSIONS_QUERY, result_type=JobVersions))
        except (RPCError, TimeoutError):
            self.versions = None
        if self.details is not None:
            self.ledger.events, lost = merge_events(self.ledger.events, self.details.events)
            self.ledger.lost_events |= lost
        history = await _bounded(self.handle.fetch_history())
        self.event_types = [EventType.Name(e.event_type) for e in history.events]

    async def _operate(self, operation: str, request: OperationRequest) -> OperationResult | None:
        """Send one update; None if refused. A call the job never answers is recorded as stuck."""
        assert self.handle is not None
        try:
            return await _bounded(self.handle.execute_update(operation, request, result_type=OperationResult))
        except WorkflowUpdateFailedError:
            return None
        except RPCError as error:
            if self.ledger.deleted:
                return None
            self.ledger.stuck.append(f"{operation} failed with {error}")
            return None
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            self.ledger.stuck.append(f"{operation} was not answered within {CALL_TIMEOUT}s")
            return None

    async def _nudge(self) -> None:
        """Tell the job to look at the Deployment again (a webhook would); a dead job hears nothing."""
        if not self._live():
            return
        assert self.handle is not None
        try:
            await _bounded(self.handle.signal(names.WORKLOAD_CHANGED))
        except (RPCError, TimeoutError) as error:
            self.ledger.stuck.append(f"the workload-changed signal failed: {error}")

    def _gate(self) -> tuple[int, int] | None:
        """The gate (release revision, 1-based step) that waits now, if the job is paused."""
        details = self.details
        if details is None or details.phase != Phase.PAUSED or details.canary is None:
            return None
        return details.canary.revision, (details.current_step or 0) + 1

    def _named(self, naming: str, fields: dict[str, Any]) -> bool:
        """Fill ``release``/``step`` as ``naming`` says; True when they name what runs now."""
        details = self.details
        if naming == "none" or details is None or details.canary is None:
            return True
        release, step = details.canary.revision, (details.current_step or 0) + 1
        if naming == "stale-step":
            step = step + 2 if step <= 2 else step - 2
        elif naming == "stale-release":
            release = max(1, release - 1)
        fields.update(release=release, step=step)
        return naming == "current" or (release, step) == (details.canary.revision, (details.current_step or 0) + 1)

    def _request_template(self, image: str) -> str:
        assert self.fake.deployment is not None
        template = user_template(self.fake.deployment.template)
        for container in template["spec"]["containers"]:
            container["image"] = image
        return template_hash(template)

    # -- the rules -------------------------------------------------------------------------------

    @initialize(steps=st.sampled_from(STEP_SETS), first=st.one_of(st.none(), images))
    def start(self, steps: list[dict[str, Any]], first: str | None) -> None:
        """Attach a job to the Deployment; most examples start with a release under way."""
        async def action() -> None:
            await self._start_worker()
            spec = job_spec(steps=steps, progressDeadline="20s")
            self.handle = await self.env.client.start_workflow(
                CanaryJobWorkflow.run, CanaryJobInput(job=spec, watch=False),
                id=f"canary.shop.web-{uuid.uuid4().hex[:8]}", task_queue=self.queue)
            if first is not None:
                await self._settle()
                self.fake.edit_image(first)
                self.ledger.requested.append((self.ledger.rules, self.fake.snapshot().template_hash))
                await self._nudge()

        self._do(action)

    def teardown(self) -> None:
        async def stop() -> None:
            if self.handle is not None:
                try:
                    await _bounded(self.handle.terminate("example over"))
                except (RPCError, TimeoutError):
                    pass
            await self._stop_worker()

        self.loop.run(stop())

    def _live(self) -> bool:
        """Whether operations still make sense. Only what the test itself did decides it:
        a precondition that read the workflow's state would make Hypothesis' draws depend on
        timing, and it could not replay (and shrink) what it found; a workflow that died is
        caught by I3 after the rule that killed it."""
        return not self.ledger.deleted

    @precondition(lambda self: self.fake.deployment is not None)
    @rule(image=images)
    def edit_image(self, image: str) -> None:
        """A user edits the Deployment (``kubectl set image``); a webhook nudges the job."""
        async def action() -> None:
            self.fake.edit_image(image)
            if self._live():
                self.ledger.requested.append((self.ledger.rules, self.fake.snapshot().template_hash))
            await self._nudge()

        self._do(action)

    @precondition(lambda self: self._live())
    @rule(wanted=st.lists(st.one_of(images, images, bad_images), min_size=1, max_size=3))
    def update_version(self, wanted: list[str]) -> None:
        """One or several ``update-version``s back to back (each answered before the next)."""
        async def action() -> None:
            for image in wanted:
                expected = self._request_template(image) if self.fake.deployment is not None else None
                result = await self._operate(names.UPDATE_VERSION, UpdateVersionRequest(image=image))
                if result is not None and expected is not None:
                    self.ledger.requested.append((self.ledger.rules, expected))

        self._do(action)

    @precondition(lambda self: self._live())
    @rule(copies=st.sampled_from([1, 1, 2, 20]), naming=NAMING, with_id=st.booleans())
    def continue_(self, copies: int, naming: str, with_id: bool) -> None:
        """``continue``, possibly sent many times at once (a retrying client, a double click)."""
        async def action() -> None:
            fields: dict[str, Any] = {"request_id": uuid.uuid4().hex} if with_id else {}
            names_now = self._named(naming, fields)
            gate = self._gate()
            results = await asyncio.gather(*(self._operate(names.CONTINUE, OperationRequest(**fields))
                                             for _ in range(copies)))
            if gate is not None and any(r is not None for r in results):
                (self.ledger.continues if names_now else self.ledger.stale_continues)[gate] += 1

        self._do(action)

    @precondition(lambda self: self._live())
    @rule(naming=NAMING)
    def promote(self, naming: str) -> None:
        async def action() -> None:
            fields: dict[str, Any] = {}
            self._named(naming, fields)
            await self._operate(names.PROMOTE, OperationRequest(**fields))

        self._do(action)

    @precondition(lambda self: self._live())
    @rule(naming=NAMING)
    def terminate(self, naming: str) -> None:
        async def action() -> None:
            fields: dict[str, Any] = {"reason": "property test"}
            self._named(naming, fields)
            if await self._operate(names.TERMINATE, OperationRequest(**fields)) is not None:
                self.ledger.terminated_at = self.ledger.rules

        self._do(action)

    @precondition(lambda self: self._live())
    @rule(pick=st.integers(0, 6), skip_steps=st.booleans())
    def rollback(self, pick: int, skip_steps: bool) -> None:
        """Roll back to a known revision (or, for a high ``pick``, one that never existed)."""
        async def action() -> None:
            known = {}
            if self.versions is not None:
                for version in [*self.versions.history, self.versions.stable, self.versions.canary]:
                    if version is not None:
                        known[version.revision] = version.template_hash
            revisions = sorted(known)
            revision = revisions[pick] if pick < len(revisions) else 900 + pick
            result = await self._operate(names.ROLLBACK, RollbackRequest(revision=revision, skip_steps=skip_steps))
            if result is not None and revision in known and self.fake.deployment is not None:
                self.ledger.requested.append((self.ledger.rules, known[revision]))

        self._do(action)

    @precondition(lambda self: self._live())
    @rule(rules=st.sampled_from(RULE_SETS))
    def update_rules(self, rules: dict[str, Any]) -> None:
        async def action() -> None:
            await self._operate(names.UPDATE_RULES, UpdateRulesRequest(rules=rules))

        self._do(action)

    @precondition(lambda self: self._live())
    @rule(really=st.integers(0, 3))
    def delete_job(self, really: int) -> None:
        """``delete`` (drawn rarely: afterwards the example has little left to explore)."""
        async def action() -> None:
            if really == 0 and await self._operate(names.DELETE, OperationRequest()) is not None:
                self.ledger.deleted = True

        self._do(action)

    @precondition(lambda self: self.fake.deployment is not None)
    @rule()
    def delete_deployment(self) -> None:
        async def action() -> None:
            self.fake.delete()
            await self._nudge()

        self._do(action)

    @precondition(lambda self: self.fake.deployment is None)
    @rule(image=images)
    def recreate_deployment(self, image: str) -> None:
        async def action() -> None:
            self.fake.create(FakeCluster.initial_template(image), 4)
            if self._live():
                self.ledger.requested.append((self.ledger.rules, self.fake.snapshot().template_hash))
            await self._nudge()

        self._do(action)

    @precondition(lambda self: not self.ledger.deleted)
    @rule()
    def restart_worker(self) -> None:
        """A worker dies and another takes over the task queue: the workflow replays its history."""
        async def action() -> None:
            await self._stop_worker()
            await self._start_worker()

        self._do(action)

    @precondition(lambda self: not self.ledger.deleted)  # a finished job has no timer left to run out
    @rule(seconds=st.sampled_from([2, 10, 30, 3600, 7200]))
    def let_time_pass(self, seconds: int) -> None:
        async def action() -> None:
            try:
                await asyncio.wait_for(self.env.sleep(timedelta(seconds=seconds)), 10)
            except (RPCError, TimeoutError):
                pass  # the test server skips no time while an activity retries: real time passed instead

        self._do(action)

    # -- the invariants --------------------------------------------------------------------------

    @invariant()
    def release_safety(self) -> None:
        problems = check_alive(self.status, self.details, self.ledger) + check_history(
            self.event_types, self.ledger) + check_gates(self.ledger)
        if self.details is not None and self.versions is not None and self.status == "RUNNING":
            problems += check_stable_pods(self.details, self.versions, self.fake, self.ledger, at_rest=self.at_rest)
            if self.at_rest:
                problems += check_reported_matches_cluster(self.details, self.fake, self.ledger)
                problems += check_newest_wins(self.details, self.versions, self.fake, self.ledger)
        by_key: dict[str, list[str]] = {}
        for problem in problems:
            by_key.setdefault(problem.split(":", 1)[0], []).append(problem)
        for key, found in by_key.items():
            if key.split("-")[0] in CHECKED:
                raise VIOLATIONS[key]("\n".join(found))


@pytest.mark.timeout(3600)
async def test_release_safety_invariants() -> None:
    """No sequence of inputs breaks a release-safety invariant (see invariants.py).

    On a time-skipping server of its own: the rules start and kill workers and skip time in
    ways that can leave a shared server unable to skip time for the tests after it. A
    violation Hypothesis can replay fails the test. One it cannot replay (the same inputs pass
    the second time: the test server's timing, not the workflow) is reported as a warning with
    the whole example, for a hunt with ``HYPOTHESIS_PROFILE=thorough``.
    """
    async with await time_skipping_env() as env:
        machine = type("Release", (ReleaseMachine,), {"loop": Loop(env, asyncio.get_running_loop())})
        run_settings = settings(settings(), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                                # A hunt for some invariants must not replay the failures others stored.
                                **({"database": None} if "CANARY_INVARIANTS" in os.environ else {}))
        try:
            await asyncio.to_thread(run_state_machine_as_test, machine, settings=run_settings)
        except BaseExceptionGroup as found:
            # Several distinct failures come as one group (FlakyFailure is a group too): the
            # ones Hypothesis replayed fail the test, the ones it could not only warn.
            flaky, replayed = found.split(FlakyFailure)
            if replayed is not None:
                raise replayed from None
            warnings.warn(f"release-safety property test: a failure that did not replay: {flaky!r}",
                          stacklevel=1)
