"""The one exception type callers of :mod:`starter.client` need to handle.

The CLI prints it as ``error: <message>``; an HTTP API can turn it into a response body.
Either way the message is one line that tells the user what went wrong, without a traceback.
"""

from __future__ import annotations


class CanaryError(Exception):
    """A canary operation failed in a way the user can understand and act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
