"""Which status code each kind of client failure becomes: chosen by class, never by message."""

from __future__ import annotations

import pytest

from starter.api.errors import ErrorCode, classify
from starter.errors import CanaryError, Conflict, InvalidInput, JobEnded, JobNotFound, Unavailable

CASES: list[tuple[CanaryError, ErrorCode, str | None]] = [
    (Unavailable("cannot reach Temporal at 127.0.0.1:1: Connection refused"), ErrorCode.UNAVAILABLE, None),
    (JobNotFound("no canary job shop/web"), ErrorCode.NOT_FOUND, None),
    (JobEnded("canary job shop/web has ended; apply it again to restart it"), ErrorCode.NOT_FOUND, None),
    (InvalidInput("unknown revision 9; known revisions: 1, 2", field="revision"), ErrorCode.INVALID, "revision"),
    (Conflict("release 3 step 2 is no longer current"), ErrorCode.CONFLICT, None),
    # A message that looks like another class does not change the code: only the class does.
    (Conflict("no canary job is as broken as this one"), ErrorCode.CONFLICT, None),
    (InvalidInput("cannot reach Temporal, says the validator", field="image"), ErrorCode.INVALID, "image"),
    # A failure of no known class is the job refusing: never a 500.
    (CanaryError("something nobody foresaw"), ErrorCode.CONFLICT, None),
]


@pytest.mark.parametrize(("error", "code", "field"), CASES, ids=[f"{type(c[0]).__name__}: {c[0]}"[:60] for c in CASES])
def test_the_class_decides_the_status_code(error: CanaryError, code: ErrorCode, field: str | None) -> None:
    api_error = classify(error)
    assert api_error.code == code
    body = api_error.body()
    assert body.message == error.message and body.field == field and body.reason == error.message


def test_only_the_first_line_of_a_message_is_sent() -> None:
    error = classify(Unavailable("cannot reach Temporal at x: refused\n  details nobody needs"))
    assert error.message == "cannot reach Temporal at x: refused"
