"""The one exception type callers of :mod:`starter.client` need to handle.

The CLI prints it as ``error: <message>``; an HTTP API can turn it into a response body.
Either way the message is one line that tells the user what went wrong, without a traceback.
"""

from __future__ import annotations


class CanaryError(Exception):
    """A canary operation failed in a way the user can understand and act on."""

    def __init__(self, message: str, *, kind: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # When the job itself refused an operation: "InvalidOperationInput" (bad value, in
        # ``field``) or "OperationNotAllowed" (its state forbids it now).
        self.kind = kind
        self.field = field

    def __str__(self) -> str:
        return self.message
