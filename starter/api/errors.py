"""Error bodies of the HTTP API, and the mapping from a :class:`CanaryError` to a status code.

The shared client (:mod:`starter.client`) speaks in one-line messages, because ``canaryctl``
only prints them. An HTTP caller needs more: a status code it can branch on and, for a bad
input value, the field to fix. The workflow's update validators all reject with the same
exception type, so the class of a rejection is read from its message here, in one explicit
table that the tests pin down message by message. A message no rule knows is a rejection by
the job (409): that is what every unclassified validator message is, and it keeps an unknown
message from ever turning into a 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field

from starter.errors import CanaryError


class ErrorCode(StrEnum):
    """Machine-readable class of an error; one per status code the API answers with."""

    BAD_REQUEST = "bad-request"  # 400: the body is not JSON at all
    UNAUTHORIZED = "unauthorized"  # 401
    FORBIDDEN = "forbidden"  # 403
    NOT_FOUND = "not-found"  # 404
    METHOD_NOT_ALLOWED = "method-not-allowed"  # 405
    CONFLICT = "conflict"  # 409: the job's state does not allow the operation now
    INVALID = "invalid"  # 422: a field has a value that cannot work
    UNAVAILABLE = "unavailable"  # 503: Temporal, the worker or Kubernetes cannot be reached


STATUS_CODES = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.INVALID: 422,
    ErrorCode.UNAVAILABLE: 503,
}


class FieldError(BaseModel):
    """One problem with one input field."""

    field: str | None = Field(description="dotted path of the field (body, path or query), or null")
    reason: str


class ErrorBody(BaseModel):
    """Every error the API answers with: what went wrong, and which field to fix if any."""

    status: int
    code: ErrorCode
    message: str = Field(description="one line for a human")
    field: str | None = Field(default=None, description="the first field at fault, if the input is")
    reason: str = Field(description="why, for that field (or the message again)")
    errors: list[FieldError] = Field(default_factory=list, description="every field problem found")


@dataclass
class ApiError(Exception):
    """Raised by route handlers; the app turns it into an :class:`ErrorBody` response."""

    code: ErrorCode
    message: str
    errors: list[FieldError] | None = None
    headers: dict[str, str] | None = None

    @property
    def status(self) -> int:
        """The HTTP status code of this error."""
        return STATUS_CODES[self.code]

    def body(self) -> ErrorBody:
        """The JSON body; ``field``/``reason`` repeat the first field problem for simple clients."""
        errors = self.errors or []
        first = errors[0] if errors else FieldError(field=None, reason=self.message)
        return ErrorBody(status=self.status, code=self.code, message=self.message, field=first.field,
                         reason=first.reason, errors=errors)


def invalid(field: str, reason: str) -> ApiError:
    """A 422 naming one field."""
    return ApiError(ErrorCode.INVALID, f"{field}: {reason}", [FieldError(field=field, reason=reason)])


# (pattern, code, field): the first rule whose pattern is found in the message wins. The
# messages come from starter/client.py (connection, RPC, timeouts) and from the workflow's
# update validators (workflows/canary.py `_check`, workflows/images.py `validate_image`).
_RULES: list[tuple[re.Pattern[str], ErrorCode, str | None]] = [
    (re.compile(p), code, field) for p, code, field in [
        # Temporal, the worker or (through a stalled attach) Kubernetes cannot be reached.
        (r"^cannot reach Temporal", ErrorCode.UNAVAILABLE, None),
        (r"^Temporal namespace .* not found", ErrorCode.UNAVAILABLE, None),
        (r"^no answer from Temporal", ErrorCode.UNAVAILABLE, None),
        (r"not answered within \d+ s", ErrorCode.UNAVAILABLE, None),
        (r"did not attach within \d+ s", ErrorCode.UNAVAILABLE, None),
        (r"^Temporal: ", ErrorCode.UNAVAILABLE, None),
        # The job does not exist, or no longer: its workflow has ended (deleted, or refused at creation).
        (r"^no canary job ", ErrorCode.NOT_FOUND, None),
        (r"^canary job \S+ has ended", ErrorCode.NOT_FOUND, None),
        # A bad input value for this job: the caller must change the named field.
        (r"^image ", ErrorCode.INVALID, "image"),
        (r"^the pod template has \d+ containers", ErrorCode.INVALID, "container"),
        (r"^container .* is not in the pod template", ErrorCode.INVALID, "container"),
        (r"^unknown revision \d+", ErrorCode.INVALID, "revision"),
        (r"^revision \d+ is too old", ErrorCode.INVALID, "revision"),
        (r"refused: workload: Deployment \S+ not found", ErrorCode.INVALID, "workload.name"),
        (r"^invalid namespace ", ErrorCode.INVALID, "namespace"),
        (r"^unknown phase ", ErrorCode.INVALID, "status"),
        (r"^(steps|traffic|progressDeadline|onPauseTimeout|maxPause)\b", ErrorCode.INVALID, "rules"),
        # Everything else the job refuses is a conflict with its state, e.g. "nothing to continue:
        # the job is healthy, not paused", "no release is running (the job is healthy)", "the job is
        # deleted", "belongs to canary job 'other'", "delivers Deployment a, not b".
    ]
]


def classify(error: CanaryError) -> ApiError:
    """The API error for a client failure: status code, and the field when the input is at fault."""
    message = error.message.splitlines()[0] if error.message else "failed"
    # The job's own refusals say what they are; the table below is for everything else.
    if error.kind == "InvalidOperationInput":
        return ApiError(ErrorCode.INVALID, message, [FieldError(field=error.field, reason=message)])
    if error.kind == "OperationNotAllowed":
        return ApiError(ErrorCode.CONFLICT, message)
    for pattern, code, field in _RULES:
        if pattern.search(message):
            errors = [FieldError(field=field, reason=message)] if field else None
            return ApiError(code, message, errors)
    return ApiError(ErrorCode.CONFLICT, message)
