"""Webhooks in a job spec, and the messages of the ``call_webhook`` activity.

Flagger's gates, with Flagger's names so its users read a job at a glance::

    webhooks:
      - name: smoke-tests
        type: pre-rollout          # pre-rollout | rollout | confirm-promotion | post-rollout
        url: http://tester.shop/run
        timeout: 10s
        metadata: {suite: smoke}

Every mistake that can be seen before a release (a URL that is not http(s), an unknown type,
two hooks of one name, a timeout no call could keep) is refused here, naming its field, so a job
is refused at ``apply``/``update-rules`` instead of at its first release.

Pure: the HTTP call is the ``call_webhook`` activity in ``activities/webhooks.py``; what each
answer means for the release is in ``workflows/canary.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workflows.fields import NAME_PATTERN, Duration, StrictModel

CALL_WEBHOOK_ACTIVITY = "call_webhook"
MAX_WEBHOOKS = 20
MAX_URL = 2_048
MAX_METADATA = 20
MAX_METADATA_KEY = 63
MAX_METADATA_VALUE = 1_000
MIN_TIMEOUT = timedelta(seconds=1)
# A hook that needs longer should answer at once and be asked again (confirm-promotion is polled).
MAX_TIMEOUT = timedelta(minutes=5)
DEFAULT_TIMEOUT = timedelta(seconds=10)
MAX_MESSAGE = 1_000


class WebhookType(StrEnum):
    """When a hook is called, and what its answer means (docs/webhooks.md)."""

    PRE_ROLLOUT = "pre-rollout"
    ROLLOUT = "rollout"
    CONFIRM_PROMOTION = "confirm-promotion"
    POST_ROLLOUT = "post-rollout"


KNOWN_TYPES = ", ".join(t.value for t in WebhookType)


def check_url(value: str) -> str:
    """Refuse anything but an absolute http(s) URL with a host; return it unchanged otherwise."""
    if any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not a URL: it contains white space")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as error:
        raise ValueError(f"{value!r} is not a URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{value!r} has no host")
    return value


class Webhook(StrictModel):
    """One hook: a POST of the release's facts to ``url``; 2xx within ``timeout`` says yes."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    type: WebhookType
    url: str = Field(max_length=MAX_URL)
    timeout: Duration = DEFAULT_TIMEOUT
    metadata: dict[str, str] = Field(default_factory=dict, max_length=MAX_METADATA)

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in {t.value for t in WebhookType}:
            raise ValueError(f"unknown webhook type {value[:100]!r}; known types: {KNOWN_TYPES}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
            raise ValueError("must be between 1s and 5m")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not key or len(key) > MAX_METADATA_KEY:
                raise ValueError(f"key {key[:100]!r} must have 1 to {MAX_METADATA_KEY} characters")
            if len(text) > MAX_METADATA_VALUE:
                raise ValueError(f"value of {key!r} is longer than {MAX_METADATA_VALUE} characters")
        return value


def check_unique(webhooks: Sequence[Webhook]) -> None:
    """Refuse two hooks of one name: events and pause reasons name a hook, so a name must say which."""
    seen: dict[str, int] = {}
    for index, hook in enumerate(webhooks):
        if hook.name in seen:
            raise ValueError(f"webhooks {seen[hook.name] + 1} and {index + 1} are both named {hook.name!r}; "
                             "names must be unique")
        seen[hook.name] = index


class _Message(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


class WebhookBody(_Message):
    """What a hook receives as JSON: the release's facts, and the hook's own metadata.

    ``step`` is the 1-based step a ``rollout`` hook is called before (None for the other types);
    ``outcome`` is how the release ended, for ``post-rollout`` only.
    """

    job: str
    namespace: str
    workload: str
    revision: int
    images: dict[str, str]
    phase: str
    step: int | None = None
    type: WebhookType
    name: str
    metadata: dict[str, str] = Field(default_factory=dict)
    outcome: str | None = None
    reason: str | None = None


class WebhookRequest(_Message):
    """One call: where, how long to wait, and the body."""

    url: str
    timeout_seconds: float = Field(alias="timeoutSeconds")
    body: WebhookBody


class WebhookResult(_Message):
    """A hook's answer: ``ok`` for 2xx; anything else (errors and timeouts too) is not ok, with why."""

    ok: bool
    status: int | None = None
    message: str = ""
