"""The canary delivery job: one long-lived Temporal workflow per job.

The workflow serialises everything that happens to one Deployment: edits seen by the watch,
operator operations, timers. Handlers only record intent (state changes, an interrupt); the
main loop acts on it, so every cluster write happens in one place and in one order. A
release is a plain coroutine inside the main loop; operations that must stop it (terminate,
promote, a newer version, new rules, delete) raise :class:`Interrupted` out of whatever it
awaits, and the release cleans up before the main loop moves on.

No I/O here: activities are called by name, and only pure modules are imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from enum import IntEnum
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from workflows import names
    from workflows.images import validate_image
    from workflows.models import (
        MAX_EVENTS,
        MAX_VERSIONS,
        AttachRequest,
        CanaryJobInput,
        CanaryTemplateRequest,
        DetachRequest,
        Event,
        JobDetails,
        JobState,
        JobVersions,
        OperationRequest,
        OperationResult,
        Outcome,
        Phase,
        PromoteRequest,
        ReadyRequest,
        RollbackRequest,
        RolloutRequest,
        ScaleRequest,
        SetImageRequest,
        StepState,
        StepStatus,
        Trigger,
        UpdateRulesRequest,
        UpdateVersionRequest,
        Version,
        WatchRequest,
        WorkloadChange,
        WorkloadRequest,
        WorkloadSnapshot,
        WriteTemplateRequest,
        elapsed,
        request_key,
    )
    from workflows.policy import (
        canary_replicas_for_scale,
        canary_replicas_for_weight,
        effective_weight,
        resume_index,
    )
    from workflows.search import CANARY_JOB, CANARY_NAMESPACE, CANARY_PHASE, CANARY_WORKLOAD
    from workflows.spec import (
        DeliveryRules,
        JobSpec,
        PauseStep,
        PauseTimeoutAction,
        SetCanaryScaleStep,
        SetWeightStep,
        describe_step,
    )

T = TypeVar("T")

API_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                        maximum_interval=timedelta(seconds=30))
# Readiness is polled by retrying the activity: retries cost no history events.
POLL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=1.0,
                         maximum_interval=timedelta(seconds=1))
API_TIMEOUT = timedelta(seconds=30)
# One readiness check; short, so an attempt lost with a dead worker is retried soon.
POLL_ATTEMPT_TIMEOUT = timedelta(seconds=10)
WATCH_HEARTBEAT = timedelta(seconds=30)
MISSING_WORKLOAD_RECHECK = timedelta(minutes=1)
RECENT_REQUESTS = 50


class Interrupt(IntEnum):
    """Why a release must stop what it awaits; a higher value wins over a lower one."""

    RULES = 1
    PROMOTE = 2
    SUPERSEDE = 3
    TERMINATE = 4
    DELETE = 5


class Interrupted(Exception):
    """Raised out of a release's await when an operation needs the main loop."""

    def __init__(self, kind: Interrupt) -> None:
        super().__init__(kind.name)
        self.kind = kind


class OperationRejected(ValueError):
    """An operation the job's state does not allow now; its message goes back verbatim."""

    kind = "OperationNotAllowed"
    field: str | None = None


class InvalidOperationInput(OperationRejected):
    """An operation whose input can never work for this job; names the field to fix."""

    kind = "InvalidOperationInput"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@workflow.defn(name=names.WORKFLOW_TYPE)
class CanaryJobWorkflow:
    """Delivers every new pod template of one Deployment as a canary, and answers its operators."""

    @workflow.init
    def __init__(self, input: CanaryJobInput) -> None:
        self.job: JobSpec = input.job
        self.state: JobState = input.state.model_copy(deep=True) if input.state else JobState()
        self.max_history_events = input.max_history_events
        self.watch = input.watch
        self._recheck = False
        self._interrupt: Interrupt | None = None
        self._interrupt_reason: str | None = None
        self._interrupt_actor: str | None = None
        self._continue_step: int | None = None
        self._pending_change: WorkloadSnapshot | None = None
        self._ops: list[tuple[str, OperationRequest]] = []
        self._releasing = False
        self._watch_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ main loop

    @workflow.run
    async def run(self, input: CanaryJobInput) -> str:
        """Attach once, then deliver every change until the job is deleted."""
        workflow.upsert_search_attributes([
            CANARY_JOB.value_set(self.job.name),
            CANARY_NAMESPACE.value_set(self.job.namespace),
            CANARY_WORKLOAD.value_set(self.job.workload.name),
        ])
        if self.state.stable is None:
            try:
                await self._attach()
            except ActivityError as error:
                # Nothing was changed (a missing Deployment, one owned by another job): the job
                # cannot exist. Fail the workflow with the reason, naming the spec field.
                raise ApplicationError(f"workload: {_failure_message(error)}", type="AttachFailed",
                                       non_retryable=True) from None
        else:
            self._set_phase(self.state.phase)
        self._watch_task = asyncio.create_task(self._watch_loop())
        try:
            while True:
                await workflow.wait_condition(
                    lambda: bool(self._ops) or self._pending_change is not None or self._should_continue_as_new()
                )
                if self._ops:
                    operation, request = self._ops.pop(0)
                    if operation == names.DELETE:
                        await self._detach(request)
                        await self._stop_watch()
                        return "deleted"
                    await self._run_operation(operation, request)
                elif self._pending_change is not None:
                    change, self._pending_change = self._pending_change, None
                    await self._deliver_written(change, Trigger.EDIT, None, skip_steps=False)
                elif self._should_continue_as_new():
                    await self._continue_as_new()
        finally:
            if self._watch_task is not None:
                self._watch_task.cancel()

    async def _stop_watch(self) -> None:
        """End the watch before the run ends: completing must be the run's last command."""
        task, self._watch_task = self._watch_task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _should_continue_as_new(self) -> bool:
        if self._ops or self._pending_change is not None or self._releasing:
            return False
        info = workflow.info()
        if self.max_history_events is not None:
            return info.get_current_history_length() >= self.max_history_events
        return info.is_continue_as_new_suggested()

    async def _continue_as_new(self) -> None:
        await self._stop_watch()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            CanaryJobInput(job=self.job, state=self.state, max_history_events=self.max_history_events,
                           watch=self.watch)
        )

    # ------------------------------------------------------------------ attach / detach

    def _ref(self) -> dict[str, str]:
        return {"namespace": self.job.namespace, "name": self.job.workload.name, "job": self.job.name}

    async def _attach(self) -> None:
        snapshot = await self._call(
            "attach_workload", AttachRequest(**self._ref()), WorkloadSnapshot,
            summary=f"attach Deployment {self.job.namespace}/{self.job.workload.name}",
        )
        now = workflow.now()
        self.state.replicas = snapshot.replicas
        self.state.stable_replicas = snapshot.replicas
        self.state.workload_hash = snapshot.template_hash
        self.state.stable = self._version(snapshot, Trigger.ATTACH, actor=None)
        self.state.stable.finished = now
        self.state.stable.outcome = Outcome.PROMOTED
        self.state.history.append(self.state.stable.model_copy())
        self._event("attached", f"took over Deployment {self.job.workload.name}; "
                    f"revision {self.state.stable.revision} ({_images(snapshot.images)}) is stable")
        self._set_phase(Phase.HEALTHY)

    async def _detach(self, request: OperationRequest) -> None:
        stable = self.state.stable
        await self._call(
            "detach_workload",
            DetachRequest(**self._ref(), template=stable.template if stable else None,
                          replicas=self.state.replicas),
            None, summary="give the Deployment back",
        )
        self._event("deleted", "job deleted; the Deployment runs on its own again", request.actor)
        self._set_phase(Phase.DELETED)
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _version(self, snapshot: WorkloadSnapshot, trigger: Trigger, actor: str | None) -> Version:
        revision = self.state.next_revision
        self.state.next_revision += 1
        return Version(revision=revision, template_hash=snapshot.template_hash, images=snapshot.images,
                       trigger=trigger, started=workflow.now(), actor=actor, template=snapshot.template)

    # ------------------------------------------------------------------ watch

    async def _watch_loop(self) -> None:
        """Keep one watch on the Deployment running; every change lands in ``_pending_change``."""
        while True:
            known = self.state.workload_hash or ""
            try:
                if not self.watch:
                    change = await self._recheck_on_nudge()
                else:
                    change = await workflow.execute_activity(
                    "watch_workload",
                    WatchRequest(**self._ref(), known_hash=known,
                                 known_replicas=None if self._releasing else self.state.replicas),
                    result_type=WorkloadChange,
                    start_to_close_timeout=timedelta(hours=24),
                    heartbeat_timeout=WATCH_HEARTBEAT,
                    retry_policy=API_RETRY,
                    summary="watch the Deployment for new versions",
                )
            except ActivityError as error:
                if isinstance(error.cause, CancelledError):
                    raise asyncio.CancelledError() from None
                # Retrying cannot fix it (forbidden, say): tell the operator, look again later.
                self.state.last_error = f"watching the Deployment failed: {_failure_message(error)}"
                self._event("watch-failed", self.state.last_error)
                await workflow.sleep(MISSING_WORKLOAD_RECHECK, summary="wait before watching again")
                continue
            self._on_workload_change(change)
            if change.kind == "deleted" and self.watch:
                await workflow.sleep(MISSING_WORKLOAD_RECHECK, summary="wait for the Deployment to return")

    async def _recheck_on_nudge(self) -> WorkloadChange:
        await workflow.wait_condition(lambda: self._recheck)
        self._recheck = False
        snapshot = await self._call("inspect_workload", WorkloadRequest(**self._ref()), WorkloadSnapshot,
                                    summary="look at the Deployment again")
        kind = "template" if snapshot.template_hash != self.state.workload_hash else "replicas"
        return WorkloadChange(kind=kind, snapshot=snapshot)

    def _on_workload_change(self, change: WorkloadChange) -> None:
        if change.kind == "deleted":
            if not self.state.workload_missing:
                self.state.workload_missing = True
                self.state.last_error = f"Deployment {self.job.workload.name} was deleted"
                self._event("workload-deleted", self.state.last_error)
            return
        self.state.workload_missing = False
        snapshot = change.snapshot
        if snapshot is None:
            return
        if change.kind == "replicas" and not self._releasing:
            if snapshot.replicas != self.state.replicas:
                self._event("scaled", f"Deployment scaled from {self.state.replicas} to {snapshot.replicas}")
                self.state.replicas = snapshot.replicas
                self.state.stable_replicas = snapshot.replicas
        if snapshot.template_hash == self.state.workload_hash:
            return
        self.state.workload_hash = snapshot.template_hash
        self._pending_change = snapshot
        if self._releasing:
            self._raise_interrupt(Interrupt.SUPERSEDE, "the Deployment's pod template changed again", None)

    # ------------------------------------------------------------------ operations (main loop side)

    async def _run_operation(self, operation: str, request: OperationRequest) -> None:
        if isinstance(request, UpdateVersionRequest):
            snapshot = await self._call(
                "set_image", SetImageRequest(**self._ref(), image=request.image,
                                             container=None if request.container == "*" else request.container),
                WorkloadSnapshot, summary=f"set image {request.image}",
            )
            await self._deliver_written(snapshot, Trigger.UPDATE_VERSION, request.actor, skip_steps=False)
        elif isinstance(request, RollbackRequest):
            version = self._find_version(request.revision)
            assert version is not None and version.template is not None
            snapshot = await self._call(
                "write_template", WriteTemplateRequest(**self._ref(), template=version.template),
                WorkloadSnapshot, summary=f"write revision {request.revision} back to the Deployment",
            )
            await self._deliver_written(snapshot, Trigger.ROLLBACK, request.actor, skip_steps=request.skip_steps)

    async def _deliver_written(self, snapshot: WorkloadSnapshot, trigger: Trigger, actor: str | None,
                               *, skip_steps: bool) -> None:
        """Deliver the template now in the Deployment, unless it is the stable one.

        Also used for templates the job wrote itself: the watch sees those too, but finds the
        hash already known and reports nothing new.
        """
        self.state.workload_hash = snapshot.template_hash
        self._pending_change = None
        if self.state.stable is not None and snapshot.template_hash == self.state.stable.template_hash:
            self._event("in-sync", f"the Deployment is back on stable revision {self.state.stable.revision}",
                        actor)
            self._set_phase(Phase.HEALTHY)
            return
        await self._deliver(snapshot, trigger, actor=actor, skip_steps=skip_steps)

    # ------------------------------------------------------------------ a release

    async def _deliver(self, snapshot: WorkloadSnapshot, trigger: Trigger, *, actor: str | None,
                       skip_steps: bool) -> None:
        """Run one release to its end: promoted, failed, terminated or superseded."""
        canary = self._version(snapshot, trigger, actor)
        self.state.canary = canary
        self.state.last_error = None
        self._releasing = True
        self._continue_step = None
        self._clear_interrupt()
        self._reset_steps()
        self._event("release-started", f"revision {canary.revision} ({_images(canary.images)}) "
                    f"started by {trigger.value}", actor)
        self._set_phase(Phase.PROGRESSING)
        try:
            await self._interruptible(self._call(
                "prepare_canary",
                CanaryTemplateRequest(**self._ref(), template=snapshot.template,
                                      template_hash=snapshot.template_hash),
                None, summary=f"prepare canary revision {canary.revision}",
            ))
            if skip_steps:
                self._skip_steps_from(0, "skipped: rollback without steps")
            else:
                await self._run_steps()
            await self._promote()
        except Interrupted as interrupted:
            await self._end_interrupted(interrupted.kind)
        except ReleaseFailed as failure:
            await self._abort(Outcome.FAILED, str(failure), actor=None)
        except ActivityError as error:
            await self._abort(Outcome.FAILED, _failure_message(error), actor=None)
        finally:
            self._releasing = False
            self._continue_step = None
            self.state.current_step = None
            self.state.pause_until = None

    async def _run_steps(self) -> None:
        index = 0
        while index < len(self.job.steps):
            step = self.job.steps[index]
            self.state.current_step = index
            self._mark(index, StepStatus.RUNNING)
            try:
                await self._run_step(index, step)
            except Interrupted as interrupted:
                if interrupted.kind == Interrupt.RULES:
                    self._clear_interrupt()
                    self._reset_steps()
                    index = resume_index(self.job.steps, self.state.weight)
                    self._skip_steps_until(index, "skipped: the rules changed")
                    continue
                if interrupted.kind == Interrupt.PROMOTE:
                    self._mark(index, StepStatus.SKIPPED, "skipped: promoted")
                    self._skip_steps_from(index + 1, "skipped: promoted")
                    return
                self._mark(index, StepStatus.FAILED if interrupted.kind != Interrupt.SUPERSEDE
                           else StepStatus.SKIPPED, interrupted.kind.name.lower())
                raise
            except ActivityError as error:
                self._mark(index, StepStatus.FAILED, _failure_message(error))
                raise ReleaseFailed(f"step {index + 1} ({describe_step(step)}): {_failure_message(error)}") from None
            except ReleaseFailed as failure:
                self._mark(index, StepStatus.FAILED, str(failure))
                raise
            self._mark(index, StepStatus.SUCCEEDED)
            index += 1

    async def _run_step(self, index: int, step: SetWeightStep | PauseStep | SetCanaryScaleStep) -> None:
        if isinstance(step, SetWeightStep):
            canary = canary_replicas_for_weight(self.state.replicas, step.set_weight)
            await self._shift(canary, stable=self.state.replicas - canary,
                              label=f"step {index + 1}: setWeight {step.set_weight}%")
            self.state.weight = step.set_weight
        elif isinstance(step, SetCanaryScaleStep):
            canary = canary_replicas_for_scale(self.state.replicas, step.set_canary_scale)
            await self._shift(canary, stable=self.state.stable_replicas,
                              label=f"step {index + 1}: {describe_step(step)}")
            self.state.weight = self.state.actual_weight
        else:
            await self._pause(index, step)

    async def _shift(self, canary: int, *, stable: int, label: str) -> None:
        """Move to ``canary`` canary pods and ``stable`` stable pods without losing capacity.

        Growing the canary comes first and is waited on; the stable side shrinks only once
        the new pods are Ready. Shrinking the canary goes the other way round.
        """
        stable = max(0, stable)
        canary_hash = self.state.canary.template_hash if self.state.canary else ""
        if canary >= self.state.canary_replicas:
            await self._scale("scale_canary", canary, f"{label}: scale canary to {canary}")
            await self._wait_canary_ready(canary, canary_hash, label)
            await self._scale("scale_stable", stable, f"{label}: scale stable to {stable}")
        else:
            await self._scale("scale_stable", stable, f"{label}: scale stable to {stable}")
            await self._scale("scale_canary", canary, f"{label}: scale canary to {canary}")
        self.state.canary_replicas = canary
        self.state.stable_replicas = stable
        self.state.actual_weight = effective_weight(canary, stable)
        self._set_phase(Phase.PROGRESSING)

    async def _scale(self, activity: str, replicas: int, summary: str) -> None:
        await self._interruptible(self._call(activity, ScaleRequest(**self._ref(), replicas=replicas), None,
                                             summary=summary))

    async def _wait_canary_ready(self, replicas: int, template_hash: str, label: str) -> None:
        await self._interruptible(workflow.execute_activity(
            "wait_canary_ready",
            ReadyRequest(**self._ref(), replicas=replicas, template_hash=template_hash),
            start_to_close_timeout=POLL_ATTEMPT_TIMEOUT,
            schedule_to_close_timeout=self.job.progress_deadline,
            retry_policy=POLL_RETRY,
            summary=f"{label}: wait for {replicas} canary pods Ready",
        ))

    async def _pause(self, index: int, step: PauseStep) -> None:
        timeout = step.pause.duration if step.pause.duration is not None else self.job.max_pause
        self.state.pause_until = workflow.now() + timeout if timeout is not None else None
        self._set_phase(Phase.PAUSED)
        label = f"step {index + 1}: {describe_step(step)}"
        evicted = False
        try:
            await self._interruptible(workflow.wait_condition(
                lambda: self._continue_step == index, timeout=timeout, timeout_summary=label,
            ))
            self._event("continued", f"step {index + 1} continued", self._interrupt_actor)
        except TimeoutError:
            if (step.pause.on_timeout or self.job.on_pause_timeout) == PauseTimeoutAction.ROLLBACK:
                raise ReleaseFailed(f"{label} timed out and its policy is to roll back") from None
            self._event("pause-ended", f"{label} ran out; continuing")
        except GeneratorExit:
            # The worker evicts this run from its cache: no workflow calls may happen now.
            evicted = True
            raise
        finally:
            self.state.pause_until = None
            if not evicted:
                self._set_phase(Phase.PROGRESSING)

    async def _promote(self) -> None:
        canary = self.state.canary
        assert canary is not None
        self._set_phase(Phase.PROMOTING)
        self.state.current_step = None
        request = self._ref()
        await self._call("promote_stable", PromoteRequest(**request, replicas=self.state.replicas), None,
                         summary=f"promote revision {canary.revision}: roll the Deployment out")
        await workflow.execute_activity(
            "wait_stable_rolled_out",
            RolloutRequest(**request, replicas=self.state.replicas, template_hash=canary.template_hash),
            start_to_close_timeout=POLL_ATTEMPT_TIMEOUT,
            schedule_to_close_timeout=self.job.progress_deadline,
            retry_policy=POLL_RETRY,
            summary=f"promote revision {canary.revision}: wait for the Deployment to roll out",
        )
        await self._call("pause_stable", WorkloadRequest(**request), None,
                         summary="hold the Deployment for the next release")
        await self._call("scale_canary", ScaleRequest(**request, replicas=0), None,
                         summary="scale the canary down")
        self.state.canary_replicas = 0
        self.state.stable_replicas = self.state.replicas
        self.state.weight = self.state.actual_weight = 0
        self._finish_canary(Outcome.PROMOTED, None)
        self._event("promoted", f"revision {canary.revision} ({_images(canary.images)}) is stable")
        self.state.stable = canary
        self.state.canary = None
        self._set_phase(Phase.HEALTHY)

    async def _end_interrupted(self, kind: Interrupt) -> None:
        reason, actor = self._interrupt_reason, self._interrupt_actor
        self._clear_interrupt()
        if kind == Interrupt.TERMINATE:
            await self._abort(Outcome.TERMINATED, reason or "terminated by an operator", actor=actor)
        elif kind == Interrupt.DELETE:
            await self._abort(Outcome.TERMINATED, "the job is being deleted", actor=actor)
        else:
            outcome = Outcome.ROLLED_BACK if any(op == names.ROLLBACK for op, _ in self._ops) else (
                Outcome.SUPERSEDED)
            await self._abort(outcome, reason or "a newer version replaced it", actor=actor, final=False)

    async def _abort(self, outcome: Outcome, reason: str, *, actor: str | None, final: bool = True) -> None:
        """Send all traffic back to stable and scale the canary down; record why."""
        self._set_phase(Phase.ROLLING_BACK)
        request = self._ref()
        # Stable first, so capacity never dips while the canary goes away.
        await self._call("scale_stable", ScaleRequest(**request, replicas=self.state.replicas), None,
                         summary="roll back: scale stable to full size")
        await self._call("scale_canary", ScaleRequest(**request, replicas=0), None,
                         summary="roll back: scale the canary down")
        self.state.canary_replicas = 0
        self.state.stable_replicas = self.state.replicas
        self.state.weight = self.state.actual_weight = 0
        canary = self.state.canary
        self._finish_canary(outcome, reason, actor)
        self.state.canary = None
        if canary is not None:
            self._event(outcome.value, f"revision {canary.revision}: {reason}", actor)
        if outcome == Outcome.FAILED:
            self.state.last_error = f"revision {canary.revision if canary else '?'} failed: {reason}"
        if final:
            self._set_phase(Phase.FAILED if outcome == Outcome.FAILED else Phase.TERMINATED)
        else:
            self._set_phase(Phase.HEALTHY)

    def _finish_canary(self, outcome: Outcome, reason: str | None, actor: str | None = None) -> None:
        canary = self.state.canary
        if canary is None:
            return
        canary.finished = workflow.now()
        canary.outcome = outcome
        canary.reason = reason
        if actor:
            canary.actor = actor
        self.state.history.append(canary.model_copy())
        self._trim_history()

    def _trim_history(self) -> None:
        history = self.state.history
        if len(history) > MAX_VERSIONS:
            del history[: len(history) - MAX_VERSIONS]
        # Only the newest versions keep their template: enough to roll back, bounded in size.
        for version in history[: max(0, len(history) - MAX_VERSIONS // 2)]:
            version.template = None

    # ------------------------------------------------------------------ interrupts and calls

    async def _interruptible(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless an interrupt arrives first; then cancel it and raise."""
        if self._interrupt is not None:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            elif isinstance(awaitable, asyncio.Future):
                awaitable.cancel()
            raise Interrupted(self._interrupt)
        task = asyncio.ensure_future(awaitable)
        interrupted = asyncio.ensure_future(workflow.wait_condition(lambda: self._interrupt is not None))
        await workflow.wait([task, interrupted], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            interrupted.cancel()
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, ActivityError):
            pass
        assert self._interrupt is not None
        raise Interrupted(self._interrupt)

    def _raise_interrupt(self, kind: Interrupt, reason: str | None, actor: str | None) -> None:
        if self._interrupt is None or kind > self._interrupt:
            self._interrupt = kind
            self._interrupt_reason = reason
            self._interrupt_actor = actor

    def _clear_interrupt(self) -> None:
        self._interrupt = None
        self._interrupt_reason = None

    async def _call(self, activity: str, request: Any, result_type: type[T] | None, *, summary: str) -> T:
        result: T = await workflow.execute_activity(
            activity, request, result_type=result_type, start_to_close_timeout=API_TIMEOUT,
            retry_policy=API_RETRY, summary=summary,
        )
        return result

    # ------------------------------------------------------------------ bookkeeping

    def _reset_steps(self) -> None:
        self.state.steps = [StepState(index=i, description=describe_step(step))
                            for i, step in enumerate(self.job.steps)]

    def _mark(self, index: int, status: StepStatus, message: str | None = None) -> None:
        if index >= len(self.state.steps):
            return
        step = self.state.steps[index]
        now = workflow.now()
        if status == StepStatus.RUNNING:
            step.started = now
            step.finished = None
        else:
            step.finished = now
        step.status = status
        step.message = message

    def _skip_steps_from(self, start: int, message: str) -> None:
        for index in range(start, len(self.state.steps)):
            self._mark(index, StepStatus.SKIPPED, message)

    def _skip_steps_until(self, end: int, message: str) -> None:
        for index in range(0, min(end, len(self.state.steps))):
            self._mark(index, StepStatus.SKIPPED, message)

    def _set_phase(self, phase: Phase) -> None:
        self.state.phase = phase
        workflow.upsert_search_attributes([CANARY_PHASE.value_set(phase.value)])

    def _event(self, kind: str, message: str, actor: str | None = None) -> None:
        self.state.events.append(Event(at=workflow.now(), kind=kind, message=message, actor=actor))
        if len(self.state.events) > MAX_EVENTS:
            del self.state.events[: len(self.state.events) - MAX_EVENTS]

    def _find_version(self, revision: int) -> Version | None:
        for version in [*self.state.history, self.state.stable, self.state.canary]:
            if version is not None and version.revision == revision:
                return version
        return None

    # ------------------------------------------------------------------ operation handlers
    #
    # Each operation is an update (validated, synchronous answer) and a signal of the same
    # name (fire and forget, for `temporal workflow signal` and CI systems). Both go through
    # the same check and the same apply; a rejected signal is recorded as an event.

    def _check(self, operation: str, request: OperationRequest) -> None:
        phase = self.state.phase
        if phase == Phase.DELETED:
            raise OperationRejected("the job is deleted")
        if phase == Phase.INITIALIZING and operation != names.DELETE:
            raise OperationRejected("the job is still attaching to its Deployment")
        if operation == names.CONTINUE:
            if phase != Phase.PAUSED:
                raise OperationRejected(f"nothing to continue: the job is {phase.value}, not paused")
        elif operation in (names.PROMOTE, names.TERMINATE):
            if not self._releasing:
                raise OperationRejected(f"no release is running (the job is {phase.value})")
            if phase == Phase.PROMOTING and operation == names.TERMINATE:
                raise OperationRejected("the release is already being promoted; it can no longer be terminated")
            if phase == Phase.ROLLING_BACK:
                raise OperationRejected("the release is already being rolled back")
        elif isinstance(request, UpdateVersionRequest):
            try:
                validate_image(request.image)
            except ValueError as error:
                raise InvalidOperationInput("image", str(error)) from None
            containers = self._containers()
            if request.container is None and len(containers) > 1:
                raise InvalidOperationInput("container",
                    f"the pod template has {len(containers)} containers ({', '.join(containers)}): "
                    "name one with container, or use container '*' to set them all")
            if request.container not in (None, "*") and request.container not in containers:
                raise InvalidOperationInput("container",
                    f"container {request.container!r} is not in the pod template; "
                    f"containers: {', '.join(containers) or 'none'}")
        elif isinstance(request, RollbackRequest):
            version = self._find_version(request.revision)
            if version is None:
                known = sorted({v.revision for v in self.state.history} | (
                    {self.state.stable.revision} if self.state.stable else set()))
                raise InvalidOperationInput("revision", f"unknown revision {request.revision}; known revisions: "
                                            f"{', '.join(map(str, known)) or 'none'}")
            if version.template is None:
                raise InvalidOperationInput(
                    "revision", f"revision {request.revision} is too old: its pod template was not kept")
        elif isinstance(request, UpdateRulesRequest):
            try:
                DeliveryRules.model_validate(request.rules)
            except ValidationError as error:
                first = ".".join(str(p) for p in error.errors()[0]["loc"]) if error.errors() else ""
                raise InvalidOperationInput(f"rules.{first}".rstrip("."), _validation_message(error)) from None

    def _containers(self) -> list[str]:
        source = self.state.canary or self.state.stable
        return sorted(source.images) if source else []

    def _apply(self, operation: str, request: OperationRequest) -> OperationResult:
        key = request_key(operation, request)
        if key is not None:
            if key in self.state.recent_requests:
                return OperationResult(message=f"request {request.request_id} was already applied",
                                       phase=self.state.phase)
            self.state.recent_requests.append(key)
            del self.state.recent_requests[:-RECENT_REQUESTS]
        actor = request.actor
        if operation == names.CONTINUE:
            if self._continue_step == self.state.current_step:
                return OperationResult(message="already continuing", phase=self.state.phase)
            self._continue_step = self.state.current_step
            self._interrupt_actor = actor
            message = f"continuing from step {(self.state.current_step or 0) + 1}"
        elif operation == names.PROMOTE:
            if self.state.phase == Phase.PROMOTING or self._interrupt == Interrupt.PROMOTE:
                return OperationResult(message="already promoting", phase=self.state.phase)
            self._raise_interrupt(Interrupt.PROMOTE, request.reason, actor)
            self._event("promote-requested", "promote now: remaining steps skipped", actor)
            message = "promoting now"
        elif operation == names.TERMINATE:
            if self._interrupt == Interrupt.TERMINATE:
                return OperationResult(message="already terminating", phase=self.state.phase)
            self._raise_interrupt(Interrupt.TERMINATE, request.reason or "terminated by an operator", actor)
            self._event("terminate-requested", request.reason or "terminate requested", actor)
            message = "terminating: all traffic goes back to stable"
        elif operation == names.UPDATE_RULES:
            assert isinstance(request, UpdateRulesRequest)
            self.job = self.job.with_rules(DeliveryRules.model_validate(request.rules))
            self._event("rules-updated", f"steps: {'; '.join(describe_step(s) for s in self.job.steps)}", actor)
            if self._releasing:
                self._raise_interrupt(Interrupt.RULES, None, actor)
            message = "delivery rules updated"
        elif operation == names.DELETE:
            self._ops.insert(0, (operation, request))
            if self._releasing:
                self._raise_interrupt(Interrupt.DELETE, "the job is being deleted", actor)
            message = "deleting the job"
        else:
            self._ops.append((operation, request))
            if self._releasing:
                reason = (f"rolled back to revision {request.revision}" if isinstance(request, RollbackRequest)
                          else "a new version was set")
                self._raise_interrupt(Interrupt.SUPERSEDE, reason, actor)
            self._event(f"{operation}-requested", _describe_request(request), actor)
            message = f"{operation} accepted"
        return OperationResult(message=message, phase=self.state.phase)

    def _signal(self, operation: str, model: type[OperationRequest], payload: Any) -> None:
        """Validate and apply a signal; a bad one is recorded where the operator sees it."""
        try:
            request = model.model_validate(payload or {})
            self._check(operation, request)
        except ValidationError as error:
            self._event("rejected", f"{operation} signal rejected: {_validation_message(error)}")
            return
        except ValueError as error:
            self._event("rejected", f"{operation} signal rejected: {error}",
                        payload.get("actor") if isinstance(payload, dict) else None)
            return
        self._apply(operation, request)

    def _validate(self, operation: str, request: OperationRequest) -> None:
        """Reject with a typed failure: clients tell bad input (and its field) from a state conflict."""
        try:
            self._check(operation, request)
        except OperationRejected as error:
            raise ApplicationError(str(error), *([error.field] if error.field else []), type=error.kind,
                                   non_retryable=True) from None

    @workflow.update(name=names.UPDATE_VERSION)
    def update_version(self, request: UpdateVersionRequest) -> OperationResult:
        """Set a new image; a new release starts."""
        return self._apply(names.UPDATE_VERSION, request)

    @update_version.validator
    def _v_update_version(self, request: UpdateVersionRequest) -> None:
        self._validate(names.UPDATE_VERSION, request)

    @workflow.update(name=names.CONTINUE)
    def continue_(self, request: OperationRequest) -> OperationResult:
        """Leave the current pause."""
        return self._apply(names.CONTINUE, request)

    @continue_.validator
    def _v_continue(self, request: OperationRequest) -> None:
        self._validate(names.CONTINUE, request)

    @workflow.update(name=names.PROMOTE)
    def promote(self, request: OperationRequest) -> OperationResult:
        """Skip the remaining steps and promote now."""
        return self._apply(names.PROMOTE, request)

    @promote.validator
    def _v_promote(self, request: OperationRequest) -> None:
        self._validate(names.PROMOTE, request)

    @workflow.update(name=names.TERMINATE)
    def terminate(self, request: OperationRequest) -> OperationResult:
        """Stop the release: all traffic to stable, canary scaled down."""
        return self._apply(names.TERMINATE, request)

    @terminate.validator
    def _v_terminate(self, request: OperationRequest) -> None:
        self._validate(names.TERMINATE, request)

    @workflow.update(name=names.ROLLBACK)
    def rollback(self, request: RollbackRequest) -> OperationResult:
        """Deliver a historical version again."""
        return self._apply(names.ROLLBACK, request)

    @rollback.validator
    def _v_rollback(self, request: RollbackRequest) -> None:
        self._validate(names.ROLLBACK, request)

    @workflow.update(name=names.UPDATE_RULES)
    def update_rules(self, request: UpdateRulesRequest) -> OperationResult:
        """Change steps and traffic policy; a running release goes on under them."""
        return self._apply(names.UPDATE_RULES, request)

    @update_rules.validator
    def _v_update_rules(self, request: UpdateRulesRequest) -> None:
        self._validate(names.UPDATE_RULES, request)

    @workflow.update(name=names.DELETE)
    def delete(self, request: OperationRequest) -> OperationResult:
        """Stop any release and give the Deployment back."""
        return self._apply(names.DELETE, request)

    @delete.validator
    def _v_delete(self, request: OperationRequest) -> None:
        self._validate(names.DELETE, request)

    @workflow.signal(name=names.WORKLOAD_CHANGED)
    def workload_changed(self, payload: Any = None) -> None:
        """A nudge from outside (webhook, CI, tests): look at the Deployment again."""
        self._recheck = True

    @workflow.signal(name=names.UPDATE_VERSION)
    def signal_update_version(self, payload: Any = None) -> None:
        """Signal form of ``update-version``."""
        self._signal(names.UPDATE_VERSION, UpdateVersionRequest, payload)

    @workflow.signal(name=names.CONTINUE)
    def signal_continue(self, payload: Any = None) -> None:
        """Signal form of ``continue``."""
        self._signal(names.CONTINUE, OperationRequest, payload)

    @workflow.signal(name=names.PROMOTE)
    def signal_promote(self, payload: Any = None) -> None:
        """Signal form of ``promote``."""
        self._signal(names.PROMOTE, OperationRequest, payload)

    @workflow.signal(name=names.TERMINATE)
    def signal_terminate(self, payload: Any = None) -> None:
        """Signal form of ``terminate``."""
        self._signal(names.TERMINATE, OperationRequest, payload)

    @workflow.signal(name=names.ROLLBACK)
    def signal_rollback(self, payload: Any = None) -> None:
        """Signal form of ``rollback``."""
        self._signal(names.ROLLBACK, RollbackRequest, payload)

    @workflow.signal(name=names.UPDATE_RULES)
    def signal_update_rules(self, payload: Any = None) -> None:
        """Signal form of ``update-rules``."""
        self._signal(names.UPDATE_RULES, UpdateRulesRequest, payload)

    @workflow.signal(name=names.DELETE)
    def signal_delete(self, payload: Any = None) -> None:
        """Signal form of ``delete``."""
        self._signal(names.DELETE, OperationRequest, payload)

    # ------------------------------------------------------------------ queries

    @workflow.query(name=names.DETAILS_QUERY)
    def details(self) -> JobDetails:
        """Basic information, steps, weight, main version, recent events."""
        remaining = elapsed(workflow.now(), self.state.pause_until) if self.state.pause_until else None
        return JobDetails(
            name=self.job.name, namespace=self.job.namespace, workload=self.job.workload.name,
            mode=self.job.mode.value, phase=self.state.phase, replicas=self.state.replicas,
            weight=self.state.weight, actual_weight=self.state.actual_weight,
            canary_replicas=self.state.canary_replicas,
            current_step=self.state.current_step, steps=self.state.steps, pause_until=self.state.pause_until,
            pause_remaining=remaining,
            last_error=self.state.last_error, stable=_without_template(self.state.stable),
            canary=_without_template(self.state.canary),
            rules=self.job.rules.model_dump(mode="json"), events=self.state.events[-20:],
        )

    @workflow.query(name=names.VERSIONS_QUERY)
    def versions(self) -> JobVersions:
        """Main version (stable and canary) and the historical versions, newest first."""
        return JobVersions(
            stable=_without_template(self.state.stable), canary=_without_template(self.state.canary),
            history=[v for v in (_without_template(v) for v in reversed(self.state.history)) if v],
        )


class ReleaseFailed(Exception):
    """The release cannot go on (a canary that never became Ready, a pause that ran out)."""


def _failure_message(error: ActivityError) -> str:
    """The innermost message of an activity failure: what an operator can act on."""
    cause: BaseException | None = error.cause
    last = str(error)
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.message:
            last = cause.message
        elif str(cause):
            last = str(cause)
        cause = getattr(cause, "cause", None)
    if "timeout" in str(error).lower() or isinstance(error.cause, Exception) and "TIMEOUT" in str(
            getattr(error.cause, "type", "")):
        return f"progress deadline exceeded: {last}"
    return last


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "input"
        parts.append(f"{path}: {item['msg']}")
    return "; ".join(parts)


def _describe_request(request: OperationRequest) -> str:
    if isinstance(request, UpdateVersionRequest):
        return f"set image {request.image}" + (f" on container {request.container}" if request.container else "")
    if isinstance(request, RollbackRequest):
        return f"roll back to revision {request.revision}" + (" without steps" if request.skip_steps else "")
    return request.reason or ""


def _images(images: dict[str, str]) -> str:
    return ", ".join(f"{name}={image}" for name, image in sorted(images.items()))


def _without_template(version: Version | None) -> Version | None:
    return None if version is None else version.model_copy(update={"template": None})

