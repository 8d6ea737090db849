"""Which status code each message of the shared client and of the workflow's validators becomes.

The messages are the real ones (from starter/client.py, workflows/canary.py and
workflows/images.py); when one of them changes, this table shows what the API then answers.
"""

from __future__ import annotations

import pytest

from starter.api.errors import ErrorCode, classify
from starter.errors import CanaryError
from workflows.images import validate_image

CASES: list[tuple[str, ErrorCode, str | None]] = [
    # Temporal, the worker or Kubernetes unreachable
    ("cannot reach Temporal at 127.0.0.1:1: Connection refused", ErrorCode.UNAVAILABLE, None),
    ("cannot reach Temporal at 10.0.0.1:7233: no answer within 10 s", ErrorCode.UNAVAILABLE, None),
    ("Temporal namespace 'prod' not found at 127.0.0.1:7233", ErrorCode.UNAVAILABLE, None),
    ("no answer from Temporal for canary job shop/web in time: is the canary worker running?",
     ErrorCode.UNAVAILABLE, None),
    ("canary job shop/web: continue not answered within 60 s; is the canary worker running? (it may still be "
     "applied when a worker picks it up)", ErrorCode.UNAVAILABLE, None),
    ("canary job shop/web did not attach within 60 s: is the canary worker running?", ErrorCode.UNAVAILABLE, None),
    ("Temporal: resource exhausted", ErrorCode.UNAVAILABLE, None),
    # unknown or gone
    ("no canary job shop/web", ErrorCode.NOT_FOUND, None),
    ("canary job shop/web has ended; apply it again to restart it", ErrorCode.NOT_FOUND, None),
    # a bad value for this job
    ("the pod template has 2 containers (app, sidecar): name one with container, or use container '*' to set "
     "them all", ErrorCode.INVALID, "container"),
    ("container 'db' is not in the pod template; containers: app", ErrorCode.INVALID, "container"),
    ("unknown revision 9; known revisions: 1, 2", ErrorCode.INVALID, "revision"),
    ("revision 1 is too old: its pod template was not kept", ErrorCode.INVALID, "revision"),
    ("canary job shop/web refused: workload: Deployment shop/web not found", ErrorCode.INVALID, "workload.name"),
    ("invalid namespace 'A'", ErrorCode.INVALID, "namespace"),
    ("unknown phase 'sleeping'; one of: healthy", ErrorCode.INVALID, "status"),
    ("steps.0.setWeight: Input should be less than or equal to 100", ErrorCode.INVALID, "rules"),
    # the job's state does not allow it now
    ("nothing to continue: the job is healthy, not paused", ErrorCode.CONFLICT, None),
    ("no release is running (the job is healthy)", ErrorCode.CONFLICT, None),
    ("the release is already being promoted; it can no longer be terminated", ErrorCode.CONFLICT, None),
    ("the release is already being rolled back", ErrorCode.CONFLICT, None),
    ("the job is still attaching to its Deployment", ErrorCode.CONFLICT, None),
    ("the job is deleted", ErrorCode.CONFLICT, None),
    ("canary job shop/web refused: workload: Deployment shop/web belongs to canary job 'api', not 'web'",
     ErrorCode.CONFLICT, None),
    ("canary job shop/web delivers Deployment web, not api; delete the job before pointing it at another "
     "workload", ErrorCode.CONFLICT, None),
    ("canary job shop/web keeps ending while being applied", ErrorCode.CONFLICT, None),
    ("something nobody foresaw", ErrorCode.CONFLICT, None),
]


@pytest.mark.parametrize(("message", "code", "field"), CASES, ids=[c[0][:50] for c in CASES])
def test_messages_map_to_status_codes(message: str, code: ErrorCode, field: str | None) -> None:
    error = classify(CanaryError(message))
    assert error.code == code
    body = error.body()
    assert body.message == message and body.field == field and body.reason == message


@pytest.mark.parametrize("image", ["", "registry.local/Web:2", "web 2", "registry.local/:2"])
def test_every_image_rejection_names_the_image_field(image: str) -> None:
    with pytest.raises(ValueError) as rejected:
        validate_image(image)
    error = classify(CanaryError(str(rejected.value)))
    assert (error.code, error.status, error.body().field) == (ErrorCode.INVALID, 422, "image")


def test_only_the_first_line_of_a_message_is_sent() -> None:
    error = classify(CanaryError("cannot reach Temporal at x: refused\n  details nobody needs"))
    assert error.message == "cannot reach Temporal at x: refused"
