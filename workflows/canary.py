"""The canary delivery job: one long-lived Temporal workflow per job.

The workflow serialises everything that happens to one Deployment: edits seen by the watch,
operator operations, timers. Handlers only record intent; the main loop acts on it, so every
cluster write happens in one place and in one order. A release is a plain coroutine inside
the main loop; what must stop it (delete, terminate, a missing Deployment, a newer version,
promote, new rules) is read from that recorded intent by :meth:`_interrupt`, and raised as
:class:`Interrupted` out of whatever the release awaits; the release cleans up before the
main loop moves on.

The invariants this keeps (docs/design.md, "Invariants") are checked by the property test in
tests/workflow/test_release_properties.py. No I/O here: activities are called through the
table in :mod:`workflows.port`, and only pure modules are imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from enum import IntEnum
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from workflows import names, port, telemetry
    from workflows.admission import OperationRejected, check
    from workflows.analysis_run import AnalysisKind, AnalysisRun, MetricRun
    from workflows.analysis_spec import AnalysisStep, MeasureRequest
    from workflows.header_route import HeaderRoute, apply_header_route
    from workflows.models import (
        AttachRequest,
        BlueGreenView,
        CanaryJobInput,
        CanaryTemplateRequest,
        DetachRequest,
        HoldStableRequest,
        HoldStableResult,
        JobDetails,
        JobState,
        JobVersions,
        LabelRequest,
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
        StableRevisionRequest,
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
        remaining,
        request_key,
    )
    from workflows.policy import (
        canary_replicas_for_scale,
        canary_replicas_for_weight,
        effective_weight,
        resume_index,
        stable_replicas_for_weight,
    )
    from workflows.routing import RouterRequest, RouterWeights, ServicesRequest, SetWeightRequest
    from workflows.search import CANARY_JOB, CANARY_NAMESPACE, CANARY_PHASE, CANARY_WORKLOAD
    from workflows.spec import (
        AnyStep,
        DeliveryRules,
        JobSpec,
        PauseStep,
        PauseTimeoutAction,
        SetCanaryScaleStep,
        SetHeaderRouteStep,
        SetWeightStep,
        describe_step,
        validation_message,
    )
    from workflows.step_requests import GrowStableRequest, HeldPromotionRequest, ShiftRequest
    from workflows.traffic_spec import Traffic
    from workflows.ui_details import current_details
    from workflows.verdict import Measurement, MeasurementPhase, MetricPhase, Verdict
    from workflows.webhook_spec import Webhook, WebhookBody, WebhookRequest, WebhookResult, WebhookType

Req = TypeVar("Req")
Res = TypeVar("Res")
T = TypeVar("T")

API_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                        maximum_interval=timedelta(seconds=30))
# Waits watch inside one attempt; a retry (a dead worker, a broken watch) comes a second later.
POLL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=1.0,
                         maximum_interval=timedelta(seconds=1))
API_TIMEOUT = timedelta(seconds=30)
# A dead worker's wait (or, in runs on older code, watch) is retried elsewhere once its heartbeat
# is this late. The activity heartbeats every second and the SDK sends one every 0.8 x this, so
# the rest (1 s) is the slack a CPU-starved worker or server has before an attempt is cut.
WATCH_HEARTBEAT = timedelta(seconds=5)
WATCH_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=30))
# How long a job in trouble (a refused write, a Deployment taken by another job) waits
# before it tries again by itself.
RETRY_TROUBLE = timedelta(minutes=1)
MISSING_WORKLOAD_RECHECK = timedelta(minutes=1)
RECENT_REQUESTS = 50
# One measurement: a Prometheus query answers in milliseconds; a web provider may take up to its
# own timeoutSeconds (at most 300). Not retried by Temporal: an answer that does not come is an
# error measurement, counted against the metric's consecutiveErrorLimit.
MEASURE_TIMEOUT = timedelta(seconds=30)
MEASURE_SLACK = timedelta(seconds=10)
MEASURE_RETRY = RetryPolicy(maximum_attempts=1)
# A webhook call is one POST: its own timeout bounds it, the slack covers getting it to a worker.
# Not retried by Temporal: a hook that does not answer has said no (confirm-promotion asks again
# itself, every CONFIRM_POLL, and shows the last refusal).
WEBHOOK_SLACK = timedelta(seconds=5)
WEBHOOK_RETRY = RetryPolicy(maximum_attempts=1)
CONFIRM_POLL = timedelta(seconds=10)
# A router check answers an operator who waits (apply, update-rules): a few tries, then the reason.
CHECK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=3)
# The failure type of a traffic spec that does not fit the cluster (activities/errors.py).
ROUTER_CONFIG_INVALID = "RouterConfigInvalid"

# workflow.patched ids: runs that started on older code replay their old shape.
PATCH_HELD_PROMOTION = "held-promotion"
PATCH_WATCH_MISSING = "watch-missing-workload"
PATCH_RELEASE_CONTINUE_AS_NEW = "continue-as-new-in-release"
PATCH_SHARED_WATCH = "shared-watch"
PATCH_QUIET_PHASE = "upsert-phase-on-change"
PATCH_COUNT_EACH_SIDE = "count-each-side-of-a-shift"
PATCH_UNDO_CUT_SHIFT = "undo-a-shift-new-rules-cut"
PATCH_ONE_ACTIVITY_PER_STEP = "one-activity-per-step"
PATCH_PROMOTE_FULL_CANARY = "promote-a-canary-the-last-step-filled"
PATCH_PREPARE_WITH_FIRST_STEP = "prepare-the-canary-in-the-first-step"
# The activities that write the user's Deployment: an observation that arrives while one runs
# waits for its result (and its generation), which tells whether the observation predates it.
USER_WRITES = frozenset({port.ATTACH_WORKLOAD.name, port.LABEL_WORKLOAD.name, port.HOLD_STABLE.name,
                         port.PREPARE_STABLE.name, port.SCALE_STABLE.name, port.PROMOTE_STABLE.name,
                         port.PAUSE_STABLE.name, port.WRITE_TEMPLATE.name, port.SET_IMAGE.name,
                         port.PROMOTE_HELD.name})


class Interrupt(IntEnum):
    """Why a release must stop what it awaits; a higher value wins over a lower one."""

    RULES = 1
    PROMOTE = 2
    SUPERSEDE = 3
    ANALYSIS = 4  # the background analysis failed or is inconclusive
    MISSING = 5
    TERMINATE = 6
    DELETE = 7


# A promotion stops only for these: an edit waits its turn, new rules apply to the next release.
PROMOTION_INTERRUPTS = frozenset({Interrupt.DELETE, Interrupt.MISSING})
# After the last step, waiting for a human before promotion: what still stops the release.
BEFORE_PROMOTION_INTERRUPTS = frozenset({Interrupt.DELETE, Interrupt.TERMINATE, Interrupt.MISSING,
                                         Interrupt.SUPERSEDE})


class Interrupted(Exception):
    """Raised out of a release's await when an operation needs the main loop."""

    def __init__(self, kind: Interrupt) -> None:
        super().__init__(kind.name)
        self.kind = kind


class ReleaseFailed(Exception):
    """The release cannot go on (a canary that never became Ready, a pause that ran out)."""


class ContinueAsNew(Exception):
    """A paused release hands over to a fresh run; its state goes along."""


@workflow.defn(name=names.WORKFLOW_TYPE)
class CanaryJobWorkflow:
    """Delivers every new pod template of one Deployment as a canary, and answers its operators."""

    @workflow.init
    def __init__(self, input: CanaryJobInput) -> None:
        self.job: JobSpec = input.job
        self.state: JobState = input.state.model_copy(deep=True) if input.state else JobState()
        self.max_history_events = input.max_history_events
        self.watch = input.watch
        # Recorded intent, read by the main loop and by _interrupt().
        self._delete: OperationRequest | None = None
        self._terminate: OperationRequest | None = None
        self._promote: OperationRequest | None = None
        self._rules_changed = False
        self._next: tuple[str, UpdateVersionRequest | RollbackRequest] | None = None
        self._pending_change: WorkloadSnapshot | None = None
        self._pending_written = True  # False: the pending template is not in the Deployment now
        self._reappeared: WorkloadSnapshot | None = None
        self._opened_gate: int | None = None
        self._continue_actor: str | None = None
        self._recheck = False
        self._trouble = False
        self._writes = 0  # template writes by the job: a watch started before one is stale
        self._writing = 0  # writes to the user's Deployment in flight
        self._observed: WorkloadChange | None = None  # the shared watch's newest report, not yet read
        self._watch_task: asyncio.Task[None] | None = None
        self._background_task: asyncio.Task[Verdict] | None = None
        self._decision: str | None = None  # a human must continue before the current step (re)starts
        self._measuring = 0  # measurements in flight: a hand-over waits for them, so none is lost
        self._shift_from: tuple[int, int] | None = None  # (canary, stable) where a running shift began
        # The canary's template, when the release's first shift is to set it (until one shift completes).
        self._unprepared: CanaryTemplateRequest | None = None
        self._hooked_step: int | None = None  # the step whose rollout webhooks said yes (not again)
        self._rule_checks: set[asyncio.Task[None]] = set()  # signalled rules naming a router, being checked

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
            await self._check_first_router()
            try:
                await self._attach()
            except ActivityError as error:
                # Nothing was changed (a missing Deployment, one owned by another job): the job
                # cannot exist. Fail the workflow with the reason, naming the spec field.
                kind = _failure_type(error)
                raise ApplicationError(f"workload: {_failure_message(error)}", *([kind] if kind else []),
                                       type="AttachFailed", non_retryable=True) from None
        else:
            workflow.upsert_search_attributes([CANARY_PHASE.value_set(self.state.phase.value)])
        self._watch_task = asyncio.create_task(self._watch_loop())
        try:
            if self.state.canary is not None:
                await self._release(resume=True)
            while True:
                if self._trouble:
                    try:
                        await workflow.wait_condition(self._has_work, timeout=RETRY_TROUBLE,
                                                      timeout_summary="try again after the error")
                    except TimeoutError:
                        await self._recover()
                        continue
                else:
                    await workflow.wait_condition(self._has_work)
                if self._delete is not None:
                    await self._detach(self._delete)
                    await self._stop_watch()
                    return "deleted"
                await self._step_main_loop()
        except ContinueAsNew:
            await self._continue_as_new()
            raise AssertionError("unreachable") from None
        finally:
            if self._watch_task is not None:
                self._watch_task.cancel()

    def _has_work(self) -> bool:
        return (self._delete is not None or self._next is not None or self._pending_change is not None
                or self._reappeared is not None or self._should_continue_as_new() or self._router_stale())

    async def _step_main_loop(self) -> None:
        """Act on one piece of recorded intent; a failure becomes the job's state, never its end."""
        try:
            if self._reappeared is not None:
                snapshot, self._reappeared = self._reappeared, None
                await self._take_over(snapshot)
            elif self._next is not None:
                operation, request = self._next
                self._next = None
                await self._run_operation(operation, request)
            elif self._pending_change is not None:
                await self._deliver_pending()
            elif self._router_stale():
                await self._take_route()
            elif self._should_continue_as_new():
                raise ContinueAsNew()
        except ActivityError as error:
            self._on_failure(error, "")

    async def _recover(self) -> None:
        """Try again what failed: take the Deployment over, or bring it back to rest."""
        self._trouble = False
        try:
            if self.state.workload_missing:
                snapshot = await self._call(port.INSPECT_WORKLOAD, WorkloadRequest(**self._ref()),
                                            summary="look at the Deployment again")
                await self._take_over(snapshot)
            elif self.state.canary is None:
                await self._come_to_rest()
        except ActivityError as error:
            self._on_failure(error, "")

    def _on_failure(self, error: ActivityError, what: str) -> None:
        """Turn a failed activity into the job's state: missing Deployment, or trouble to retry."""
        message = _failure_message(error)
        if _failure_type(error) == "WorkloadNotFound":
            self._workload_gone(message)
            return
        self.state.last_error = f"{what}{message}"
        self.state.add_event(workflow.now(), "error", self.state.last_error)
        self._trouble = True
        self._set_phase(Phase.ERROR)

    async def _stop_watch(self) -> None:
        """End the watch before the run ends: completing must be the run's last command."""
        task, self._watch_task = self._watch_task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _should_continue_as_new(self) -> bool:
        if self._next is not None or self._pending_change is not None or self._delete is not None:
            return False
        return self._history_long()

    def _history_long(self) -> bool:
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

    # ------------------------------------------------------------------ attach / detach / take over

    def _ref(self) -> dict[str, str]:
        return {"namespace": self.job.namespace, "name": self.job.workload.name, "job": self.job.name}

    async def _attach(self) -> None:
        snapshot = await self._call(port.ATTACH_WORKLOAD, AttachRequest(**self._ref()),
                                    summary=f"attach Deployment {self.job.namespace}/{self.job.workload.name}")
        now = workflow.now()
        self.state.created = self.state.created or now
        self.state.replicas = snapshot.replicas
        self.state.stable_replicas = snapshot.replicas
        self.state.workload_hash = snapshot.template_hash
        self.state.labelled = True
        self.state.stable = self._version(snapshot, Trigger.ATTACH, actor=None)
        self.state.stable.finished = now
        self.state.stable.outcome = Outcome.PROMOTED
        self.state.add_history(self.state.stable)
        self._event("attached", f"took over Deployment {self.job.workload.name}; "
                    f"revision {self.state.stable.revision} ({_images(snapshot.images)}) is stable")
        self._set_phase(Phase.HEALTHY)

    async def _take_over(self, seen: WorkloadSnapshot) -> None:
        """A Deployment of the job's name exists again: hold it as on attach.

        What it runs now is what serves, so its template becomes the stable version (the same
        revision when it is the stable template the job already knew).
        """
        snapshot = await self._call(port.ATTACH_WORKLOAD, AttachRequest(**self._ref()),
                                    summary=f"take Deployment {self.job.workload.name} over again")
        self.state.workload_missing = False
        self.state.labelled = True
        self.state.last_error = None
        self.state.replicas = self.state.stable_replicas = snapshot.replicas
        self.state.canary_replicas = 0
        self.state.weight = self.state.actual_weight = 0
        self._wrote(snapshot.template_hash)
        stable = self.state.stable
        if stable is None or stable.template_hash != snapshot.template_hash:
            version = self._version(snapshot, Trigger.ATTACH, actor=None)
            version.finished, version.outcome = workflow.now(), Outcome.PROMOTED
            version.reason = "the Deployment was created again with this template"
            self.state.stable = version
            self.state.add_history(version)
            stable = version
        self._event("attached", f"Deployment {self.job.workload.name} is back; revision {stable.revision} "
                    f"({_images(stable.images)}) is stable")
        self._set_phase(Phase.HEALTHY)

    def _workload_gone(self, message: str) -> None:
        """The Deployment is missing: say so and wait for the watch to see it again."""
        if not self.state.workload_missing:
            self.state.workload_missing = True
            self._event("workload-deleted", message)
        self.state.last_error = message
        self._pending_change = None
        self._next = None
        # The Services the job made went with the Deployment (ownerReference): set up again on its return.
        self.state.routed, self.state.routes = None, []
        if self.state.canary is None:
            self._set_phase(Phase.WORKLOAD_MISSING)

    async def _detach(self, request: OperationRequest) -> None:
        stable = self.state.stable
        if self.job.blue_green_mode:
            await blue_green.release_services(self, request.actor)
        if self.state.routed is not None:
            try:
                await self._call(port.CLEANUP_ROUTER, self._router_request(self.state.routed),
                                 summary="leave the route at 100 % stable and remove the job's Services")
            except ActivityError as error:
                self._event("error", f"cleaning up the router failed: {_failure_message(error)}", request.actor)
            self.state.routed, self.state.routes = None, []
        try:
            await self._call(
                port.DETACH_WORKLOAD,
                DetachRequest(**self._ref(), template=stable.template if stable else None,
                              replicas=self.state.replicas),
                summary="give the Deployment back",
            )
        except ActivityError as error:
            # Nothing to give back can stop a delete; say what was left as it was.
            self._event("error", f"giving the Deployment back failed: {_failure_message(error)}", request.actor)
        self._event("deleted", "job deleted; the Deployment runs on its own again", request.actor)
        self._set_phase(Phase.DELETED)
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _version(self, snapshot: WorkloadSnapshot, trigger: Trigger, actor: str | None) -> Version:
        revision = self.state.next_revision
        self.state.next_revision += 1
        return Version(revision=revision, template_hash=snapshot.template_hash, images=snapshot.images,
                       trigger=trigger, started=workflow.now(), actor=actor, template=snapshot.template)

    def _wrote(self, template_hash: str) -> None:
        """The Deployment now holds ``template_hash`` by the job's hand: older watch results are stale."""
        self.state.workload_hash = template_hash
        self._writes += 1

    # ------------------------------------------------------------------ watch

    async def _watch_loop(self) -> None:
        """Follow the Deployment; every change is recorded as intent.

        Runs on current code follow the worker's shared watch (reports arrive as signals) and
        watch by themselves only while the Deployment is missing; older runs keep a watch
        activity of their own for as long as they live.
        """
        shared = self.watch and workflow.patched(PATCH_SHARED_WATCH)
        while True:
            writes = self._writes
            try:
                if not self.watch:
                    change = await self._recheck_on_nudge()
                elif shared:
                    observed = await self._next_observation()
                    if observed is None:
                        continue
                    change = observed
                else:
                    change = await self._watch_once()
            except ActivityError as error:
                if isinstance(error.cause, CancelledError):
                    raise asyncio.CancelledError() from None
                if _failure_type(error) == "WorkloadNotFound":
                    change = WorkloadChange(kind="deleted")
                else:
                    # Retrying cannot fix it (forbidden, say): tell the operator, look again later.
                    self.state.last_error = f"watching the Deployment failed: {_failure_message(error)}"
                    self._event("watch-failed", self.state.last_error)
                    await workflow.sleep(MISSING_WORKLOAD_RECHECK, summary="wait before watching again")
                    continue
            if writes != self._writes and change.kind not in ("deleted", "observed"):
                # The job wrote the template meanwhile: look again, from what it wrote.
                self._recheck = self._recheck or not self.watch
                continue
            self._on_workload_change(change)
            if change.kind == "deleted" and self.watch and not workflow.patched(PATCH_WATCH_MISSING):
                await workflow.sleep(MISSING_WORKLOAD_RECHECK, summary="wait for the Deployment to return")

    async def _watch_once(self) -> WorkloadChange:
        missing = self.state.workload_missing and workflow.patched(PATCH_WATCH_MISSING)
        request = WatchRequest(**self._ref(), known_hash=self.state.workload_hash or "",
                               known_replicas=None if self.state.canary is not None else self.state.replicas,
                               known_missing=missing)
        change: WorkloadChange = await workflow.execute_activity(
            port.WATCH_WORKLOAD.name, request, result_type=WorkloadChange,
            start_to_close_timeout=timedelta(hours=24), heartbeat_timeout=WATCH_HEARTBEAT,
            retry_policy=WATCH_RETRY,
            summary="wait for the Deployment to come back" if missing else "watch the Deployment for new versions",
        )
        return change

    async def _next_observation(self) -> WorkloadChange | None:
        """The next change the shared watch reports, or None when there is nothing (new) to act on.

        A missing Deployment is out of the shared watch's sight (it follows labelled ones): the
        job watches for it by name until it is back.
        """
        if self.state.workload_missing:
            return await self._watch_once()
        if not self.state.labelled:
            label = LabelRequest(**self._ref(), known_hash=self.state.workload_hash or "")
            await self._call(port.LABEL_WORKLOAD, label, summary="label the Deployment for the worker's shared watch")
            self.state.labelled = True
        await workflow.wait_condition(lambda: (self._observed is not None and self._writing == 0) or self._recheck
                                      or self.state.workload_missing)
        if self.state.workload_missing:
            return None
        if self._observed is None:
            return await self._recheck_on_nudge()  # a plain nudge: look for ourselves
        change, self._observed = self._observed, None
        if change.kind == "deleted":
            return change
        return self._news(change.snapshot) if change.snapshot is not None else None

    def _news(self, seen: WorkloadSnapshot) -> WorkloadChange | None:
        """What an observation of the Deployment tells the job, or None when it is old news."""
        state = self.state
        if state.workload_uid and seen.uid and seen.uid != state.workload_uid:
            # Deleted and created again while nobody looked: the job lets go of the old one and
            # watches for the new one by name, which takes it over.
            self._workload_gone(f"Deployment {self.job.workload.name} was deleted and created again")
            return None
        if seen.generation and seen.generation <= state.workload_generation:
            return None  # made before a write of the job's own that has since been answered
        state.workload_generation = max(state.workload_generation, seen.generation)
        state.workload_uid = seen.uid or state.workload_uid
        pending = self._pending_change
        if pending is not None and pending.template_hash == seen.template_hash:
            return None  # the edit already waiting its turn
        kind = "template" if seen.template_hash != state.workload_hash else "replicas"
        return WorkloadChange(kind=kind, snapshot=seen)

    async def _recheck_on_nudge(self) -> WorkloadChange:
        await workflow.wait_condition(lambda: self._recheck)
        self._recheck = False
        try:
            snapshot = await self._call(port.INSPECT_WORKLOAD, WorkloadRequest(**self._ref()),
                                        summary="look at the Deployment again")
        except ActivityError as error:
            if _failure_type(error) == "WorkloadNotFound":
                return WorkloadChange(kind="deleted")
            raise
        if self.state.workload_missing:
            return WorkloadChange(kind="created", snapshot=snapshot)
        kind = "template" if snapshot.template_hash != self.state.workload_hash else "replicas"
        return WorkloadChange(kind=kind, snapshot=snapshot)

    def _on_workload_change(self, change: WorkloadChange) -> None:
        if change.kind == "deleted":
            self._workload_gone(f"Deployment {self.job.workload.name} was deleted")
            return
        snapshot = change.snapshot
        if snapshot is None:
            return
        if change.kind == "created" or self.state.workload_missing:
            self._reappeared = snapshot
            return
        if change.kind == "replicas" and self.state.canary is None:
            if snapshot.replicas != self.state.replicas:
                self._event("scaled", f"Deployment scaled from {self.state.replicas} to {snapshot.replicas}")
                self.state.replicas = snapshot.replicas
                self.state.stable_replicas = snapshot.replicas
        if snapshot.template_hash == self.state.workload_hash:
            return
        self.state.workload_hash = snapshot.template_hash
        if self._pending_change is not None or self._next is not None:
            self._event("superseded", f"{_images(snapshot.images)} supersedes the change that was waiting")
        self._next = None
        self._pending_change, self._pending_written = snapshot, True

    # ------------------------------------------------------------------ operations (main loop side)

    async def _run_operation(self, operation: str, request: UpdateVersionRequest | RollbackRequest) -> None:
        if isinstance(request, UpdateVersionRequest):
            snapshot = await self._call(
                port.SET_IMAGE, SetImageRequest(**self._ref(), image=request.image,
                                                container=None if request.container == "*" else request.container),
                summary=f"set image {request.image}",
            )
            self._wrote(snapshot.template_hash)
            await self._deliver_written(snapshot, Trigger.UPDATE_VERSION, request.actor, skip_steps=False)
        else:
            version = self.state.find_version(request.revision)
            if version is None or version.template is None:
                self._event("rejected", f"revision {request.revision} is no longer kept", request.actor)
                return
            snapshot = await self._write_template(version.template,
                                                  f"write revision {request.revision} back to the Deployment")
            await self._deliver_written(snapshot, Trigger.ROLLBACK, request.actor, skip_steps=request.skip_steps)

    async def _write_template(self, template: dict[str, Any], summary: str) -> WorkloadSnapshot:
        snapshot = await self._call(port.WRITE_TEMPLATE, WriteTemplateRequest(**self._ref(), template=template),
                                    summary=summary)
        self._wrote(snapshot.template_hash)
        return snapshot

    async def _deliver_pending(self) -> None:
        """Deliver the user's newest edit; first put it back if a promotion had set it aside."""
        snapshot = self._pending_change
        assert snapshot is not None
        if not self._pending_written:
            snapshot = await self._write_template(snapshot.template, "put the edit made during the promotion back")
        self._pending_change, self._pending_written = None, True
        await self._deliver_written(snapshot, Trigger.EDIT, None, skip_steps=False)

    async def _deliver_written(self, snapshot: WorkloadSnapshot, trigger: Trigger, actor: str | None,
                               *, skip_steps: bool) -> None:
        """Deliver the template now in the Deployment, unless it is the stable one."""
        self.state.workload_hash = snapshot.template_hash
        if self._pending_change is not None and self._pending_change.template_hash == snapshot.template_hash:
            self._pending_change = None
        if self.state.stable is not None and snapshot.template_hash == self.state.stable.template_hash:
            self._event("in-sync", f"the Deployment is back on stable revision {self.state.stable.revision}",
                        actor)
            self._set_phase(Phase.HEALTHY)
            return
        self.state.canary = self._version(snapshot, trigger, actor)
        await self._release(resume=False, skip_steps=skip_steps)

    # ------------------------------------------------------------------ a release

    async def _release(self, *, resume: bool, skip_steps: bool = False) -> None:
        """Run the release of ``state.canary`` to its end: promoted, failed, terminated or superseded.

        ``resume``: a run that continued-as-new mid-release picks it up at its current step.
        """
        canary = self.state.canary
        assert canary is not None
        # Intent meant for an earlier release never applies to this one.
        self._rules_changed = False
        self._promote = self._terminate = None
        start = 0
        if resume:
            start = self.state.current_step or 0
        else:
            self.state.last_error = None
            self.state.reset_steps(self.job.steps)
            self.state.step_analyses, self.state.background = [], None
            self.state.canary_scale = None
            self._event("release-started", f"revision {canary.revision} ({_images(canary.images)}) "
                        f"started by {canary.trigger.value}", canary.actor)
            telemetry.release_started(self.job.namespace, self.job.name, canary)
            self._set_phase(Phase.PROGRESSING)
        handed_over = False
        try:
            await self._deliver(canary, start, resume=resume, skip_steps=skip_steps)
        except ContinueAsNew:
            handed_over = True
            raise
        except Interrupted as interrupted:
            await self._end_interrupted(interrupted.kind)
        except ReleaseFailed as failure:
            await self._abort(Outcome.FAILED, str(failure), actor=None)
        except ActivityError as error:
            if _failure_type(error) == "WorkloadNotFound":
                await self._end_interrupted(Interrupt.MISSING)
            else:
                await self._abort(Outcome.FAILED, _failure_message(error), actor=None)
        finally:
            if not handed_over:
                self._stop_background()
                self._decision = None
                self._opened_gate = None
                self.state.current_step = None
                self.state.pause_until = None
                self.state.pause_reason = None
                self.state.canary_target = None
                self._shift_from = None  # a shift cut by the release's end is not the next release's to undo
                self._unprepared = None
        telemetry.release_finished(self.job.namespace, self.job.name, canary)
        await self._post_rollout(canary)

    async def _deliver(self, canary: Version, start: int, *, resume: bool, skip_steps: bool) -> None:
        """The release's way to stable: prepare the canary, run the steps, pass the analysis, promote."""
        if self.job.blue_green_mode:
            await blue_green.BlueGreenRelease(self).run(canary, resume=resume, skip_steps=skip_steps)
            return
        if not resume:
            if self.job.traffic.router or self.state.routed is not None:
                await self._interruptible(self._ensure_router())
            prepare = CanaryTemplateRequest(**self._ref(), template=canary.template or {},
                                            template_hash=canary.template_hash)
            if self._first_step_prepares(skip_steps) and workflow.patched(PATCH_PREPARE_WITH_FIRST_STEP):
                self._unprepared = prepare
            else:
                await self._prepare_canary(prepare)
        await self._pre_rollout(start, resume=resume, skip_steps=skip_steps)
        if skip_steps:
            self.state.skip_steps(workflow.now(), 0, None, "skipped: rollback without steps")
        elif (resume and self.state.confirming) or await self._run_steps(start):
            await self._finish_background()
            await self._confirm_promotion()
            await self._promote_canary(filled=self._steps_filled_canary())
            return
        await self._promote_canary()

    def _first_step_prepares(self, skip_steps: bool) -> bool:
        """Whether the canary's template can be set by the first step's own activity.

        Only when nothing before that step looks at the canary: the first step is a replica
        ``setWeight``, and no pre-rollout or rollout webhook and no background analysis from
        step one run first. It saves the release an activity and a workflow task.
        """
        steps = self.job.steps
        background = self.job.analysis.background if self.job.analysis is not None else None
        return (not skip_steps and bool(steps) and isinstance(steps[0], SetWeightStep)
                and self.state.routed is None and not self.job.traffic.router
                and not self._hooks(WebhookType.PRE_ROLLOUT) and not self._hooks(WebhookType.ROLLOUT)
                and (background is None or background.starting_step > 0))

    async def _prepare_canary(self, request: CanaryTemplateRequest) -> None:
        """The canary Deployment runs the release's template, at zero pods."""
        revision = self.state.canary.revision if self.state.canary else "?"
        await self._interruptible(self._call(port.PREPARE_CANARY, request,
                                             summary=f"prepare canary revision {revision}"))

    async def _run_steps(self, index: int) -> bool:
        """Run the steps from ``index`` on; False when an operator's promote skipped the rest."""
        while index < len(self.job.steps):
            step = self.job.steps[index]
            self.state.current_step = index
            self.state.mark_step(workflow.now(), index, StepStatus.RUNNING)
            self._show_details()
            self._start_background(index)
            try:
                if self._decision is not None:
                    await self._wait_for_decision(self._decision)
                    # Continued: the background analysis measures afresh, from this step.
                    self._decision, self.state.background = None, None
                    self._start_background(index)
                await self._rollout_hooks(index)
                await self._run_step(index, step)
            except Interrupted as interrupted:
                if interrupted.kind == Interrupt.RULES:
                    index = await self._adopt_new_rules()
                    continue
                if interrupted.kind == Interrupt.PROMOTE:
                    by = self._promote.actor if self._promote else None
                    self._promote = None
                    self.state.mark_step(workflow.now(), index, StepStatus.STOPPED, "ended by promote", by)
                    self.state.skip_steps(workflow.now(), index + 1, None, "skipped by promote", by)
                    return False
                if interrupted.kind == Interrupt.ANALYSIS:
                    # Failed: the release ends. Inconclusive: the step starts again once a human has looked.
                    self._decision = self._background_stopped(index)
                    continue
                # Still running: the release's end says who cut it off (JobState.finish_canary).
                raise
            except ActivityError as error:
                if _failure_type(error) == "WorkloadNotFound":
                    raise
                self.state.mark_step(workflow.now(), index, StepStatus.FAILED, _failure_message(error))
                raise ReleaseFailed(f"step {index + 1} ({describe_step(step)}): {_failure_message(error)}") from None
            except ReleaseFailed as failure:
                self.state.mark_step(workflow.now(), index, StepStatus.FAILED, str(failure))
                raise
            self.state.mark_step(workflow.now(), index, StepStatus.SUCCEEDED)
            index += 1
        return True

    async def _adopt_new_rules(self) -> int:
        """The release goes on under new rules: the step to resume at, by the weight reached."""
        self._rules_changed = False
        # New rules bring their own background analysis (or none), from their startingStep.
        self._stop_background()
        self.state.background, self._decision = None, None
        index = resume_index(self.job.steps, self.state.weight)
        self.state.adopt_rules(workflow.now(), self.job.steps, index)
        if self._unprepared is not None:
            # The new steps may look at the canary before any shift: it gets its template now.
            await self._prepare_canary(self._unprepared)
            self._unprepared = None
        cut, self._shift_from = self._shift_from, None
        if cut is not None and workflow.patched(PATCH_UNDO_CUT_SHIFT):
            await self._undo_cut_shift(*cut)
        return index

    async def _run_step(self, index: int, step: AnyStep) -> None:
        if isinstance(step, SetHeaderRouteStep):
            await self._header_route_step(index, step)
        elif isinstance(step, SetWeightStep) and self.state.routed is not None:
            await self._route_step(step.set_weight, f"step {index + 1}: setWeight {step.set_weight}%")
            self.state.weight = step.set_weight
        elif isinstance(step, SetWeightStep):
            canary = canary_replicas_for_weight(self.state.replicas, step.set_weight)
            await self._shift(canary, stable=self.state.replicas - canary,
                              label=f"step {index + 1}: setWeight {step.set_weight}%")
            self.state.weight = step.set_weight
        elif isinstance(step, SetCanaryScaleStep) and self.state.routed is not None:
            await self._scale_routed_canary(canary_replicas_for_scale(self.state.replicas, step.set_canary_scale),
                                            f"step {index + 1}: {describe_step(step)}")
        elif isinstance(step, SetCanaryScaleStep):
            canary = canary_replicas_for_scale(self.state.replicas, step.set_canary_scale)
            await self._shift(canary, stable=self.state.stable_replicas,
                              label=f"step {index + 1}: {describe_step(step)}")
            self.state.weight = self.state.actual_weight
        elif isinstance(step, AnalysisStep):
            await self._analysis_step(index, step)
        else:
            await self._pause(index, step)

    async def _shift(self, canary: int, *, stable: int, label: str) -> None:
        """Move to ``canary`` canary pods and ``stable`` stable pods without losing capacity.

        Growing the canary comes first and is waited on; the stable side shrinks only once
        the new pods are Ready. Shrinking the canary goes the other way round.
        """
        stable = max(0, stable)
        self.state.canary_target = canary
        self._shift_from = (self.state.canary_replicas, self.state.stable_replicas)
        # Each side's count is recorded as soon as its write is done: an interrupt while the
        # canary's pods come up (new rules, say) leaves the job reporting what the cluster runs.
        if workflow.patched(PATCH_ONE_ACTIVITY_PER_STEP):
            await self._shift_at_once(canary, stable, f"{label}: canary to {canary}, stable to {stable}")
        elif canary >= self.state.canary_replicas:
            await self._scale(port.SCALE_CANARY, canary, f"{label}: scale canary to {canary}")
            if workflow.patched(PATCH_COUNT_EACH_SIDE):
                self.state.canary_replicas = canary
            await self._interruptible(self._wait_canary_ready(canary, label))
            await self._scale(port.SCALE_STABLE, stable, f"{label}: scale stable to {stable}")
        else:
            await self._scale(port.SCALE_STABLE, stable, f"{label}: scale stable to {stable}")
            if workflow.patched(PATCH_COUNT_EACH_SIDE):
                self.state.stable_replicas = stable
            await self._scale(port.SCALE_CANARY, canary, f"{label}: scale canary to {canary}")
        self.state.canary_replicas = canary
        self.state.stable_replicas = stable
        self.state.canary_target = None
        self._shift_from = None
        self.state.actual_weight = effective_weight(canary, stable)
        self._set_phase(Phase.PROGRESSING)

    async def _shift_at_once(self, canary: int, stable: int | None, summary: str, *,
                             only: frozenset[Interrupt] | None = None) -> None:
        """One ``shift_replicas`` activity: canary grown, Ready, stable shrunk (or the other way round).

        Cut short by an interrupt, it is cancelled and waited for (it may be between two writes),
        then both sides are read: the job goes on from what the cluster runs.
        """
        unprepared = self._unprepared
        request = ShiftRequest(**self._ref(), canary=canary, stable=stable, grow=canary >= self.state.canary_replicas,
                               template_hash=self.state.canary.template_hash if self.state.canary else "",
                               known_hash=self.state.workload_hash,
                               prepare=unprepared.template if unprepared is not None else None)
        await self._sides_step(port.SHIFT_REPLICAS, request, summary=summary, only=only)
        self._unprepared = None  # cut short, the next shift sets the template again (a no-op if done)

    async def _sides_step(self, activity: port.Activity[Req, Res], request: Req, *, summary: str,
                          interruptible: bool = True, only: frozenset[Interrupt] | None = None) -> Res:
        """Run a step's activity that resizes a side and waits for its pods, as one watching attempt.

        It may be between two writes when an interrupt (of the kinds ``only``) cuts it short, so
        it is cancelled and waited for, and then both sides are read: the job goes on from what
        the cluster runs. Not ``interruptible``, it is simply waited out.
        """
        started = False

        async def run() -> Res:
            nonlocal started
            started = True
            result: Res = await workflow.execute_activity(
                activity.name, request, result_type=activity.result, **self._wait_options(),
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED, summary=summary)
            return result

        if not interruptible:
            return await run()
        try:
            return await self._interruptible(run(), only=only)
        except Interrupted:
            if started:
                await self._read_sides()
            raise

    async def _read_sides(self) -> None:
        """After a shift cut short: record what each side is sized to (a missing Deployment: as it was)."""
        try:
            sides = await self._call(port.READ_SIDES, WorkloadRequest(**self._ref()),
                                     summary="read both sides after the step was cut short")
        except ActivityError:
            return  # the interrupt's own path handles a missing Deployment or an unreachable cluster
        self.state.canary_replicas = sides.canary
        if sides.stable is not None:
            self.state.stable_replicas = sides.stable

    async def _undo_cut_shift(self, canary: int, stable: int) -> None:
        """New rules cut a step's shift short: put both sides back where that step began.

        The new rules resume from the weight reached before that step (``resume_index``), so the
        pods must match it again, not a half-made step (a canary grown, stable not yet shrunk).
        Stable grows first, so capacity never dips. Not interruptible: two quick writes.
        """
        label = "new rules: back to where the cut step began"
        if workflow.patched(PATCH_ONE_ACTIVITY_PER_STEP):
            # Stable first, then the canary: ``grow`` False waits for nothing.
            await self._call(port.SHIFT_REPLICAS, ShiftRequest(
                **self._ref(), canary=canary, stable=stable, grow=False,
                template_hash=self.state.canary.template_hash if self.state.canary else "",
                known_hash=self.state.workload_hash), summary=f"{label}: stable to {stable}, canary to {canary}")
            self.state.canary_replicas, self.state.stable_replicas = canary, stable
            self.state.canary_target = None
            self.state.actual_weight = effective_weight(canary, stable)
            return
        await self._call(port.SCALE_STABLE, ScaleRequest(**self._ref(), replicas=stable,
                                                         known_hash=self.state.workload_hash),
                         summary=f"{label}: scale stable to {stable}")
        self.state.stable_replicas = stable
        await self._call(port.SCALE_CANARY, ScaleRequest(**self._ref(), replicas=canary),
                         summary=f"{label}: scale canary to {canary}")
        self.state.canary_replicas = canary
        self.state.canary_target = None
        self.state.actual_weight = effective_weight(canary, stable)

    async def _route_step(self, weight: int, label: str) -> None:
        """With a router: enough canary pods for ``weight``, Ready, and only then ``weight`` on the route.

        The stable side keeps its full size: the router, not the pod count, splits the traffic.
        A ``setCanaryScale`` earlier in the release fixes the canary's size; a canary that has
        any weight has at least one pod. Shrinking goes the other way round: weight first.
        """
        scale = self.state.canary_scale
        canary = scale if scale is not None else canary_replicas_for_weight(self.state.replicas, weight)
        if weight > 0:
            canary = max(1, canary)
        growing = canary >= self.state.canary_replicas
        if growing and canary > 0:
            await self._grow_canary(canary, label)
        stable = stable_replicas_for_weight(self.state.replicas, weight) if self._dynamic_stable() else None
        if stable is not None and (stable > self.state.stable_replicas or weight < self.state.actual_weight):
            # Weight comes back to stable (or it has too few pods): its pods serve first.
            await self._grow_stable(max(stable, self.state.stable_replicas), label)
        await self._interruptible(self._route_weight(weight, f"{label}: route {weight}% to the canary"))
        if stable is not None and stable < self.state.stable_replicas:
            # Not interruptible: one quick write, so none lands after the rollback that may follow.
            await self._call(port.SCALE_STABLE, ScaleRequest(**self._ref(), replicas=stable,
                                                             known_hash=self.state.workload_hash),
                             summary=f"{label}: scale stable to {stable}")
            self.state.stable_replicas = stable
        if not growing:
            await self._scale(port.SCALE_CANARY, canary, f"{label}: scale canary to {canary}")
        self.state.canary_replicas = canary
        self.state.canary_target = None
        self._set_phase(Phase.PROGRESSING)

    def _dynamic_stable(self) -> bool:
        """Whether the router the release runs through sizes the stable side to its weight."""
        return self.state.routed is not None and self.state.routed.dynamic_stable_scale

    async def _grow_stable(self, replicas: int, label: str, *, interruptible: bool = True) -> None:
        """``dynamicStableScale``: stable to ``replicas`` pods, waited for until that many are available.

        Interruptible inside a step: cut short, the attempt is cancelled and waited for, then both
        sides are read, as for a step's shift. The end of a release waits it out instead: the
        route must not send stable its traffic back before its pods serve.
        """
        stable = self.state.stable
        assert stable is not None
        routed = self.state.routed
        request = GrowStableRequest(**self._ref(), replicas=replicas, template_hash=stable.template_hash,
                                    known_hash=self.state.workload_hash,
                                    service=routed.stable_service if routed is not None else None)
        await self._sides_step(port.GROW_STABLE, request, summary=f"{label}: stable to {replicas}, available",
                               interruptible=interruptible)
        self.state.stable_replicas = replicas

    async def _header_route_step(self, index: int, step: SetHeaderRouteStep) -> None:
        """``setHeaderRoute``: requests that match go to the canary, whatever the weight; no match removes it.

        A canary with no pod yet (a header route before any ``setWeight``, as in an A/B test at
        weight 0) first gets one Ready pod, or the matching requests would reach nobody.
        """
        label = f"step {index + 1}: {describe_step(step)}"
        self.state.header_routes = apply_header_route(self.state.header_routes, step.set_header_route)
        if self.state.routed is None:
            return  # the spec refuses header routes without a router; rules from before that hold none
        if self.state.header_routes and self.state.canary_replicas == 0:
            canary = max(1, self.state.canary_scale or 1)
            await self._grow_canary(canary, label)
            self.state.canary_replicas = canary
            self.state.canary_target = None
        await self._interruptible(self._route_weight(self.state.weight, label))
        self._set_phase(Phase.PROGRESSING)

    async def _scale_routed_canary(self, canary: int, label: str) -> None:
        """With a router, ``setCanaryScale``: the canary's size from now on, the weight unchanged."""
        if self.state.weight > 0:
            canary = max(1, canary)  # a canary with weight and no pod would answer nobody
        self.state.canary_scale = canary
        if canary >= self.state.canary_replicas:
            await self._grow_canary(canary, label)
        else:
            await self._scale(port.SCALE_CANARY, canary, f"{label}: scale canary to {canary}")
        self.state.canary_replicas = canary
        self.state.canary_target = None
        self._set_phase(Phase.PROGRESSING)

    async def _grow_canary(self, canary: int, label: str) -> None:
        """Scale the canary to ``canary`` pods and wait until they are Ready."""
        self.state.canary_target = canary
        if workflow.patched(PATCH_ONE_ACTIVITY_PER_STEP):
            await self._shift_at_once(canary, None, f"{label}: canary to {canary}, Ready")
            return
        await self._scale(port.SCALE_CANARY, canary, f"{label}: scale canary to {canary}")
        await self._interruptible(self._wait_canary_ready(canary, label))

    async def _scale(self, activity: port.Activity[ScaleRequest, None], replicas: int, summary: str) -> None:
        known = self.state.workload_hash if activity is port.SCALE_STABLE else None
        await self._interruptible(self._call(activity, ScaleRequest(**self._ref(), replicas=replicas,
                                                                    known_hash=known), summary=summary))

    async def _wait_canary_ready(self, replicas: int, label: str) -> None:
        canary_hash = self.state.canary.template_hash if self.state.canary else ""
        await workflow.execute_activity(
            port.WAIT_CANARY_READY.name,
            ReadyRequest(**self._ref(), replicas=replicas, template_hash=canary_hash),
            **self._wait_options(),
            summary=f"{label}: wait for {replicas} canary pods Ready",
        )

    def _wait_options(self) -> dict[str, Any]:
        """Activity options of a wait (canary Ready, Deployment rolled out): one watching attempt.

        The attempt watches until the condition holds or the progress deadline is near, and
        heartbeats; a dead worker's wait moves to another worker within ``WATCH_HEARTBEAT``.
        Runs scheduled by older code poll with short attempts instead; the activity serves both.
        """
        return {"start_to_close_timeout": self.job.progress_deadline,
                "schedule_to_close_timeout": self.job.progress_deadline,
                "heartbeat_timeout": WATCH_HEARTBEAT, "retry_policy": POLL_RETRY}

    async def _pause(self, index: int, step: PauseStep) -> None:
        timeout = step.pause.duration if step.pause.duration is not None else self.job.max_pause
        resumed_until = self.state.pause_until if self.state.current_step == index else None
        if resumed_until is not None and self.state.phase == Phase.PAUSED:
            # A resumed pause keeps its end (and a timer needs a positive length).
            timeout = max(timedelta(seconds=1), remaining(workflow.now(), resumed_until) or timedelta(0))
        else:
            self.state.gate += 1
            self.state.pause_until = workflow.now() + timeout if timeout is not None else None
        gate = self.state.gate
        self._set_phase(Phase.PAUSED)
        label = f"step {index + 1}: {describe_step(step)}"
        evicted = handed_over = False
        try:
            await self._interruptible(workflow.wait_condition(
                lambda: self._opened_gate == gate or self._can_hand_over(), timeout=timeout, timeout_summary=label,
            ))
            if self._opened_gate != gate:
                handed_over = True
                raise ContinueAsNew()
            self._event("continued", f"step {index + 1} continued", self._continue_actor)
            self.state.note_step(index, "continued", self._continue_actor)
        except TimeoutError:
            if (step.pause.on_timeout or self.job.on_pause_timeout) == PauseTimeoutAction.ROLLBACK:
                raise ReleaseFailed(f"{label} timed out and its policy is to roll back") from None
            self._event("pause-ended", f"{label} ran out; continuing")
            self.state.note_step(index, "ran out")
        except GeneratorExit:
            # The worker evicts this run from its cache: no workflow calls may happen now.
            evicted = True
            raise
        finally:
            if not evicted and not handed_over:
                self.state.pause_until = None
                self._set_phase(Phase.PROGRESSING)

    # ------------------------------------------------------------------ webhooks
    #
    # Flagger's gates (docs/webhooks.md). A job without webhooks issues no command here, so the
    # histories of jobs that have none replay unchanged. Gates an operator has overridden
    # (promote, a rollback without steps) are not asked.

    def _hooks(self, kind: WebhookType) -> list[Webhook]:
        return [hook for hook in self.job.webhooks if hook.type is kind]

    async def _call_hook(self, hook: Webhook, version: Version, *, step: int | None = None,
                         outcome: Outcome | None = None, reason: str | None = None) -> WebhookResult:
        """One call; a failed activity (no worker took it in time) is a no like any other."""
        body = WebhookBody(job=self.job.name, namespace=self.job.namespace, workload=self.job.workload.name,
                           revision=version.revision, images=version.images, phase=self.state.phase.value,
                           step=step, type=hook.type, name=hook.name, metadata=hook.metadata,
                           outcome=outcome.value if outcome is not None else None, reason=reason)
        request = WebhookRequest(url=hook.url, timeout_seconds=hook.timeout.total_seconds(), body=body)
        try:
            result: WebhookResult = await workflow.execute_activity(
                port.CALL_WEBHOOK.name, request, result_type=WebhookResult,
                start_to_close_timeout=hook.timeout + WEBHOOK_SLACK, retry_policy=WEBHOOK_RETRY,
                # An answer no longer wanted is left unheard, with no cancel request to race it.
                cancellation_type=ActivityCancellationType.ABANDON,
                summary=f"{hook.type.value} webhook {hook.name}",
            )
        except ActivityError as error:
            if isinstance(error.cause, CancelledError):
                raise asyncio.CancelledError() from None
            return WebhookResult(ok=False, message=f"{hook.type.value} webhook {hook.name}: "
                                 f"{_failure_message(error)}")
        return result

    async def _ask(self, kind: WebhookType, *, step: int | None = None) -> WebhookResult | None:
        """Ask every hook of ``kind`` in order; the first no (None when all said yes)."""
        canary = self.state.canary
        assert canary is not None
        for hook in self._hooks(kind):
            result = await self._call_hook(hook, canary, step=step)
            if not result.ok:
                return result
            if kind is not WebhookType.CONFIRM_PROMOTION:
                self._event("webhook", result.message)
        return None

    async def _pre_rollout(self, start: int, *, resume: bool, skip_steps: bool) -> None:
        """Before any traffic reaches the canary (it exists, at zero pods): a no fails the release."""
        self._hooked_step = start if resume else None  # a resumed step asked its hooks already
        if resume or skip_steps or not self._hooks(WebhookType.PRE_ROLLOUT):
            return
        # Promote and new rules wait for the answer; the steps act on them.
        refused = await self._interruptible(self._ask(WebhookType.PRE_ROLLOUT), only=BEFORE_PROMOTION_INTERRUPTS)
        if refused is not None:
            self._event("webhook", refused.message)
            raise ReleaseFailed(f"{refused.message}; no traffic reached the canary")

    async def _rollout_hooks(self, index: int) -> None:
        """Before each step (Flagger: each iteration): a no fails the step, and so the release."""
        if index == self._hooked_step or not self._hooks(WebhookType.ROLLOUT):
            return
        refused = await self._interruptible(self._ask(WebhookType.ROLLOUT, step=index + 1))
        if refused is not None:
            self._event("webhook", refused.message)
            raise ReleaseFailed(f"step {index + 1}: {refused.message}")
        self._hooked_step = index

    async def _confirm_promotion(self) -> None:
        """Hold the promotion until every confirm-promotion hook says yes, or an operator promotes."""
        if not self._hooks(WebhookType.CONFIRM_PROMOTION):
            return
        if not self.state.confirming:
            self.state.confirming = True
            self.state.gate += 1  # continue (or promote) accepted while it waits passes this gate
        evicted = handed_over = False
        try:
            await self._interruptible(self._await_confirmation(self.state.gate), only=BEFORE_PROMOTION_INTERRUPTS)
        except ContinueAsNew:
            handed_over = True
            raise
        except GeneratorExit:
            evicted = True
            raise
        finally:
            if not evicted and not handed_over:
                self.state.confirming = False
                if self.state.pause_reason is not None:
                    self.state.pause_reason = None
                    self._set_phase(Phase.PROGRESSING)

    async def _await_confirmation(self, gate: int) -> None:
        """Ask every CONFIRM_POLL; one timer and one call a round, and a hand-over when the history is long."""
        def overridden() -> bool:
            return self._opened_gate == gate or self._promote is not None

        while True:
            if overridden():
                actor = self._continue_actor if self._opened_gate == gate else (
                    self._promote.actor if self._promote else None)
                self._promote = None
                self._event("webhook", "confirm-promotion passed by an operator", actor)
                return
            # After the last step, new rules change only which hooks are asked (read every round).
            self._rules_changed = False
            refused = await self._ask(WebhookType.CONFIRM_PROMOTION)
            if refused is None:
                self._event("webhook", "confirm-promotion: every hook said yes")
                return
            if self.state.pause_reason is None:
                self._event("webhook", refused.message)
                self._set_phase(Phase.PAUSED)
            self.state.pause_reason = f"{refused.message}; asking again every {CONFIRM_POLL.seconds}s"
            if self._can_hand_over() and not overridden():  # an accepted continue is not carried over
                raise ContinueAsNew()
            try:
                await workflow.wait_condition(overridden, timeout=CONFIRM_POLL,
                                              timeout_summary="ask the confirm-promotion webhooks again")
            except TimeoutError:
                pass

    async def _post_rollout(self, version: Version) -> None:
        """Tell post-rollout hooks how the release ended; their answer is recorded, never acted on."""
        if version.outcome is None:
            return
        for hook in self._hooks(WebhookType.POST_ROLLOUT):
            result = await self._call_hook(hook, version, outcome=version.outcome, reason=version.reason)
            self._event("webhook", result.message if result.ok else f"{result.message} (the outcome stands)")

    # ------------------------------------------------------------------ analysis

    async def _analysis_step(self, index: int, step: AnalysisStep) -> None:
        """Measure until the step's verdict: successful goes on, failed rolls back, inconclusive asks a human."""
        label = f"step {index + 1}: {describe_step(step)}"
        resumed = self.state.step_analyses[-1] if self.state.step_analyses else None
        if resumed is not None and resumed.step == index and not resumed.stopped:
            run = resumed  # handed over by the previous run: its measurements count
        else:
            run = AnalysisRun.start(self.job.analysis, step.analysis, AnalysisKind.STEP, index, workflow.now())
            self.state.step_analyses.append(run)
        await self._analysis_verdict(run, label)

    async def _analysis_verdict(self, run: AnalysisRun, label: str, *, only: frozenset[Interrupt] | None = None,
                                decision_only: frozenset[Interrupt] | None = None) -> None:
        """Measure ``run`` until its verdict (a step's, or blue-green's pre- or post-promotion analysis).

        Failed raises :class:`ReleaseFailed`; inconclusive waits for a human at a gate (open to the
        interrupts ``decision_only``). A hand-over to a fresh run leaves ``run`` going, so the next
        run resumes it with its measurements; any other way out stops it. ``only``: the interrupts
        that cut the measuring short.
        """
        handed_over = False
        try:
            verdict = await self._interruptible(self._run_analysis(run, hand_over=True), only=only)
        except ContinueAsNew:
            handed_over = True
            raise
        finally:
            if not handed_over:
                run.stopped = True
        self._event(f"analysis-{verdict.phase.value}", f"{label}: {verdict.reason}")
        if verdict.phase is MetricPhase.FAILED:
            raise ReleaseFailed(f"{label} failed: {verdict.reason}")
        if verdict.phase is not MetricPhase.SUCCESSFUL:
            await self._wait_for_decision(f"{label} inconclusive: {verdict.reason}", only=decision_only)

    def _start_background(self, index: int) -> None:
        """Start (or, after continue-as-new, resume) the background analysis once its starting step is reached."""
        background = self.job.analysis.background if self.job.analysis is not None else None
        if background is None or index < background.starting_step:
            return
        if self.state.background is None:
            self.state.background = AnalysisRun.start(self.job.analysis, background, AnalysisKind.BACKGROUND,
                                                      index, workflow.now())
            self._event("analysis-started", f"background analysis from step {index + 1}: "
                        f"{', '.join(metric.metric.name for metric in self.state.background.metrics)}")
        if self._background_task is None and not self.state.background.stopped:
            self._background_task = asyncio.ensure_future(self._run_analysis(self.state.background))

    def _stop_background(self) -> None:
        """Stop measuring in the background (a release that ends, new rules, a human's turn)."""
        if self._background_task is not None:
            if not self._background_task.done():
                self._background_task.cancel()
            self._background_task = None
        if self.state.background is not None:
            self.state.background.stopped = True

    def _background_verdict(self) -> MetricPhase | None:
        """FAILED or INCONCLUSIVE while a running background analysis says so (an interrupt), else None."""
        run = self.state.background
        if run is None or run.stopped:
            return None
        phase = run.verdict().phase
        return phase if phase in (MetricPhase.FAILED, MetricPhase.INCONCLUSIVE) else None

    def _end_background(self, index: int | None) -> Verdict:
        """Stop the background analysis and judge it; failed ends the release (and step ``index``)."""
        run = self.state.background
        assert run is not None
        self._stop_background()
        verdict = run.verdict()
        self._event(f"analysis-{verdict.phase.value}", f"background analysis: {verdict.reason}")
        if verdict.phase is MetricPhase.FAILED:
            if index is not None:
                self.state.mark_step(workflow.now(), index, StepStatus.FAILED, verdict.reason)
            raise ReleaseFailed(f"background analysis failed: {verdict.reason}")
        return verdict

    def _background_stopped(self, index: int) -> str:
        """Stop the background analysis that interrupted step ``index``; the reason a human must look at."""
        return f"background analysis inconclusive: {self._end_background(index).reason}"

    async def _finish_background(self) -> None:
        """Before promotion: the background analysis ends, and its verdict must allow the promotion."""
        if self.state.background is None or self.state.background.stopped:
            return
        verdict = self._end_background(None)
        if verdict.phase is not MetricPhase.SUCCESSFUL:
            # After the last step: new rules are for the next release, and promote is as good as continue.
            await self._wait_for_decision(f"background analysis inconclusive: {verdict.reason}",
                                          only=BEFORE_PROMOTION_INTERRUPTS)

    async def _wait_for_decision(self, reason: str, *, only: frozenset[Interrupt] | None = None) -> None:
        """Wait at a gate, with ``reason`` shown, for a human's ``continue`` (or terminate, promote...)."""
        self.state.gate += 1
        gate = self.state.gate
        self.state.pause_reason = reason
        self._set_phase(Phase.PAUSED)
        evicted = False
        try:
            await self._interruptible(workflow.wait_condition(
                lambda: self._opened_gate == gate or (only is not None and self._promote is not None)), only=only)
            if self._opened_gate != gate:
                self._promote = None
            self._event("continued", f"continued after: {reason}", self._continue_actor)
        except GeneratorExit:
            evicted = True
            raise
        finally:
            if not evicted:
                self.state.pause_reason = None
                self._set_phase(Phase.PROGRESSING)

    async def _run_analysis(self, run: AnalysisRun, *, hand_over: bool = False) -> Verdict:
        """Measure every metric of ``run`` on its schedule until the run has its verdict.

        ``hand_over``: a long analysis (thousands of measurements) continues-as-new when the
        history grows long, like a pause does, and the next run picks it up where it was.
        """
        tasks = [asyncio.ensure_future(self._measure_metric(run, metric)) for metric in run.metrics]

        def handing_over() -> bool:
            return hand_over and not run.decided and self._can_hand_over()

        try:
            await workflow.wait_condition(lambda: run.decided or all(task.done() for task in tasks) or handing_over())
            if handing_over():
                raise ContinueAsNew()
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return run.verdict()

    async def _measure_metric(self, run: AnalysisRun, metric: MetricRun) -> None:
        spec = metric.metric
        while not run.decided:
            due = metric.due(run.started_at)
            if due is None:
                return
            if due > workflow.now():
                await workflow.sleep(due - workflow.now(), summary=f"analysis: next {spec.name} measurement")
                if run.decided:
                    return
            timeout = MEASURE_TIMEOUT
            if spec.provider.web is not None:
                timeout = max(timeout, timedelta(seconds=spec.provider.web.timeout_seconds) + MEASURE_SLACK)
            self._measuring += 1
            try:
                measurement = await workflow.execute_activity(
                    port.MEASURE_METRIC.name, MeasureRequest.of(spec), result_type=Measurement,
                    start_to_close_timeout=timeout, retry_policy=MEASURE_RETRY,
                    # A measurement only reads: one no longer wanted is left to finish unheard, with
                    # no cancel request to race its completion.
                    cancellation_type=ActivityCancellationType.ABANDON,
                    summary=f"measure {spec.name} ({metric.template})",
                )
            except ActivityError as error:
                measurement = Measurement(phase=MeasurementPhase.ERROR,
                                          message=f"{spec.name}: {_failure_message(error)}"[:1000])
            finally:
                self._measuring -= 1
            # The workflow's clock, not the worker's: the schedule must replay (and skip time) alike.
            metric.record(measurement.model_copy(update={"at": workflow.now()}))

    def _can_hand_over(self) -> bool:
        """A long release continues-as-new while it waits at a pause (never mid-step)."""
        return (self._interrupt() is None and self._measuring == 0 and self._history_long()
                and workflow.patched(PATCH_RELEASE_CONTINUE_AS_NEW))

    def _steps_filled_canary(self) -> bool:
        """The steps ended on a replica shift to 100%: the canary runs every replica, their pods Ready.

        That shift waited for the pods and left stable at zero, so the promotion need not grow
        and wait for the canary again. After a pause or an analysis, or with a router, it does.
        """
        steps = self.job.steps
        return (self.state.routed is None and bool(steps) and isinstance(steps[-1], SetWeightStep)
                and steps[-1].set_weight == 100 and self.state.canary_target is None
                and self.state.canary_replicas == self.state.replicas)

    async def _promote_canary(self, *, filled: bool = False) -> None:
        """Make the canary's version stable; ``filled``: the last step left the canary carrying everything."""
        canary = self.state.canary
        assert canary is not None
        self._set_phase(Phase.PROMOTING)
        self.state.current_step = None
        if not workflow.patched(PATCH_HELD_PROMOTION):
            await self._promote_by_rollout(canary)
            return
        replicas, label = self.state.replicas, f"promote revision {canary.revision}"
        at_once = workflow.patched(PATCH_ONE_ACTIVITY_PER_STEP)
        # 1. The canary carries all the traffic while the Deployment changes version.
        if not (at_once and filled and workflow.patched(PATCH_PROMOTE_FULL_CANARY)):
            await self._canary_takes_all(label, at_once=at_once)
        self.state.canary_replicas = replicas
        if at_once:
            if not await self._promote_held(canary, label):
                return
            if self.state.routed is None:
                self.state.canary_replicas = 0  # promote_held scaled it down last
                self._promoted(canary)
                return
        elif not await self._promote_stepwise(canary, label):
            return
        if self.state.routed is not None:
            # The stable Service selects the new version's pods; then the route sends everything there.
            await self._call(port.PREPARE_ROUTER_SERVICES, self._services_request(canary),
                             summary=f"{label}: aim the stable Service at revision {canary.revision}")
            await self._route_weight(0, f"{label}: route 100% to stable")
        await self._call(port.SCALE_CANARY, ScaleRequest(**self._ref(), replicas=0), summary="scale the canary down")
        self._promoted(canary)

    async def _canary_takes_all(self, label: str, *, at_once: bool) -> None:
        """The canary at full size and Ready (and, with a router, all traffic on it); failing, the release fails."""
        replicas = self.state.replicas
        try:
            if at_once:
                await self._shift_at_once(replicas, None, f"{label}: canary to {replicas}, Ready",
                                          only=PROMOTION_INTERRUPTS)
            else:
                await self._call(port.SCALE_CANARY, ScaleRequest(**self._ref(), replicas=replicas),
                                 summary=f"{label}: scale canary to {replicas}")
                await self._interruptible(self._wait_canary_ready(replicas, label), only=PROMOTION_INTERRUPTS)
            if self.state.routed is not None:
                # The canary's pods take all the traffic while the stable side changes version.
                await self._route_weight(100, f"{label}: route 100% to the canary")
        except ActivityError as error:
            if _failure_type(error) == "WorkloadNotFound":
                raise
            raise ReleaseFailed(f"promotion: {_failure_message(error)}") from None

    async def _promote_stepwise(self, canary: Version, label: str) -> bool:
        """Step 2 on older runs: one activity per write and wait; False when it failed (and was undone)."""
        replicas = self.state.replicas
        try:
            # 2. The paused Deployment, emptied, gets the canary's ReplicaSet and grows it.
            await self._hold_stable(canary, 0)
            await self._hold_stable(canary, replicas)
            await self._interruptible(workflow.execute_activity(
                port.WAIT_STABLE_ROLLED_OUT.name,
                RolloutRequest(**self._ref(), replicas=replicas, template_hash=canary.template_hash, held=True),
                **self._wait_options(), summary=f"{label}: wait for the Deployment's pods",
            ), only=PROMOTION_INTERRUPTS)
        except ActivityError as error:
            if _failure_type(error) == "WorkloadNotFound":
                raise
            await self._restore_stable(f"promotion failed: {_failure_message(error)}")
            return False
        return True

    async def _promote_held(self, canary: Version, label: str) -> bool:
        """Step 2 as one ``promote_held`` activity (the canary to zero too, unless a router must move first).

        False when it failed, after putting the stable version back. An edit it set aside comes
        back in its result, or in its failure, and is the next release either way.
        """
        replicas = self.state.replicas
        request = HeldPromotionRequest(**self._ref(), template=canary.template or {},
                                       template_hash=canary.template_hash, replicas=replicas,
                                       canary_down=self.state.routed is None,
                                       reuse_pods=self.job.analysis is None or not self.job.analysis.templates)
        self._writing += 1
        try:
            held: HoldStableResult = await self._interruptible(workflow.execute_activity(
                port.PROMOTE_HELD.name, request, result_type=HoldStableResult, **self._wait_options(),
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"{label}: the Deployment to revision {canary.revision}, its pods available",
            ), only=PROMOTION_INTERRUPTS)
        except ActivityError as error:
            if _failure_type(error) == "WorkloadNotFound":
                raise
            self._held(canary, replicas, _displaced_by(error))
            await self._restore_stable(f"promotion failed: {_failure_message(error)}")
            return False
        finally:
            self._writing -= 1
        self.state.workload_generation = max(self.state.workload_generation, held.generation)
        self._held(canary, replicas, held.displaced)
        return True

    def _held(self, version: Version, replicas: int, displaced: WorkloadSnapshot | None, *,
              replacing: str | None = None) -> None:
        """The Deployment is held on ``version`` at ``replicas``; an edit set aside there is the next release."""
        self.state.stable_replicas = replicas
        if displaced is not None:
            self._wrote(version.template_hash)
            if displaced.template_hash not in (version.template_hash, replacing):
                self._event("edit-held", f"an edit ({_images(displaced.images)}) arrived while the Deployment "
                            "was changing version; it is the next release")
                self._pending_change, self._pending_written = displaced, False

    async def _hold_stable(self, version: Version, replicas: int, *, replacing: str | None = None) -> None:
        """Hold the Deployment on ``version`` at ``replicas``; an edit found there waits its turn.

        ``replacing``: the template hash the job itself means to replace (a failed promotion's).
        """
        request_fields = {**self._ref(), "template": version.template or {}, "template_hash": version.template_hash}
        if replicas == 0:
            held = await self._call(port.PREPARE_STABLE, StableRevisionRequest(**request_fields),
                                    summary=f"give the Deployment a ReplicaSet for revision {version.revision}")
        else:
            held = await self._call(port.HOLD_STABLE, HoldStableRequest(**request_fields, replicas=replicas),
                                    summary=f"scale the Deployment to {replicas} on revision {version.revision}")
        self._held(version, replicas, held.displaced, replacing=replacing)

    async def _restore_stable(self, reason: str) -> None:
        """Put the Deployment back on the stable version after a failed promotion, paused."""
        stable = self.state.stable
        assert stable is not None and stable.template is not None
        self._set_phase(Phase.ROLLING_BACK)
        replicas = self.state.replicas
        failed = self.state.canary.template_hash if self.state.canary else None
        await self._hold_stable(stable, 0, replacing=failed)
        await self._hold_stable(stable, replicas, replacing=failed)
        try:
            # Interruptible: a delete or a new edit need not wait for slow stable pods.
            await self._interruptible(workflow.execute_activity(
                port.WAIT_STABLE_ROLLED_OUT.name,
                RolloutRequest(**self._ref(), replicas=replicas, template_hash=stable.template_hash, held=True),
                **self._wait_options(), summary=f"restore revision {stable.revision} on the Deployment's pods",
            ))
        except ActivityError as error:
            if _failure_type(error) == "WorkloadNotFound":
                raise
            reason += f"; revision {stable.revision} is back in the Deployment but {_failure_message(error)}"
        await self._abort(Outcome.FAILED, reason, actor=None)

    async def _promote_by_rollout(self, canary: Version) -> None:
        """How runs started on older code promote: unpause the Deployment and let it roll out."""
        request = self._ref()
        await self._call(port.PROMOTE_STABLE, PromoteRequest(**request, replicas=self.state.replicas,
                                                         known_hash=self.state.workload_hash),
                         summary=f"promote revision {canary.revision}: roll the Deployment out")
        await workflow.execute_activity(
            port.WAIT_STABLE_ROLLED_OUT.name,
            RolloutRequest(**request, replicas=self.state.replicas, template_hash=canary.template_hash),
            **self._wait_options(),
            summary=f"promote revision {canary.revision}: wait for the Deployment to roll out",
        )
        await self._call(port.PAUSE_STABLE, WorkloadRequest(**request),
                         summary="hold the Deployment for the next release")
        await self._call(port.SCALE_CANARY, ScaleRequest(**request, replicas=0), summary="scale the canary down")
        self._promoted(canary)

    def _promoted(self, canary: Version) -> None:
        self.state.canary_replicas = 0
        self.state.stable_replicas = self.state.replicas
        self.state.weight = self.state.actual_weight = 0
        self.state.finish_canary(workflow.now(), Outcome.PROMOTED, None)
        self._event("promoted", f"revision {canary.revision} ({_images(canary.images)}) is stable")
        self.state.stable = canary
        self._set_phase(Phase.HEALTHY)

    async def _end_interrupted(self, kind: Interrupt) -> None:
        if kind == Interrupt.MISSING:
            # Deleting the Deployment took the canary with it (ownerReference): nothing to write.
            canary = self.state.canary
            reason = f"Deployment {self.job.workload.name} was deleted"
            self.state.finish_canary(workflow.now(), Outcome.FAILED, reason)
            if canary is not None:
                self._event(Outcome.FAILED.value, f"revision {canary.revision}: {reason}")
            self.state.canary_replicas = self.state.weight = self.state.actual_weight = 0
            self._workload_gone(reason)
            if self.job.blue_green_mode:
                await blue_green.forget(self)
            self._set_phase(Phase.WORKLOAD_MISSING)
        elif kind == Interrupt.TERMINATE:
            request, self._terminate = self._terminate, None
            assert request is not None
            await self._abort(Outcome.TERMINATED, request.reason or "terminated by an operator", actor=request.actor)
        elif kind == Interrupt.DELETE:
            assert self._delete is not None
            await self._abort(Outcome.TERMINATED, "the job is being deleted", actor=self._delete.actor)
        else:
            request = self._next[1] if self._next is not None else None
            if isinstance(request, RollbackRequest):
                outcome, reason = Outcome.ROLLED_BACK, f"rolled back to revision {request.revision}"
            elif request is not None:
                outcome, reason = Outcome.SUPERSEDED, "a new version was set"
            else:
                outcome, reason = Outcome.SUPERSEDED, "the Deployment's pod template changed again"
            await self._abort(outcome, reason, actor=request.actor if request else None, final=False)

    async def _come_to_rest(self) -> None:
        """No release: stable at full size, the canary at zero, traffic on stable, in the mode's order.

        Blue-green switches the active Service back to blue before green goes, also when a
        recovery retries a rollback that failed half-way (green must not vanish under users).
        """
        if self.job.blue_green_mode:
            await blue_green.settle(self)
        else:
            await self._settle()

    async def _abort(self, outcome: Outcome, reason: str, *, actor: str | None, final: bool = True) -> None:
        """Send all traffic back to stable and scale the canary down; record why."""
        self._set_phase(Phase.ROLLING_BACK)
        canary = self.state.canary
        self.state.finish_canary(workflow.now(), outcome, reason, actor)
        if canary is not None:
            self._event(outcome.value, f"revision {canary.revision}: {reason}", actor)
        if outcome == Outcome.FAILED:
            self.state.last_error = f"revision {canary.revision if canary else '?'} failed: {reason}"
        try:
            await self._come_to_rest()
        except ActivityError as error:
            self._on_failure(error, "rolling back: ")
            return
        if not final and self._terminate is not None:
            # Terminated while giving way to a newer version: that version was dropped.
            self._terminate, final, outcome = None, True, Outcome.TERMINATED
        if final:
            self._set_phase(Phase.FAILED if outcome == Outcome.FAILED else Phase.TERMINATED)
        else:
            self._set_phase(Phase.HEALTHY)

    async def _settle(self) -> None:
        """Stable at full size, canary at zero: where the job rests between releases.

        With a router, all traffic goes to stable first, before any pod goes away.
        """
        request = self._ref()
        if self.job.traffic.router or self.state.routed is not None:
            await self._ensure_router()
            if self._dynamic_stable() and self.state.stable is not None:
                # The stable side was sized to its weight: all of it serves before it gets all the traffic.
                await self._grow_stable(self.state.replicas, "roll back", interruptible=False)
            if self.state.routed is not None:
                try:
                    await self._route_weight(0, "roll back: route 100% to stable")
                except ActivityError as error:
                    if _failure_type(error) != ROUTER_CONFIG_INVALID:
                        raise
                    # The route is gone or no longer fits: it sends nothing to the canary the job can
                    # stop, so the canary goes anyway; the user sees why the route was not written.
                    self._event("error", f"the route was not set to 100% stable: {_failure_message(error)}")
        # Stable first, so capacity never dips while the canary goes away.
        await self._call(port.SCALE_STABLE, ScaleRequest(**request, replicas=self.state.replicas,
                                                         known_hash=self.state.workload_hash),
                         summary="roll back: scale stable to full size")
        await self._call(port.SCALE_CANARY, ScaleRequest(**request, replicas=0),
                         summary="roll back: scale the canary down")
        self.state.canary_replicas = 0
        self.state.stable_replicas = self.state.replicas
        self.state.weight = self.state.actual_weight = 0
        if self.state.phase == Phase.ERROR:
            self.state.last_error = None
            self._set_phase(Phase.HEALTHY)

    # ------------------------------------------------------------------ traffic router
    #
    # Only jobs whose rules name a router (traffic.routing istio or gatewayAPI) get here: a
    # replica-ratio job issues no router command, so its histories replay unchanged.

    def _router_request(self, traffic: Traffic | None = None) -> RouterRequest:
        return RouterRequest(namespace=self.job.namespace, job=self.job.name, workload=self.job.workload.name,
                             traffic=traffic or self.job.traffic)

    def _services_request(self, stable: Version) -> ServicesRequest:
        return ServicesRequest(**dict(self._router_request()), stable_template_hash=stable.template_hash)

    async def _check_first_router(self) -> None:
        """Before attaching: a router (or blue-green Services) that does not fit the cluster means no job."""
        if not self.job.traffic.router and not self.job.blue_green_mode:
            return
        try:
            if self.job.blue_green_mode:
                await blue_green.check(self)
            else:
                await self._call(port.CHECK_ROUTER, self._router_request(),
                                 summary=f"check the {self.job.traffic.routing} router")
        except ActivityError as error:
            raise ApplicationError(_failure_message(error), ROUTER_CONFIG_INVALID,
                                   *([field] if (field := _failure_field(error)) else []),
                                   type=ROUTER_CONFIG_INVALID, non_retryable=True) from None

    def _traffic_to_check(self, request: UpdateRulesRequest) -> Traffic | None:
        """The router new rules name, when it is not the one the job runs now (it must be checked first)."""
        traffic = DeliveryRules.model_validate(request.rules).traffic
        return traffic if traffic.router and traffic != self.job.traffic else None

    async def _check_router(self, traffic: Traffic) -> None:
        """Refuse (typed, naming the field) a router that does not fit the cluster; writes nothing."""
        try:
            await workflow.execute_activity(
                port.CHECK_ROUTER.name, self._router_request(traffic), start_to_close_timeout=API_TIMEOUT,
                retry_policy=CHECK_RETRY, summary=f"check the {traffic.routing} router of the new rules",
            )
        except ActivityError as error:
            raise ApplicationError(_failure_message(error), *([field] if (field := _failure_field(error)) else []),
                                   type="InvalidOperationInput", non_retryable=True) from None

    async def _checked_rules_signal(self, request: UpdateRulesRequest, traffic: Traffic) -> None:
        """The signal form of ``update-rules`` naming a new router: applied once the router is checked."""
        try:
            await self._check_router(traffic)
            self._check(names.UPDATE_RULES, request)
        except (ApplicationError, ValueError) as error:
            message = error.message if isinstance(error, ApplicationError) else str(error)
            self._event("rejected", f"{names.UPDATE_RULES} signal rejected: {message}", request.actor)
            return
        self._apply(names.UPDATE_RULES, request)

    def _router_stale(self) -> bool:
        """Between releases, the rules name another router than the one set up (or none was yet)."""
        wanted = self.job.traffic if self.job.traffic.router else None
        return (wanted != self.state.routed and self.state.canary is None and self.state.stable is not None
                and not self._trouble and not self.state.workload_missing)

    async def _take_route(self) -> None:
        """Set the rules' router up and hold its route at 100 % stable, as it rests between releases."""
        await self._ensure_router()
        if self.state.routed is not None:
            await self._route_weight(0, "route 100% to stable")

    async def _ensure_router(self) -> None:
        """Make the router the rules name the one set up: the previous one left at 100 % stable, Services made."""
        wanted = self.job.traffic if self.job.traffic.router else None
        previous = self.state.routed
        if wanted == previous:
            return
        if wanted is not None and wanted.same_route(previous):
            # Only dynamicStableScale changed: the same route and Services serve on.
            self.state.routed = wanted
            sized = "is sized to its weight" if wanted.dynamic_stable_scale else "keeps its full size"
            self._event("router", f"dynamicStableScale {'on' if wanted.dynamic_stable_scale else 'off'}: the "
                        f"stable side {sized} from the next release")
            return
        if previous is not None:
            await self._call(port.CLEANUP_ROUTER, self._router_request(previous),
                             summary=f"leave the previous {previous.routing} router at 100% stable")
            self.state.routed, self.state.routes = None, []
            self.state.actual_weight = 0
        if wanted is None:
            return
        stable = self.state.stable
        assert stable is not None
        await self._call(port.PREPARE_ROUTER_SERVICES, self._services_request(stable),
                         summary=f"{wanted.backends} for the router")
        self.state.routed = wanted
        self._event("router", f"{wanted.routing} routes between {wanted.backends}; stable is revision "
                    f"{stable.revision}")

    async def _route_weight(self, weight: int, summary: str) -> RouterWeights:
        """Send ``weight`` percent to the canary Service; the job reports what the router then holds."""
        routed = self.state.routed
        assert routed is not None
        weights = await self._call(port.SET_ROUTER_WEIGHT, SetWeightRequest(
            **dict(self._router_request(routed)), canary_weight=weight,
            header_routes=self._header_routes_in_force()), summary=summary)
        self.state.routes = weights.routes
        self.state.actual_weight = weights.canary_percent
        return weights

    def _header_routes_in_force(self) -> list[HeaderRoute]:
        """The header routes a router write carries: the release's, only while its steps run.

        Promotion and every other end write without them, so the route is left at 100 % stable
        with no route of the job's (the release's own list ends with it, in ``finish_canary``).
        """
        if self.state.canary is None or self.state.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
            return []
        return list(self.state.header_routes)

    # ------------------------------------------------------------------ interrupts and calls

    def _interrupt(self) -> Interrupt | None:
        """What the running release must stop for, derived from the recorded intent."""
        if self._delete is not None:
            return Interrupt.DELETE
        if self._terminate is not None:
            return Interrupt.TERMINATE
        if self.state.workload_missing:
            return Interrupt.MISSING
        if self._background_verdict() is not None:
            return Interrupt.ANALYSIS
        if self._next is not None or self._pending_change is not None:
            return Interrupt.SUPERSEDE
        if self._promote is not None:
            return Interrupt.PROMOTE
        if self._rules_changed:
            return Interrupt.RULES
        return None

    async def _interruptible(self, awaitable: Awaitable[T], *, only: frozenset[Interrupt] | None = None) -> T:
        """Await ``awaitable`` unless an interrupt (of the kinds ``only``) arrives first; then cancel it and raise."""
        def current() -> Interrupt | None:
            kind = self._interrupt()
            return kind if only is None or kind in only else None

        kind = current()
        if kind is not None:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            elif isinstance(awaitable, asyncio.Future):
                awaitable.cancel()
            raise Interrupted(kind)
        task = asyncio.ensure_future(awaitable)
        interrupted = asyncio.ensure_future(workflow.wait_condition(lambda: current() is not None))
        await workflow.wait([task, interrupted], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            interrupted.cancel()
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, ActivityError):
            pass
        kind = current()
        assert kind is not None
        raise Interrupted(kind)

    async def _call(self, activity: port.Activity[Req, Res], request: Req, *, summary: str) -> Res:
        writes = activity.name in USER_WRITES
        self._writing += writes
        try:
            result: Res = await workflow.execute_activity(
                activity.name, request, result_type=activity.result, start_to_close_timeout=API_TIMEOUT,
                retry_policy=API_RETRY, summary=summary,
            )
        finally:
            self._writing -= writes
        if isinstance(result, WorkloadSnapshot | HoldStableResult):
            self.state.workload_generation = max(self.state.workload_generation, result.generation)
        if isinstance(result, WorkloadSnapshot) and result.uid:
            self.state.workload_uid = result.uid
        return result

    # ------------------------------------------------------------------ bookkeeping

    def _set_phase(self, phase: Phase) -> None:
        unchanged = self.state.phase == phase
        self.state.phase = phase
        self._show_details()
        if unchanged and workflow.patched(PATCH_QUIET_PHASE):
            return  # the search attribute already says so: no command, no visibility write
        workflow.upsert_search_attributes([CANARY_PHASE.value_set(phase.value)])

    def _show_details(self) -> None:
        """The Temporal UI's current details: phase, step, weight, revisions, without a query."""
        workflow.set_current_details(current_details(self.state))

    def _event(self, kind: str, message: str, actor: str | None = None) -> None:
        self.state.add_event(workflow.now(), kind, message, actor)

    # ------------------------------------------------------------------ operation handlers
    #
    # Each operation is an update (validated, synchronous answer) and a signal of the same
    # name (fire and forget, for `temporal workflow signal` and CI systems). Both go through
    # the same check and the same apply; a rejected signal is recorded as an event.

    def _check(self, operation: str, request: OperationRequest) -> None:
        check(operation, request, self.state, f"{self.job.namespace}/{self.job.workload.name}",
              traffic=self.job.traffic, blue_green=self.job.blue_green_mode,
              services=(bg.active_service, bg.preview_service) if (bg := self.job.blue_green) else None)

    def _apply(self, operation: str, request: OperationRequest) -> OperationResult:
        """Record what an accepted operation asks for; the main loop and the release act on it."""
        key = request_key(operation, request)
        if key is not None:
            if key in self.state.recent_requests:
                return OperationResult(message=f"request {request.request_id} was already applied",
                                       phase=self.state.phase)
            self.state.recent_requests.append(key)
            del self.state.recent_requests[:-RECENT_REQUESTS]
        record = {
            names.CONTINUE: self._apply_continue, names.PROMOTE: self._apply_promote,
            names.TERMINATE: self._apply_terminate, names.UPDATE_RULES: self._apply_rules,
            names.DELETE: self._apply_delete,
        }.get(operation)
        message = record(request) if record else self._apply_version(operation, request)
        return OperationResult(message=message, phase=self.state.phase)

    def _apply_continue(self, request: OperationRequest) -> str:
        if self._opened_gate == self.state.gate:
            return "already continuing"
        self._opened_gate = self.state.gate
        self._continue_actor = request.actor
        return f"continuing from step {(self.state.current_step or 0) + 1}"

    def _apply_promote(self, request: OperationRequest) -> str:
        if self.state.phase == Phase.PROMOTING or self._promote is not None:
            return "already promoting"
        self._promote = request
        self._event("promote-requested", "promote now: remaining steps skipped", request.actor)
        return "promoting now"

    def _apply_terminate(self, request: OperationRequest) -> str:
        if self._terminate is not None:
            return "already terminating"
        self._terminate = request
        self._drop_queued("terminated")
        self._event("terminate-requested", request.reason or "terminate requested", request.actor)
        return "terminating: all traffic goes back to stable"

    def _apply_rules(self, request: OperationRequest) -> str:
        assert isinstance(request, UpdateRulesRequest)
        self.job = self.job.with_rules(DeliveryRules.model_validate(request.rules))
        self._event("rules-updated", f"steps: {'; '.join(describe_step(s) for s in self.job.steps)}",
                    request.actor)
        if self.state.canary is not None:
            self._rules_changed = True
        return "delivery rules updated"

    def _apply_delete(self, request: OperationRequest) -> str:
        if self._delete is not None:
            return "already deleting"
        self._delete = request
        return "deleting the job"

    def _apply_version(self, operation: str, request: OperationRequest) -> str:
        assert isinstance(request, UpdateVersionRequest | RollbackRequest)
        self._drop_queued(f"{operation} {_describe_request(request)}")
        self._next = (operation, request)
        self._event(f"{operation}-requested", _describe_request(request), request.actor)
        return f"{operation} accepted"

    def _drop_queued(self, why: str) -> None:
        """The newest request wins: a version still waiting to start never starts."""
        if self._next is not None:
            operation, queued = self._next
            self._event("superseded", f"{operation} {_describe_request(queued)} dropped before it started: {why}",
                        queued.actor)
            self._next = None
        if self._pending_change is not None and why == "terminated":
            self._event("superseded", f"the edit to {_images(self._pending_change.images)} is not delivered: "
                        "the job was terminated")
            self._pending_change = None

    def _signal(self, operation: str, model: type[OperationRequest], payload: Any) -> None:
        """Validate and apply a signal; a bad one is recorded where the operator sees it, never raised."""
        actor = payload.get("actor") if isinstance(payload, dict) and isinstance(payload.get("actor"), str) else None
        try:
            request = model.model_validate(payload or {})
            self._check(operation, request)
            traffic = self._traffic_to_check(request) if isinstance(request, UpdateRulesRequest) else None
            if traffic is not None:
                assert isinstance(request, UpdateRulesRequest)
                task = asyncio.ensure_future(self._checked_rules_signal(request, traffic))
                self._rule_checks.add(task)
                task.add_done_callback(self._rule_checks.discard)
                return
            self._apply(operation, request)
        except ValidationError as error:
            self._event("rejected", f"{operation} signal rejected: {validation_message(error)}")
        except ValueError as error:
            self._event("rejected", f"{operation} signal rejected: {error}", actor)
        except Exception as error:  # no input may fail a workflow task
            self._event("rejected", f"{operation} signal rejected: {type(error).__name__}: {error}", actor)

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
    async def update_rules(self, request: UpdateRulesRequest) -> OperationResult:
        """Change steps and traffic policy; a running release goes on under them.

        New rules naming another router are checked against the cluster first (an activity,
        so the answer waits for it); rules without one are applied at once, as always.
        """
        traffic = self._traffic_to_check(request)
        if traffic is not None:
            await self._check_router(traffic)
            self._validate(names.UPDATE_RULES, request)  # the job may have moved on meanwhile
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
        """The worker's shared watch reports the Deployment; anything else is a nudge to look again.

        Reports from several workers may cross: of two for the same Deployment, the newer
        generation is kept.
        """
        try:
            change = WorkloadChange.model_validate(payload) if payload is not None else None
        except ValidationError:
            change = None
        if change is None or change.kind not in ("observed", "deleted"):
            self._recheck = True
            return
        kept = self._observed
        if (kept is not None and kept.snapshot is not None and change.snapshot is not None
                and kept.snapshot.uid == change.snapshot.uid
                and kept.snapshot.generation > change.snapshot.generation):
            return
        self._observed = change

    @workflow.signal(dynamic=True)
    def signal_operation(self, name: str, args: Sequence[RawValue]) -> None:
        """The signal form of every operation, for `temporal workflow signal` and CI systems."""
        model = _SIGNAL_MODELS.get(name)
        if model is None:
            self._event("rejected", f"unknown signal {name[:100]!r}; operations: {', '.join(names.OPERATIONS)}")
            return
        payload: Any = None
        if args:
            try:
                payload = workflow.payload_converter().from_payload(args[0].payload, Any)
            except Exception as error:  # no input may fail a workflow task
                self._event("rejected", f"{name} signal rejected: unreadable input ({type(error).__name__})")
                return
        self._signal(name, model, payload)

    # ------------------------------------------------------------------ queries

    @workflow.query(name=names.DETAILS_QUERY)
    def details(self) -> JobDetails:
        """Basic information, steps, weight, main version, recent events."""
        return JobDetails(
            name=self.job.name, namespace=self.job.namespace, workload=self.job.workload.name,
            mode=self.job.mode.value, phase=self.state.phase, replicas=self.state.replicas,
            weight=self.state.weight, actual_weight=self.state.actual_weight,
            canary_replicas=self.state.canary_replicas,
            current_step=self.state.current_step, steps=self.state.steps, pause_until=self.state.pause_until,
            pause_remaining=remaining(workflow.now(), self.state.pause_until),
            last_error=self.state.last_error, stable=_summary(self.state.stable),
            canary=_summary(self.state.canary),
            rules=self.job.rules.model_dump(mode="json"), events=self.state.events[-20:],
            pause_reason=self.state.pause_reason, analyses=self.state.analysis_views(),
            stable_replicas=self.state.stable_replicas, canary_target=self.state.canary_target,
            created=self.state.created, last_release=_summary(self.state.last_release()),
            routing=self.job.traffic.routing.value, routes=self.state.routes,
            header_routes=self.state.header_routes,
            blue_green=self._blue_green_view(),
        )

    def _blue_green_view(self) -> BlueGreenView | None:
        if not self.job.blue_green_mode:
            return None
        return blue_green.view(self)

    @workflow.query(name=names.VERSIONS_QUERY)
    def versions(self) -> JobVersions:
        """Main version (stable and canary) and the historical versions, newest first."""
        return JobVersions(
            stable=_without_template(self.state.stable), canary=_without_template(self.state.canary),
            history=[v for v in (_without_template(v) for v in reversed(self.state.history)) if v],
        )


_SIGNAL_MODELS: dict[str, type[OperationRequest]] = {
    names.UPDATE_VERSION: UpdateVersionRequest,
    names.CONTINUE: OperationRequest,
    names.PROMOTE: OperationRequest,
    names.TERMINATE: OperationRequest,
    names.ROLLBACK: RollbackRequest,
    names.UPDATE_RULES: UpdateRulesRequest,
    names.DELETE: OperationRequest,
}


def _failure_type(error: ActivityError) -> str | None:
    """The ApplicationError type behind an activity failure (None for timeouts and the like)."""
    cause = error.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _failure_field(error: ActivityError) -> str | None:
    """The spec field an activity's failure names (its first detail), if it names one."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], str):
        return cause.details[0]
    return None


def _displaced_by(error: ActivityError) -> WorkloadSnapshot | None:
    """The user's edit a failed ``promote_held`` had set aside: its failure's detail, or its last heartbeat's."""
    cause = error.cause
    found: Any = None
    if isinstance(cause, ApplicationError) and cause.details:
        found = cause.details[0]
    elif isinstance(cause, TemporalTimeoutError) and cause.last_heartbeat_details:
        record = cause.last_heartbeat_details[0]
        found = record.get("displaced") if isinstance(record, dict) else None
    if not isinstance(found, dict):
        return None
    try:
        return WorkloadSnapshot.model_validate(found)
    except ValidationError:
        return None


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
    if isinstance(error.cause, TemporalTimeoutError) or error.retry_state == RetryState.TIMEOUT:
        # The poll's schedule-to-close timeout is the progress deadline; its last attempt says why.
        return f"progress deadline exceeded: {last}"
    return last


def _describe_request(request: OperationRequest) -> str:
    if isinstance(request, UpdateVersionRequest):
        return f"set image {request.image}" + (f" on container {request.container}" if request.container else "")
    if isinstance(request, RollbackRequest):
        return f"roll back to revision {request.revision}" + (" without steps" if request.skip_steps else "")
    return request.reason or ""


def _images(images: dict[str, str]) -> str:
    return ", ".join(f"{name}={image}" for name, image in sorted(images.items()))


def _summary(version: Version | None) -> Version | None:
    """A version as a headline: no template, no step records."""
    return None if version is None else version.model_copy(update={"template": None, "steps": []})


def _without_template(version: Version | None) -> Version | None:
    return None if version is None else version.model_copy(update={"template": None})


# Blue-green builds on this module (it imports the names above), so it is imported last, here,
# and never first inside a running workflow: the sandbox then loads it with this module, once,
# instead of importing it late in every workflow that meets a blue-green job.
from workflows import blue_green  # noqa: E402
