"""Durable state of a canary delivery job, and the messages that cross the Temporal boundary.

Everything here is plain data: no clocks, no randomness, no Kubernetes objects. Times are
passed in from ``workflow.now()``; pod templates travel as plain JSON mappings. The state is
carried across continue-as-new, so every list in it is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workflows.analysis_run import AnalysisRun, AnalysisView
from workflows.fields import Duration
from workflows.header_route import HeaderRoute
from workflows.phases import Phase as Phase  # re-exported: every client imports it from here
from workflows.routing import RouteWeight
from workflows.spec import JobSpec, describe_step
from workflows.traffic_spec import Traffic

PodTemplate = dict[str, Any]
MAX_VERSIONS = 30
MAX_EVENTS = 100
MAX_MESSAGE = 1000  # an event's message; longer ones (a huge rejected input) are cut
# A finished release keeps its step records in the history, for the newest releases only and
# within a budget of records: 20 releases of a few steps, or 4 of the longest allowed.
MAX_RELEASES_WITH_STEPS = 20
MAX_KEPT_STEP_RECORDS = 400
MAX_KEPT_STEP_MESSAGE = 300


class _Model(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


class StepStatus(StrEnum):
    """How one step of the current release went."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    # It ran and was cut off before its end (terminate, promote, a newer version, the Deployment gone).
    STOPPED = "stopped"


class Trigger(StrEnum):
    """Why a release started."""

    ATTACH = "attach"
    EDIT = "edit"
    UPDATE_VERSION = "update-version"
    ROLLBACK = "rollback"


class Outcome(StrEnum):
    """How a release ended."""

    PROMOTED = "promoted"
    FAILED = "failed"
    TERMINATED = "terminated"
    ROLLED_BACK = "rolled-back"
    SUPERSEDED = "superseded"


class StepState(_Model):
    """What happened to one step of a release: when it ran, how it ended, and who ended it."""

    index: int
    description: str
    status: StepStatus = StepStatus.PENDING
    started: datetime | None = None
    finished: datetime | None = None
    message: str | None = None
    # Who ended it, when a person did (continued, promoted, terminated).
    actor: str | None = None


class Version(_Model):
    """One pod template the job has seen, and what became of it."""

    revision: int
    template_hash: str
    images: dict[str, str]
    trigger: Trigger
    started: datetime
    finished: datetime | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    actor: str | None = None
    # Kept so that `rollback` can write this version back; dropped from very old entries.
    template: PodTemplate | None = None
    # What became of each step of this release, recorded when it ended; dropped from old entries.
    steps: list[StepState] = Field(default_factory=list)


class Event(_Model):
    """One line of the job's own log: operations, their authors, rejections, failures."""

    at: datetime
    kind: str
    message: str
    actor: str | None = None


class BlueGreenStage(StrEnum):
    """Where a blue-green release is: what a run that continues-as-new picks up again."""

    PREVIEW = "preview"  # green is up at full size behind the preview Service, waiting for its gate
    SWITCHED = "switched"  # the active Service selects green; blue stays up until the scale-down delay ends


class BlueGreenState(_Model):
    """A blue-green job's Services: which revision each selects, and the release's stage.

    ``active_revision`` None: the active Service has its user's own selector, which selects every
    pod of the workload (between releases, only the stable version runs).
    """

    stage: BlueGreenStage | None = None
    # The pre-promotion analysis passed (or a human continued past it): a resumed gate does not rerun it.
    pre_promotion_passed: bool = False
    active_revision: int | None = None
    preview_revision: int | None = None
    scale_down_at: datetime | None = None  # when blue goes, once the active Service selects green


class JobState(_Model):
    """Everything the job must remember across worker restarts and continue-as-new."""

    phase: Phase = Phase.INITIALIZING
    # The Deployment's desired size. The job owns the running counts only while a release runs.
    replicas: int = 0
    # Hash of the template now written in the user's Deployment (the watch compares against it).
    workload_hash: str | None = None
    # The newest Deployment generation the job has seen or written (0: unknown): an observation
    # of the shared watch that is not newer was made before the job's own write, and is stale.
    workload_generation: int = 0
    workload_uid: str = ""  # a different uid is a Deployment deleted and created again
    # The Deployment carries the job's label, so the worker's shared watch sees it (jobs attached
    # before the shared watch get it on their first run that follows it).
    labelled: bool = False
    workload_missing: bool = False
    stable: Version | None = None
    canary: Version | None = None
    steps: list[StepState] = Field(default_factory=list)
    current_step: int | None = None
    weight: int = 0  # the weight the current step asked for
    actual_weight: int = 0  # the share of Ready pods that are canary pods: what traffic really sees
    canary_replicas: int = 0
    stable_replicas: int = 0
    pause_until: datetime | None = None
    last_error: str | None = None
    history: list[Version] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    next_revision: int = 1
    recent_requests: list[str] = Field(default_factory=list)
    # Counts the manual gates (pauses) entered so far: a `continue` opens the gate it was
    # accepted at, never one that starts later.
    gate: int = 0
    # Why the release waits at the current gate when it is not a pause step (an inconclusive analysis).
    pause_reason: str | None = None
    # The current (or last) release's analysis: its analysis steps' runs, and the background run.
    step_analyses: list[AnalysisRun] = Field(default_factory=list)
    background: AnalysisRun | None = None
    # The release has passed its steps and waits for its confirm-promotion webhooks (a run that
    # continues-as-new there resumes the wait, not the steps).
    confirming: bool = False
    # When the job first attached (None: a job from before this was recorded).
    created: datetime | None = None
    # The canary size the running step is moving to; until its pods are Ready, ``canary_replicas``
    # stays what the job last saw Ready.
    canary_target: int | None = None
    # The router whose objects the job has set up (its Services, the route at 100 % stable); None:
    # none (replica ratio, or not yet). New rules naming another router set that one up instead.
    routed: Traffic | None = None
    # What the router held when the job last wrote or read it, per route.
    routes: list[RouteWeight] = Field(default_factory=list)
    # The canary size a ``setCanaryScale`` step fixed for the rest of the release (with a router,
    # ``setWeight`` then changes only the weight).
    canary_scale: int | None = None
    # The header routes the running release's ``setHeaderRoute`` steps put in force; every router
    # write during the steps carries them, and they end with the release (``finish_canary``).
    header_routes: list[HeaderRoute] = Field(default_factory=list)
    # mode: blueGreen: which revisions its Services select, and where the release is.
    blue_green: BlueGreenState = Field(default_factory=BlueGreenState)

    # -- bookkeeping: every method takes the time, so the workflow passes workflow.now() --------

    def add_event(self, now: datetime, kind: str, message: str, actor: str | None = None) -> None:
        """Append one line to the job's log, keeping the newest ``MAX_EVENTS``."""
        self.events.append(Event(at=now, kind=kind, message=message[:MAX_MESSAGE], actor=actor))
        del self.events[:-MAX_EVENTS]

    def reset_steps(self, steps: Sequence[Any]) -> None:
        """Show the release's steps afresh, all pending."""
        self.steps = [StepState(index=i, description=describe_step(step)) for i, step in enumerate(steps)]

    def analysis_views(self) -> list[AnalysisView]:
        """The release's analysis runs as clients show them: steps' in order, then the background one."""
        runs = [*self.step_analyses, *([self.background] if self.background is not None else [])]
        return [AnalysisView.of(run) for run in runs]

    def mark_step(self, now: datetime, index: int, status: StepStatus, message: str | None = None,
                  actor: str | None = None) -> None:
        """Record how step ``index`` of the current release stands.

        Finishing a step keeps the note made while it ran (who continued a pause) unless the
        finish brings its own message: the record says what happened, not only how it ended.
        """
        if not 0 <= index < len(self.steps):
            return
        step = self.steps[index]
        if status == StepStatus.RUNNING:
            step.started, step.finished, step.message, step.actor = now, None, message, actor
        else:
            step.finished = now
            if message is not None:
                step.message = message
            if actor is not None:
                step.actor = actor
        step.status = status

    def note_step(self, index: int, message: str, actor: str | None = None) -> None:
        """Say how the running step ``index`` is ending (``continued``), before it is marked done."""
        if 0 <= index < len(self.steps):
            self.steps[index].message, self.steps[index].actor = message, actor

    def skip_steps(self, now: datetime, start: int, end: int | None, message: str,
                   actor: str | None = None) -> None:
        """Mark the steps ``start`` up to ``end`` (exclusive; None: the last) that never ran as skipped.

        A step that ran keeps its own record: skipping is said only of steps that had not started.
        """
        for index in range(start, len(self.steps) if end is None else min(end, len(self.steps))):
            if self.steps[index].status == StepStatus.PENDING:
                self.mark_step(now, index, StepStatus.SKIPPED, message, actor)

    def adopt_rules(self, now: datetime, steps: Sequence[Any], resume: int) -> None:
        """Show new rules' steps for the running release, which resumes at ``resume``.

        The steps before ``resume`` count as passed: each keeps its record when the same step
        already ran under the old rules, and is said to be skipped when it never ran.
        """
        before = self.steps
        self.reset_steps(steps)
        for index in range(min(resume, len(self.steps))):
            old = before[index] if index < len(before) else None
            if (old is not None and old.status == StepStatus.SUCCEEDED
                    and old.description == self.steps[index].description):
                self.steps[index] = old.model_copy()
            else:
                self.mark_step(now, index, StepStatus.SKIPPED, "skipped: the rules changed")

    def _close_steps(self, now: datetime, outcome: Outcome, reason: str | None, actor: str | None) -> None:
        """A release ended: its running step was cut off, and its pending steps never ran."""
        cut, not_run = _STEP_ENDINGS.get(outcome, ("cut off", "not run"))
        for step in self.steps:
            if step.status == StepStatus.RUNNING:
                message = f"{cut}: {reason}" if reason else cut
                self.mark_step(now, step.index, StepStatus.STOPPED, message[:MAX_MESSAGE], actor)
            elif step.status == StepStatus.PENDING:
                self.mark_step(now, step.index, StepStatus.SKIPPED, not_run)

    def last_release(self) -> Version | None:
        """The release the shown steps belong to once it has ended (None while one runs, or before any)."""
        if self.canary is not None or not self.steps:
            return None
        return next((v for v in reversed(self.history) if v.trigger != Trigger.ATTACH), None)

    def finish_canary(self, now: datetime, outcome: Outcome, reason: str | None, actor: str | None = None) -> None:
        """End the running release: it goes into the history with its outcome."""
        canary = self.canary
        if canary is None:
            return
        canary.finished, canary.outcome, canary.reason = now, outcome, reason
        if actor:
            canary.actor = actor
        self._close_steps(now, outcome, reason, actor)
        canary.steps = [step.model_copy(update={"message": step.message[:MAX_KEPT_STEP_MESSAGE]})
                        if step.message else step.model_copy() for step in self.steps]
        self.add_history(canary)
        self.canary = None
        self.header_routes = []

    def add_history(self, version: Version) -> None:
        """Keep a copy of ``version`` among the newest ``MAX_VERSIONS``."""
        self.history.append(version.model_copy())
        del self.history[:-MAX_VERSIONS]
        # Only the newest versions keep their template: enough to roll back, bounded in size.
        for old in self.history[: max(0, len(self.history) - MAX_VERSIONS // 2)]:
            old.template = None
        # Step records: the newest releases' only, within a budget of records.
        releases = records = 0
        for old in reversed(self.history):
            if not old.steps:
                continue
            if releases < MAX_RELEASES_WITH_STEPS and records + len(old.steps) <= MAX_KEPT_STEP_RECORDS:
                releases, records = releases + 1, records + len(old.steps)
            else:
                old.steps = []

    def find_version(self, revision: int) -> Version | None:
        """The version with ``revision``, wherever the job keeps it."""
        for version in [*self.history, self.stable, self.canary]:
            if version is not None and version.revision == revision:
                return version
        return None

    def known_revisions(self) -> list[int]:
        """Every revision an operator may name."""
        return sorted({v.revision for v in [*self.history, self.stable, self.canary] if v is not None})


# How a release's end reads on its running step (cut off) and on its pending ones (never ran).
_STEP_ENDINGS: dict[Outcome, tuple[str, str]] = {
    Outcome.TERMINATED: ("cut off by terminate", "not run: terminated"),
    Outcome.FAILED: ("cut off: the release failed", "not run: the release failed"),
    Outcome.SUPERSEDED: ("cut off: a newer version came", "not run: superseded"),
    Outcome.ROLLED_BACK: ("cut off by rollback", "not run: rolled back"),
    Outcome.PROMOTED: ("ended by promotion", "skipped: promoted"),
}


class CanaryJobInput(_Model):
    """Workflow input: the job, and on continue-as-new the state it carries."""

    job: JobSpec
    state: JobState | None = None
    # Test knob: continue-as-new after this many history events even if the server does not ask.
    max_history_events: int | None = None
    # False: no watch activity; changes are noticed when the `workload-changed` signal nudges the
    # job (from a webhook or CI). Time-skipping tests need it: time stands still while a watch runs.
    watch: bool = True


# --- what activities report -------------------------------------------------------------------


class WorkloadSnapshot(_Model):
    """The parts of a Deployment the workflow reasons about."""

    template: PodTemplate
    template_hash: str
    images: dict[str, str]
    replicas: int
    resource_version: str
    uid: str = ""
    generation: int = 0


class WorkloadChange(_Model):
    """What a watch saw change on the Deployment.

    From the job's own watch activity: "template", "replicas", "created" or "deleted". From the
    worker's shared watch (the ``workload-changed`` signal): "observed", the Deployment as it is
    now, sent only when it differs from what the job last stamped on it; or "deleted".
    """

    kind: str
    snapshot: WorkloadSnapshot | None = None


# --- operations ----------------------------------------------------------------------------


class OperationRequest(_Model):
    """Fields every operation accepts."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    request_id: str | None = Field(default=None, alias="requestId", max_length=128)
    actor: str | None = Field(default=None, max_length=256)
    reason: str | None = Field(default=None, max_length=1024)
    # Which release (the canary's revision) and step (1-based, as shown) the caller means.
    # When given and no longer current, the operation is refused rather than applied to
    # whatever runs now: a `continue` meant for one gate never opens another.
    release: int | None = Field(default=None, ge=1)
    step: int | None = Field(default=None, ge=1)


class UpdateVersionRequest(OperationRequest):
    """``update-version``: set the image of one container, or of all of them."""

    image: str = Field(min_length=1, max_length=512)
    # Which container; may be left out when the pod has one container; "*" sets every container.
    container: str | None = None


class RollbackRequest(OperationRequest):
    """``rollback``: deliver a historical version again."""

    revision: int = Field(ge=1)
    skip_steps: bool = Field(default=False, alias="skipSteps")


class UpdateRulesRequest(OperationRequest):
    """``update-rules``: new steps and traffic policy."""

    rules: dict[str, Any]


class OperationResult(_Model):
    """What an accepted operation did (a refused one raises instead)."""

    message: str
    phase: Phase


# --- queries -------------------------------------------------------------------------------


class BlueGreenView(_Model):
    """What a blue-green job's Services serve: the revision each selects, and when blue goes."""

    active_service: str
    active_revision: int | None  # None: no version yet (the job is attaching)
    preview_service: str | None = None
    preview_revision: int | None = None  # None: nothing in preview
    stage: BlueGreenStage | None = None
    scale_down_at: datetime | None = None


class JobDetails(_Model):
    """The ``details`` query: what an operator looks at first."""

    name: str
    namespace: str
    workload: str
    mode: str
    phase: Phase
    replicas: int
    weight: int
    actual_weight: int
    canary_replicas: int
    current_step: int | None
    steps: list[StepState]
    # When the running timed pause ends. Clients count down from it: a query's clock is the
    # time of the workflow's last task, so ``pause_remaining`` stands still while the job waits.
    pause_until: datetime | None = None
    pause_remaining: Duration | None = None
    last_error: str | None
    stable: Version | None
    canary: Version | None
    rules: dict[str, Any]
    events: list[Event]
    # Why the job waits at its gate when it is not a pause step, e.g. an inconclusive analysis.
    pause_reason: str | None = None
    analyses: list[AnalysisView] = Field(default_factory=list)
    # Pods per side as the job knows them: stable pods it runs, canary pods it last saw Ready,
    # and the canary size the running step moves to (None: not moving).
    stable_replicas: int = 0
    canary_target: int | None = None
    # When the job first attached (None: not recorded, an older job).
    created: datetime | None = None
    # Once a release has ended and until the next starts: the release the steps belong to.
    last_release: Version | None = None
    # ``traffic.routing``; with a router, the weights its routes hold (read back from the object).
    routing: str = "replicaRatio"
    routes: list[RouteWeight] = Field(default_factory=list)
    # The header routes the router holds for the running release (``setHeaderRoute``).
    header_routes: list[HeaderRoute] = Field(default_factory=list)
    # mode: blueGreen: which revision the active and preview Services serve.
    blue_green: BlueGreenView | None = None


class JobVersions(_Model):
    """The ``versions`` query: main version and history."""

    stable: Version | None
    canary: Version | None
    history: list[Version]


def request_key(operation: str, request: OperationRequest) -> str | None:
    """Key under which a repeated request is recognised and ignored."""
    return f"{operation}:{request.request_id}" if request.request_id else None


def remaining(now: datetime, until: datetime | None) -> timedelta | None:
    """Time left from ``now`` until ``until``, never negative."""
    return None if until is None else max(timedelta(0), until - now)


# --- activity requests ---------------------------------------------------------------------


class WorkloadRequest(_Model):
    """Names the Deployment an activity works on, and the job that owns it."""

    namespace: str
    name: str
    job: str


class AttachRequest(WorkloadRequest):
    """Take over a Deployment: mark it as the job's and stop it rolling out by itself."""


class CanaryTemplateRequest(WorkloadRequest):
    """Make the canary Deployment run ``template`` (at zero replicas until a step scales it)."""

    template: PodTemplate
    template_hash: str


class ScaleRequest(WorkloadRequest):
    """Scale one side (the canary Deployment, or the stable side: the user's Deployment)."""

    replicas: int = Field(ge=0)
    # Scaling the user's Deployment: the template hash the job believes it holds, stamped beside
    # the write so the shared watch does not report the job's own change back to it.
    known_hash: str | None = None


class ReadyRequest(WorkloadRequest):
    """Wait until this many canary pods of ``template_hash`` are Ready."""

    replicas: int = Field(ge=0)
    template_hash: str


class PromoteRequest(WorkloadRequest):
    """Let the user's Deployment roll out its (new) template to ``replicas`` pods."""

    replicas: int = Field(ge=0)
    known_hash: str | None = None  # as in ScaleRequest


class RolloutRequest(WorkloadRequest):
    """Wait until the user's Deployment runs ``template_hash`` on all ``replicas`` pods."""

    replicas: int = Field(ge=0)
    template_hash: str
    # True: judge by the ReplicaSet of ``template_hash`` (the Deployment is held paused and
    # may already carry the user's next edit); False: by the Deployment's own status.
    held: bool = False


class WriteTemplateRequest(WorkloadRequest):
    """Write a pod template into the user's Deployment (rollback, detach)."""

    template: PodTemplate


class SetImageRequest(WorkloadRequest):
    """Set the image of one container (or of every container) in the user's Deployment."""

    image: str
    container: str | None = None


class WatchRequest(WorkloadRequest):
    """Return as soon as the Deployment differs from what the job knows."""

    known_hash: str
    known_replicas: int | None = None  # None: replica changes are the job's own (a release runs)
    # True: the job knows the Deployment is gone; return when it exists again.
    known_missing: bool = False


class HoldStableRequest(WorkloadRequest):
    """Hold the user's Deployment paused on ``template`` at ``replicas`` pods."""

    template: PodTemplate
    template_hash: str
    replicas: int = Field(ge=0)


class StableRevisionRequest(WorkloadRequest):
    """Empty the paused Deployment and make sure it has a ReplicaSet for ``template``."""

    template: PodTemplate
    template_hash: str


class HoldStableResult(_Model):
    """What holding the Deployment found: a template of the user's that it had to set aside."""

    # The user's own edit, written while the job was moving the Deployment; it becomes the
    # next release instead of riding along with this one.
    displaced: WorkloadSnapshot | None = None
    generation: int = 0  # the Deployment's generation after the job's write


class LabelRequest(WorkloadRequest):
    """Label a Deployment the job already holds, so the worker's shared watch sees it."""

    known_hash: str


class DetachRequest(WorkloadRequest):
    """Give the Deployment back: stable template, all replicas, rolling out by itself again."""

    template: PodTemplate | None
    replicas: int
