"""The ``call_webhook`` activity: one POST of a release's facts to a hook, and what it answered.

Every outcome is an answer, never a failed activity: a refusal, an HTTP error, a timeout and an
unreachable host all come back as ``ok: false`` with a message an operator can act on, so the
workflow (not Temporal's retry policy) decides what a refusal means for the release, and the
message reaches the job's events and pause reason. Pure urllib: a hook is one small POST.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from temporalio import activity

from workflows.webhook_spec import CALL_WEBHOOK_ACTIVITY, MAX_MESSAGE, WebhookRequest, WebhookResult

__all__ = ["CALL_WEBHOOK_ACTIVITY", "WebhookRequest", "WebhookResult", "call", "call_webhook"]

# Enough of a refusal's body to say why (Flagger's testers answer a line of text).
MAX_BODY_SHOWN = 300


def _excerpt(raw: bytes) -> str:
    text = raw[:MAX_BODY_SHOWN].decode("utf-8", errors="replace").strip()
    return f": {text}" if text else ""


def call(request: WebhookRequest) -> WebhookResult:
    """POST the body as JSON and wait at most the hook's timeout (blocking I/O; run it in a thread)."""
    hook = f"{request.body.type.value} webhook {request.body.name}"
    data = request.body.model_dump_json().encode()
    http = urllib.request.Request(request.url, data=data, method="POST",
                                  headers={"Content-Type": "application/json", "User-Agent": "canary-delivery"})
    try:
        with urllib.request.urlopen(http, timeout=request.timeout_seconds) as response:
            status = int(response.status)
            body = response.read(MAX_BODY_SHOWN)
    except urllib.error.HTTPError as error:
        body = error.read(MAX_BODY_SHOWN) if error.fp is not None else b""
        return WebhookResult(ok=False, status=error.code,
                             message=f"{hook} answered HTTP {error.code}{_excerpt(body)}"[:MAX_MESSAGE])
    except TimeoutError:
        return WebhookResult(ok=False, message=f"{hook} did not answer within {request.timeout_seconds:g}s")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            return WebhookResult(ok=False, message=f"{hook} did not answer within {request.timeout_seconds:g}s")
        return WebhookResult(ok=False, message=f"{hook} is unreachable at {request.url}: {reason}"[:MAX_MESSAGE])
    if not 200 <= status < 300:
        # urllib follows redirects and raises for 4xx/5xx; a 1xx/3xx that gets here is no yes.
        return WebhookResult(ok=False, status=status,
                             message=f"{hook} answered HTTP {status}{_excerpt(body)}"[:MAX_MESSAGE])
    return WebhookResult(ok=True, status=status, message=f"{hook} answered HTTP {status}")


@activity.defn(name=CALL_WEBHOOK_ACTIVITY)
async def call_webhook(request: WebhookRequest) -> WebhookResult:
    """Call in a thread, so a slow hook never blocks the worker's event loop."""
    return await asyncio.to_thread(call, request)
