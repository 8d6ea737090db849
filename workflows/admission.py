"""Which operation the job allows now, and why not: pure checks on the job's state.

Both forms of an operation go through :func:`check`: the update's validator (the caller gets the
rejection, typed) and the signal handler (the rejection becomes an event). Nothing here touches
the workflow API, so the rules can be read, and tested, on their own.
"""

from __future__ import annotations

from pydantic import ValidationError

from workflows import names
from workflows.images import validate_image
from workflows.models import (
    JobState,
    OperationRequest,
    Phase,
    RollbackRequest,
    UpdateRulesRequest,
    UpdateVersionRequest,
)
from workflows.spec import DeliveryRules, field_path, validation_message
from workflows.traffic_spec import Traffic


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


# Operations that act on the running release, and may name it (release, step).
RELEASE_OPERATIONS = (names.CONTINUE, names.PROMOTE, names.TERMINATE)


def check(operation: str, request: OperationRequest, state: JobState, workload: str,
          *, traffic: Traffic | None = None, blue_green: bool | None = None,
          services: tuple[str, str | None] | None = None) -> None:
    """Raise :class:`OperationRejected` unless ``operation`` may be applied to the job now.

    ``traffic``: the job's traffic policy now; new rules may change it only between releases.
    ``blue_green``: whether the job's mode is blueGreen; new rules keep to the job's mode.
    ``services``: a blue-green job's active and preview Services now; they cannot change mid-release.
    """
    phase = state.phase
    if phase == Phase.DELETED:
        raise OperationRejected("the job is deleted")
    if phase == Phase.INITIALIZING and operation != names.DELETE:
        raise OperationRejected("the job is still attaching to its Deployment")
    if operation in RELEASE_OPERATIONS:
        _check_release_operation(operation, request, state)
    elif isinstance(request, UpdateVersionRequest | RollbackRequest) and state.workload_missing:
        raise OperationRejected(f"Deployment {workload} is missing; the job waits for it to come back")
    if isinstance(request, UpdateVersionRequest):
        _check_image(request, state)
    elif isinstance(request, RollbackRequest):
        _check_revision(request, state)
    elif isinstance(request, UpdateRulesRequest):
        _check_rules(request, state, traffic, blue_green, services)


def _check_rules(request: UpdateRulesRequest, state: JobState, traffic: Traffic | None,
                 blue_green: bool | None, services: tuple[str, str | None] | None) -> None:
    try:
        rules = DeliveryRules.model_validate(request.rules)
    except ValidationError as error:
        first = field_path(error.errors()[0]["loc"]) if error.errors() else ""
        raise InvalidOperationInput(f"rules.{first}".rstrip("."), validation_message(error)) from None
    if blue_green is not None and (rules.blue_green is not None) != blue_green:
        # The mode is the job's, set when it is applied: new rules keep to it.
        why = ("the job delivers in blueGreen mode, so its rules need a blueGreen section (a running job "
               "keeps its mode: delete the job and apply it again to change it)" if blue_green else
               "the job delivers in canary mode; a blueGreen section is for mode: blueGreen, and a running job "
               "keeps its mode: delete the job and apply it again to change it")
        raise InvalidOperationInput("rules.blueGreen", why)
    new = (rules.blue_green.active_service, rules.blue_green.preview_service) if rules.blue_green else None
    if services is not None and new is not None and new != services and state.canary is not None:
        # The running release has narrowed these very Services; it gives them back when it ends.
        raise OperationRejected(f"blueGreen.activeService and previewService cannot change while revision "
                                f"{state.canary.revision} is being delivered; change them after the release ends")
    if traffic is not None and rules.traffic != traffic and state.canary is not None:
        # The running canary's traffic flows through the current router (or pod ratio) until it ends.
        raise OperationRejected(f"traffic cannot change while revision {state.canary.revision} is being "
                                "delivered; change it after the release ends (or terminate it)")


def _check_release_operation(operation: str, request: OperationRequest, state: JobState) -> None:
    phase, canary = state.phase, state.canary
    if canary is None and operation == names.TERMINATE and phase == Phase.ROLLING_BACK:
        return  # a release is giving way to the next version: terminate stops that one from starting
    if canary is None:
        if operation == names.CONTINUE:
            raise OperationRejected(f"nothing to continue: the job is {phase.value}, not paused")
        raise OperationRejected(f"no release is running (the job is {phase.value})")
    if request.release is not None and request.release != canary.revision:
        raise OperationRejected(
            f"release {request.release} is not running: the job is delivering revision {canary.revision}")
    current = None if state.current_step is None else state.current_step + 1
    if request.step is not None and request.step != current:
        where = f"at step {current}" if current is not None else phase.value
        raise OperationRejected(f"step {request.step} is not waiting: the release is {where}")
    if operation == names.CONTINUE and phase != Phase.PAUSED:
        raise OperationRejected(f"nothing to continue: the job is {phase.value}, not paused")
    if phase == Phase.PROMOTING and operation == names.TERMINATE:
        raise OperationRejected("the release is already being promoted; it can no longer be terminated")
    if phase == Phase.ROLLING_BACK:
        raise OperationRejected("the release is already being rolled back")


def _containers(state: JobState) -> list[str]:
    source = state.canary or state.stable
    return sorted(source.images) if source else []


def _check_image(request: UpdateVersionRequest, state: JobState) -> None:
    try:
        validate_image(request.image)
    except ValueError as error:
        raise InvalidOperationInput("image", str(error)) from None
    containers = _containers(state)
    if request.container is None and len(containers) > 1:
        raise InvalidOperationInput(
            "container", f"the pod template has {len(containers)} containers ({', '.join(containers)}): "
            "name one with container, or use container '*' to set them all")
    if request.container not in (None, "*") and request.container not in containers:
        raise InvalidOperationInput(
            "container", f"container {request.container!r} is not in the pod template; "
            f"containers: {', '.join(containers) or 'none'}")


def _check_revision(request: RollbackRequest, state: JobState) -> None:
    version = state.find_version(request.revision)
    if version is None:
        known = ", ".join(map(str, state.known_revisions())) or "none"
        raise InvalidOperationInput("revision", f"unknown revision {request.revision}; known revisions: {known}")
    if version.template is None:
        raise InvalidOperationInput(
            "revision", f"revision {request.revision} is too old: its pod template was not kept")
