"""Error bodies of the HTTP API, and the mapping from a :class:`CanaryError` to a status code.

The shared client (:mod:`starter.client`) raises one exception class per kind of failure,
because ``canaryctl`` only prints them while an HTTP caller needs a status code it can branch
on and, for a bad input value, the field to fix. The class decides the code; the message is
passed on, never read. A failure of no known class is a rejection by the job (409), which
keeps an unforeseen one from ever turning into a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field

from starter.errors import CanaryError, Conflict, InvalidInput, JobNotFound, Unavailable


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


# Most specific first: JobEnded is a JobNotFound.
_CODES: list[tuple[type[CanaryError], ErrorCode]] = [
    (Unavailable, ErrorCode.UNAVAILABLE),
    (JobNotFound, ErrorCode.NOT_FOUND),
    (InvalidInput, ErrorCode.INVALID),
    (Conflict, ErrorCode.CONFLICT),
]


def classify(error: CanaryError) -> ApiError:
    """The API error for a client failure: status code by class, and the field when the input is at fault."""
    message = error.message.splitlines()[0] if error.message else "failed"
    code = next((code for kind, code in _CODES if isinstance(error, kind)), ErrorCode.CONFLICT)
    if code == ErrorCode.INVALID:
        return ApiError(code, message, [FieldError(field=error.field, reason=message)])
    return ApiError(code, message)
