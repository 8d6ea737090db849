"""Scripted webhook receivers for time-skipping tests: answers by hook name, every call recorded.

The ``call_webhook`` activity here skips only the HTTP request: the answer comes from a script
the test writes (an HTTP status, or ``None`` for a receiver that cannot be reached), and every
body the workflow sent is kept, so a test asserts what a real receiver would have seen. The
real activity is tested against a real HTTP server in tests/activities/test_webhooks.py.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from workflows.webhook_spec import CALL_WEBHOOK_ACTIVITY, WebhookBody, WebhookRequest, WebhookResult

Answer = int | None  # an HTTP status, or None: unreachable


class FakeHooks:
    """Per hook name, the answers its next calls get; the last one repeats; unscripted hooks answer 200."""

    def __init__(self) -> None:
        self.script: dict[str, list[Answer]] = {}
        self.calls: list[WebhookRequest] = []
        self.held: dict[str, asyncio.Event] = {}  # hooks that answer only once let go

    def hold(self, name: str) -> None:
        """Calls to hook ``name`` wait (a slow receiver) until :meth:`let_go`."""
        self.held[name] = asyncio.Event()

    def let_go(self, name: str) -> None:
        self.held.pop(name).set()

    def set(self, name: str, *answers: Answer) -> None:
        """From now on, hook ``name`` answers ``answers`` in order, then the last one forever."""
        self.script[name] = list(answers)

    def bodies(self, name: str | None = None) -> list[WebhookBody]:
        """What the receivers got, in order (only hook ``name``'s when given)."""
        return [call.body for call in self.calls if name is None or call.body.name == name]

    def order(self) -> list[str]:
        """``<type> <name>`` of every call, in order."""
        return [f"{call.body.type.value} {call.body.name}" for call in self.calls]

    def _next(self, name: str) -> Answer:
        answers = self.script.get(name, [200])
        answer = answers[0]
        if len(answers) > 1:
            self.script[name] = answers[1:]
        return answer

    @activity.defn(name=CALL_WEBHOOK_ACTIVITY)
    async def call_webhook(self, request: WebhookRequest) -> WebhookResult:
        self.calls.append(request)
        held = self.held.get(request.body.name)
        if held is not None:
            await held.wait()
        hook = f"{request.body.type.value} webhook {request.body.name}"
        status = self._next(request.body.name)
        if status is None:
            return WebhookResult(ok=False, message=f"{hook} is unreachable at {request.url}: connection refused")
        if 200 <= status < 300:
            return WebhookResult(ok=True, status=status, message=f"{hook} answered HTTP {status}")
        return WebhookResult(ok=False, status=status, message=f"{hook} answered HTTP {status}: not yet")
