"""The exceptions callers of :mod:`starter.client` handle, one class per kind of failure.

The CLI prints any of them as ``error: <message>``; the HTTP API picks its status code by
class (:func:`starter.api.errors.classify`), never by reading the message. The message is
one line that tells the user what went wrong, without a traceback.
"""

from __future__ import annotations


class CanaryError(Exception):
    """A canary operation failed in a way the user can understand and act on."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # The input field at fault, when there is one (the path the user wrote it under).
        self.field = field

    def __str__(self) -> str:
        return self.message


class JobNotFound(CanaryError):
    """No job of that name runs or ran in that namespace."""


class JobEnded(JobNotFound):
    """The job's workflow has ended (deleted, or refused at creation): it takes no operations."""


class Unavailable(CanaryError):
    """Temporal, the canary worker or (through a stalled attach) Kubernetes cannot be reached."""


class InvalidInput(CanaryError):
    """A value that cannot work for this job; ``field`` names it."""


class Conflict(CanaryError):
    """The job's state does not allow this now, e.g. a ``continue`` for a gate no longer current."""
