"""Each step keeps what happened to it, and a release's steps outlive it in the history (time-skipping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.workflow.conftest import Job
from workflows import names
from workflows.models import (
    MAX_KEPT_STEP_RECORDS,
    MAX_RELEASES_WITH_STEPS,
    JobState,
    OperationRequest,
    Outcome,
    Phase,
    StepState,
    StepStatus,
    Trigger,
    UpdateRulesRequest,
    Version,
)


async def _at_first_pause(start_job) -> Job:
    job: Job = await start_job()
    await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "attached")
    await job.edit_image("registry.local/web:2")
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "first pause")
    return job


async def test_a_promoted_release_keeps_how_each_step_went(start_job) -> None:
    job = await _at_first_pause(start_job)
    await job.env.sleep(3601)  # the hour-long pause runs out
    await job.wait_for(lambda d: d.phase == Phase.PAUSED and d.current_step == 3, "the manual gate")
    await job.env.sleep(300)
    await job.operate(names.CONTINUE, OperationRequest(actor="alice"))
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "promotion")

    # The finished release stays readable: nothing turned grey, nobody's name was lost.
    assert [s.status for s in done.steps] == [StepStatus.SUCCEEDED] * 4
    timed, manual = done.steps[1], done.steps[3]
    assert timed.message == "ran out" and timed.actor is None
    assert manual.message == "continued" and manual.actor == "alice"
    assert timed.started and timed.finished and timedelta(minutes=59) < timed.finished - timed.started
    assert manual.started and manual.finished and manual.finished - manual.started >= timedelta(minutes=5)
    assert done.last_release is not None and done.last_release.revision == 2
    assert done.last_release.outcome == Outcome.PROMOTED

    # The same records go into the history with the release.
    released = (await job.versions()).history[0]
    assert released.revision == 2 and [s.message for s in released.steps] == [None, "ran out", None, "continued"]

    # The next release shows its own steps; the previous one's stay in the history.
    await job.edit_image("registry.local/web:3")
    running = await job.wait_for(lambda d: d.phase == Phase.PAUSED, "the next release's pause")
    assert running.last_release is None and running.steps[1].status == StepStatus.RUNNING
    history = (await job.versions()).history
    assert history[0].revision == 2 and history[0].steps[3].actor == "alice"


async def test_terminate_cuts_off_the_running_step_and_the_rest_never_ran(start_job) -> None:
    job = await _at_first_pause(start_job)
    await job.operate(names.TERMINATE, OperationRequest(actor="alice", reason="error rate"))
    done = await job.wait_for(lambda d: d.phase == Phase.TERMINATED, "terminated")
    assert [(s.status, s.message, s.actor) for s in done.steps] == [
        (StepStatus.SUCCEEDED, None, None),
        (StepStatus.STOPPED, "cut off by terminate: error rate", "alice"),
        (StepStatus.SKIPPED, "not run: terminated", None),
        (StepStatus.SKIPPED, "not run: terminated", None),
    ]
    assert done.steps[0].finished is not None  # the step that ran keeps when it ran
    assert done.last_release is not None and done.last_release.outcome == Outcome.TERMINATED


async def test_promote_names_who_skipped_the_steps(start_job) -> None:
    job = await _at_first_pause(start_job)
    await job.operate(names.PROMOTE, OperationRequest(actor="bob"))
    done = await job.wait_for(lambda d: d.phase == Phase.HEALTHY, "promoted")
    assert [(s.status, s.message, s.actor) for s in done.steps] == [
        (StepStatus.SUCCEEDED, None, None),
        (StepStatus.STOPPED, "ended by promote", "bob"),
        (StepStatus.SKIPPED, "skipped by promote", "bob"),
        (StepStatus.SKIPPED, "skipped by promote", "bob"),
    ]


async def test_new_rules_skip_only_steps_that_never_ran(start_job) -> None:
    job = await _at_first_pause(start_job)
    ran = (await job.details()).steps[0]
    rules = {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}], "progressDeadline": "30s"}
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules=rules, actor="dave"))
    kept = await job.wait_for(lambda d: len(d.steps) == 3 and d.phase == Phase.PAUSED, "the new rules")
    # setWeight 25% ran under the old rules and is the same step: its record stays as it was.
    assert kept.steps[0] == ran
    assert kept.steps[1].status == StepStatus.RUNNING

    # Rules whose first steps never ran: those read "skipped: the rules changed".
    rules = {"steps": [{"setWeight": 10}, {"setWeight": 20}, {"pause": {}}], "progressDeadline": "30s"}
    await job.operate(names.UPDATE_RULES, UpdateRulesRequest(rules=rules, actor="dave"))
    skipped = await job.wait_for(lambda d: d.steps[0].description == "setWeight 10%" and d.phase == Phase.PAUSED,
                                 "the second rules")
    assert [(s.status, s.message) for s in skipped.steps[:2]] == [
        (StepStatus.SKIPPED, "skipped: the rules changed"), (StepStatus.SKIPPED, "skipped: the rules changed")]


def _release(revision: int, steps: int) -> Version:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return Version(revision=revision, template_hash=f"h{revision}", images={"app": f"web:{revision}"},
                   trigger=Trigger.EDIT, started=now,
                   steps=[StepState(index=i, description=f"setWeight {i}%", status=StepStatus.SUCCEEDED)
                          for i in range(steps)])


def test_step_records_in_the_history_are_bounded() -> None:
    state = JobState()
    for revision in range(1, 26):
        state.add_history(_release(revision, 4))
    kept = [v.revision for v in state.history if v.steps]
    assert kept == list(range(26 - MAX_RELEASES_WITH_STEPS, 26))  # the newest releases keep theirs

    long = JobState()
    for revision in range(1, 8):
        long.add_history(_release(revision, 100))
    assert sum(len(v.steps) for v in long.history) <= MAX_KEPT_STEP_RECORDS
    assert [v.revision for v in long.history if v.steps] == [4, 5, 6, 7]


def test_state_from_before_step_records_still_loads() -> None:
    """A continue-as-new input written by the previous code has none of the new fields."""
    old = {"phase": "healthy", "steps": [{"index": 0, "description": "setWeight 25%", "status": "succeeded"}],
           "history": [{"revision": 1, "template_hash": "h", "images": {}, "trigger": "attach",
                        "started": "2025-01-01T00:00:00Z"}]}
    state = JobState.model_validate(old)
    assert state.steps[0].actor is None and state.history[0].steps == [] and state.created is None
