"""The blue-green release path (``mode: blueGreen``): preview at full size, one switch, blue kept a while.

The job's canary Deployment ``<name>-canary`` runs the new version (green) at the Deployment's
full size beside the old one (blue: the user's Deployment, never shrunk during the release).
The active Service (the user's) is narrowed to one version by the ReplicaSet's
``pod-template-hash`` (activities/blue_green.py), so moving it is one guarded write, and only
ever onto pods that are available:

1. the active Service is narrowed to blue (the same pods it selected), green is prepared and
   grown to full size, Ready, and the preview Service aimed at it;
2. the gate: pre-promotion analysis, then ``autoPromotionEnabled: false`` (a human's
   ``continue``) or ``autoPromotionSeconds`` (a timer ``continue`` may cut short);
   ``promote`` skips both;
3. the switch: the active Service selects green, in one write;
4. blue stays up for ``scaleDownDelaySeconds`` (and until a post-promotion analysis has passed):
   a failure, ``terminate``, or a rollback to blue's revision switches the active Service back
   in one write, onto pods that never went away;
5. the hand-over: the user's Deployment moves to the new version the held way (emptied, its
   ReplicaSet made, grown, all pods available) while green's pods serve, then the active
   Service gets its user's selector back (it selects both, one version), and green goes to zero.

Every other end (a failed green, ``terminate``, a newer version, ``delete``) goes through
:func:`settle`, which switches the active Service back to blue first when it had moved.
The workflow calls in here from ``_deliver`` (and, for the mode, from ``_abort``,
``_end_interrupted``, ``_detach`` and the details query); a canary-mode job never does, so its
histories replay unchanged.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows import port
    from workflows.analysis_run import AnalysisKind, AnalysisRun
    from workflows.analysis_spec import AnalysisRef
    from workflows.blue_green_spec import BlueGreen
    from workflows.canary import (
        BEFORE_PROMOTION_INTERRUPTS,
        CanaryJobWorkflow,
        ContinueAsNew,
        Interrupt,
        Interrupted,
        _failure_message,
    )
    from workflows.models import (
        BlueGreenStage,
        BlueGreenView,
        CanaryTemplateRequest,
        JobState,
        Phase,
        RollbackRequest,
        ScaleRequest,
        Version,
    )
    from workflows.service_selection import BlueGreenServices, RestoreRequest, SelectRequest, Side

# Before the switch, promote skips the gate (the green must be Ready first, whatever comes).
GATE_INTERRUPTS = BEFORE_PROMOTION_INTERRUPTS | {Interrupt.PROMOTE}
# While blue is kept: promote ends the wait now, a newer version ends it too (green is handed over
# first, unless the newer version is blue itself), terminate and delete switch back.
KEEP_INTERRUPTS = GATE_INTERRUPTS


def _spec(wf: CanaryJobWorkflow) -> BlueGreen:
    spec = wf.job.blue_green
    assert spec is not None, "mode: blueGreen has its blueGreen section (validated with the spec)"
    return spec


def _services(wf: CanaryJobWorkflow) -> BlueGreenServices:
    spec = _spec(wf)
    return BlueGreenServices(namespace=wf.job.namespace, job=wf.job.name, workload=wf.job.workload.name,
                             active_service=spec.active_service, preview_service=spec.preview_service)


def _select(wf: CanaryJobWorkflow, service: str, side: Side, version: Version, ready: int) -> SelectRequest:
    return SelectRequest(**dict(_services(wf)), service=service, side=side, template_hash=version.template_hash,
                         ready=ready)


class BlueGreenRelease:
    """One blue-green release of ``state.canary``, run by the job's workflow from ``_deliver``."""

    def __init__(self, wf: CanaryJobWorkflow) -> None:
        self.wf = wf
        self.state = wf.state
        self.bg = wf.state.blue_green

    @property
    def spec(self) -> BlueGreen:
        """Read each time: new rules apply from the wait they find."""
        return _spec(self.wf)

    async def run(self, canary: Version, *, resume: bool, skip_steps: bool) -> None:
        """Preview, gate, switch, keep blue, hand over; raises what ends the release otherwise.

        ``resume``: a run that continued-as-new at the gate or while blue was kept goes on from there.
        ``skip_steps`` (a rollback without steps): no gate, no analysis, switch once green is Ready.
        """
        wf = self.wf
        if not resume or self.bg.stage is None:
            self.bg.stage, self.bg.pre_promotion_passed = None, False
            stable = self.state.stable
            assert stable is not None
            # The active Service selects the same pods as before, now by blue's ReplicaSet alone.
            await wf._interruptible(wf._call(
                port.SELECT_PODS, _select(wf, self.spec.active_service, Side.STABLE, stable, 0),
                summary=f"narrow Service {self.spec.active_service} to revision {stable.revision} (blue)"),
                only=BEFORE_PROMOTION_INTERRUPTS)
            self.bg.active_revision = stable.revision
            await wf._interruptible(wf._call(
                port.PREPARE_CANARY,
                CanaryTemplateRequest(**wf._ref(), template=canary.template or {}, template_hash=canary.template_hash),
                summary=f"prepare revision {canary.revision} (green)"), only=BEFORE_PROMOTION_INTERRUPTS)
        await wf._pre_rollout(0, resume=resume, skip_steps=skip_steps)
        if self.bg.stage is not BlueGreenStage.SWITCHED:
            await self._preview(canary, resumed=self.bg.stage is BlueGreenStage.PREVIEW)
            if not skip_steps:
                await self._gate(canary)
            await self._switch(canary)
        if not skip_steps:
            await self._keep_blue(canary)
        await self._hand_over(canary)

    # -- 1. preview ----------------------------------------------------------------------------

    async def _preview(self, canary: Version, *, resumed: bool) -> None:
        """Green at full size and Ready, the preview Service on it."""
        wf, replicas = self.wf, self.state.replicas
        label = f"preview revision {canary.revision}"
        self.state.canary_target = replicas
        await wf._interruptible(wf._call(port.SCALE_CANARY, ScaleRequest(**wf._ref(), replicas=replicas),
                                         summary=f"{label}: scale green to {replicas}"),
                                only=BEFORE_PROMOTION_INTERRUPTS)
        await wf._interruptible(wf._wait_canary_ready(replicas, label), only=BEFORE_PROMOTION_INTERRUPTS)
        self.state.canary_replicas, self.state.canary_target = replicas, None
        preview = self.spec.preview_service
        if preview is not None:
            await wf._interruptible(wf._call(
                port.SELECT_PODS, _select(wf, preview, Side.CANARY, canary, replicas),
                summary=f"{label}: aim Service {preview} at it"), only=BEFORE_PROMOTION_INTERRUPTS)
            self.bg.preview_revision = canary.revision
        self.bg.stage = BlueGreenStage.PREVIEW
        if not resumed:
            behind = f" behind Service {preview}" if preview else ""
            wf._event("preview", f"revision {canary.revision} is up at full size ({replicas} pods){behind}; "
                      f"Service {self.spec.active_service} still selects revision {self.bg.active_revision}")
            wf._set_phase(Phase.PROGRESSING)

    # -- 2. the gate ---------------------------------------------------------------------------

    async def _gate(self, canary: Version) -> None:
        """Pre-promotion analysis, then the manual or timed gate; ``promote`` passes both."""
        try:
            await self._pre_promotion_analysis()
            await self._wait_in_preview(canary)
        except Interrupted as interrupted:
            if interrupted.kind is not Interrupt.PROMOTE:
                raise
        if self.wf._promote is not None:
            # Asked for while green came up, or at the gate: it is the switch, which comes now.
            by = self.wf._promote.actor
            self.wf._promote = None
            self.wf._event("promote", f"revision {canary.revision}: switched by promote", by)

    async def _pre_promotion_analysis(self) -> None:
        ref = self.spec.pre_promotion_analysis
        if ref is None or self.bg.pre_promotion_passed:
            return
        await self._analysis(ref, AnalysisKind.PRE_PROMOTION, GATE_INTERRUPTS)
        self.bg.pre_promotion_passed = True

    async def _analysis(self, ref: AnalysisRef, kind: AnalysisKind, only: frozenset[Interrupt]) -> None:
        """Run (or, after continue-as-new, resume) one analysis to its verdict, as a step's analysis is.

        Failed raises :class:`ReleaseFailed`; inconclusive waits for a human's ``continue`` first.
        """
        wf = self.wf
        label = "pre-promotion analysis" if kind is AnalysisKind.PRE_PROMOTION else "post-promotion analysis"
        wf._rules_changed = False  # new rules are read as they come; nothing to resume, no hand-over to block
        resumed = self.state.step_analyses[-1] if self.state.step_analyses else None
        if resumed is not None and not resumed.stopped and resumed.kind is kind:
            run = resumed
        else:
            run = AnalysisRun.start(wf.job.analysis, ref, kind, None, workflow.now())
            self.state.step_analyses.append(run)
            wf._event("analysis-started", f"{label}: {', '.join(m.metric.name for m in run.metrics)}")
        await wf._analysis_verdict(run, label, only=only, decision_only=BEFORE_PROMOTION_INTERRUPTS)

    async def _wait_in_preview(self, canary: Version) -> None:
        """``autoPromotionEnabled: false``: until continue; ``autoPromotionSeconds``: that long at most."""
        wf, spec = self.wf, self.spec
        if spec.auto_promotion_enabled and spec.auto_promotion_seconds is None:
            return
        timeout = timedelta(seconds=spec.auto_promotion_seconds) if spec.auto_promotion_seconds else None
        if self.state.phase == Phase.PAUSED and self.state.pause_reason is not None:
            # Resumed by a fresh run at this very gate: same gate, and a timer keeps its end.
            if timeout is not None and self.state.pause_until is not None:
                timeout = max(timedelta(seconds=1), self.state.pause_until - workflow.now())
        else:
            self.state.gate += 1
            self.state.pause_until = workflow.now() + timeout if timeout is not None else None
        gate = self.state.gate
        self.state.pause_reason = (f"revision {canary.revision} in preview: promoted by itself "
                                   f"after {spec.auto_promotion_seconds}s, or by continue or promote"
                                   if timeout is not None else
                                   f"revision {canary.revision} in preview: waiting for continue or promote")
        wf._set_phase(Phase.PAUSED)
        wf._rules_changed = False  # new rules are read as they come; nothing to resume, no hand-over to block
        evicted = handed_over = False
        try:
            await wf._interruptible(workflow.wait_condition(
                lambda: wf._opened_gate == gate or wf._can_hand_over(), timeout=timeout,
                timeout_summary=f"revision {canary.revision} in preview"), only=GATE_INTERRUPTS)
            if wf._opened_gate != gate:
                handed_over = True
                raise ContinueAsNew()
            wf._event("continued", f"revision {canary.revision} continued from preview", wf._continue_actor)
        except TimeoutError:
            wf._event("auto-promotion", f"revision {canary.revision} was {spec.auto_promotion_seconds}s in "
                      "preview; promoting")
        except GeneratorExit:
            evicted = True
            raise
        finally:
            if not evicted and not handed_over:
                self.state.pause_until = None
                self.state.pause_reason = None
                wf._set_phase(Phase.PROGRESSING)

    # -- 3. the switch -------------------------------------------------------------------------

    async def _switch(self, canary: Version) -> None:
        """The active Service selects green: one write, onto pods that are all available."""
        wf, spec = self.wf, self.spec
        stable = self.state.stable
        await wf._call(port.SELECT_PODS, _select(wf, spec.active_service, Side.CANARY, canary, self.state.replicas),
                       summary=f"switch Service {spec.active_service} to revision {canary.revision} (green)")
        self.bg.active_revision = canary.revision
        self.bg.stage = BlueGreenStage.SWITCHED
        self.bg.scale_down_at = workflow.now() + timedelta(seconds=spec.scale_down_delay_seconds)
        self.state.weight = self.state.actual_weight = 100
        wf._event("switched", f"Service {spec.active_service} selects revision {canary.revision} (green); revision "
                  f"{stable.revision if stable else '?'} (blue) stays up for {spec.scale_down_delay_seconds}s")
        wf._set_phase(Phase.PROGRESSING)

    # -- 4. blue kept --------------------------------------------------------------------------

    async def _keep_blue(self, canary: Version) -> None:
        """Keep blue up for the scale-down delay, and until a post-promotion analysis passed.

        A failed analysis, ``terminate`` or ``delete`` raise (the release ends, switched back). A
        newer version ends the wait and green is handed over first, unless that version is blue's
        own: then the active Service switches back, instantly.
        """
        wf = self.wf
        try:
            ref = self.spec.post_promotion_analysis
            if ref is not None:
                await self._analysis(ref, AnalysisKind.POST_PROMOTION, KEEP_INTERRUPTS)
            left = (self.bg.scale_down_at or workflow.now()) - workflow.now()
            if left > timedelta(0):
                await wf._interruptible(workflow.sleep(left, summary=f"keep the previous revision up until "
                                                       f"revision {canary.revision} has served a while"),
                                        only=KEEP_INTERRUPTS)
        except Interrupted as interrupted:
            if interrupted.kind is Interrupt.PROMOTE:
                by = wf._promote.actor if wf._promote else None
                wf._promote = None
                wf._event("promote", f"revision {canary.revision}: the previous revision goes now", by)
            elif interrupted.kind is Interrupt.SUPERSEDE and not self._back_to_blue():
                wf._event("superseded", f"a newer version waits: revision {canary.revision}, which serves "
                          "already, is handed over first")
            else:
                raise

    def _back_to_blue(self) -> bool:
        """Whether the version waiting next is blue's own (a rollback or an edit back to it)."""
        wf, stable = self.wf, self.state.stable
        if stable is None:
            return False
        if wf._pending_change is not None:
            return wf._pending_change.template_hash == stable.template_hash
        if wf._next is not None and isinstance(wf._next[1], RollbackRequest):
            version = self.state.find_version(wf._next[1].revision)
            return version is not None and version.template_hash == stable.template_hash
        return False

    # -- 5. the hand-over ----------------------------------------------------------------------

    async def _hand_over(self, canary: Version) -> None:
        """The user's Deployment takes the new version over, the held way, while green serves."""
        wf = self.wf
        wf._set_phase(Phase.PROMOTING)
        label = f"promote revision {canary.revision}"
        if not await wf._promote_stepwise(canary, label):
            return  # failed, and the stable version is back in the Deployment
        # Both Deployments run the new version now: the user's selector picks them all.
        await wf._call(port.RESTORE_SERVICES, RestoreRequest(**dict(_services(wf))),
                       summary=f"{label}: give Service {self.spec.active_service} its own selector back")
        await wf._call(port.SCALE_CANARY, ScaleRequest(**wf._ref(), replicas=0), summary="scale green down")
        _rest(self.state)
        wf._promoted(canary)


def _rest(state: JobState) -> None:
    """Between releases: the Services have their own selectors, nothing in preview."""
    bg = state.blue_green
    bg.stage, bg.active_revision, bg.preview_revision, bg.scale_down_at = None, None, None, None
    bg.pre_promotion_passed = False


async def settle(wf: CanaryJobWorkflow) -> None:
    """The release ends without promotion: the active Service back on blue first, green to zero, Services given back.

    Called by ``_abort`` in place of ``_settle``. Blue was never shrunk during the release, so
    switching back is one write onto pods that never went away.
    """
    bg, stable = wf.state.blue_green, wf.state.stable
    spec = _spec(wf)
    if stable is not None and bg.active_revision not in (None, stable.revision):
        await wf._call(port.SELECT_PODS, _select(wf, spec.active_service, Side.STABLE, stable,
                                                 min(1, wf.state.replicas)),
                       summary=f"switch Service {spec.active_service} back to revision {stable.revision} (blue)")
        wf._event("switched-back", f"Service {spec.active_service} selects revision {stable.revision} again")
        bg.active_revision = stable.revision
    await wf._settle()
    await wf._call(port.RESTORE_SERVICES, RestoreRequest(**dict(_services(wf))),
                   summary=f"give Service {spec.active_service} its own selector back")
    _rest(wf.state)


async def forget(wf: CanaryJobWorkflow) -> None:
    """The Deployment is gone (and green with it): the Services get their own selectors back."""
    try:
        await wf._call(port.RESTORE_SERVICES, RestoreRequest(**dict(_services(wf))),
                       summary="give the Services their own selectors back")
    except ActivityError as error:
        wf._event("error", f"giving the Services their own selectors back failed: {_failure_message(error)}")
    _rest(wf.state)


async def release_services(wf: CanaryJobWorkflow, actor: str | None) -> None:
    """On delete: every Service the job narrowed gets its own selector back; its own preview goes."""
    try:
        await wf._call(port.RESTORE_SERVICES, RestoreRequest(**dict(_services(wf)), remove_preview=True),
                       summary="give the Services back, remove the job's preview Service")
    except ActivityError as error:
        wf._event("error", f"giving the Services back failed: {_failure_message(error)}", actor)
    _rest(wf.state)


async def check(wf: CanaryJobWorkflow) -> None:
    """Before attaching: Services that cannot carry the release mean no job, and the field to fix."""
    await wf._call(port.CHECK_BLUE_GREEN, _services(wf), summary="check the blue-green Services")


def view(wf: CanaryJobWorkflow) -> BlueGreenView | None:
    """What the details query shows of the mode: which revision each Service serves."""
    spec = wf.job.blue_green
    if spec is None:
        return None
    bg, stable = wf.state.blue_green, wf.state.stable
    active = bg.active_revision if bg.active_revision is not None else (stable.revision if stable else None)
    return BlueGreenView(active_service=spec.active_service, active_revision=active,
                         preview_service=spec.preview_service, preview_revision=bg.preview_revision,
                         stage=bg.stage, scale_down_at=bg.scale_down_at)

