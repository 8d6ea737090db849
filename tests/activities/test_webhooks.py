"""The call_webhook activity against a real HTTP server on 127.0.0.1: yes, no, too slow, nobody there."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from activities.webhooks import call
from devenv.processes import free_port
from tests.hook_receiver import Received, hook_receiver
from workflows.webhook_spec import WebhookBody, WebhookRequest, WebhookType


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, Received]]:
    with hook_receiver() as served:
        yield served


def _request(url: str, timeout: float = 2) -> WebhookRequest:
    body = WebhookBody(job="web", namespace="shop", workload="web", revision=3,
                       images={"app": "registry.local/web:3"}, phase="progressing", step=2,
                       type=WebhookType.ROLLOUT, name="load", metadata={"suite": "smoke"})
    return WebhookRequest(url=url, timeout_seconds=timeout, body=body)


def test_a_2xx_answer_is_ok_and_the_body_is_the_release(receiver: tuple[str, Received]) -> None:
    base, received = receiver
    result = call(_request(f"{base}/gate"))
    assert result.ok and result.status == 200
    path, body, content_type = received.requests[-1]
    assert path == "/gate" and content_type == "application/json"
    assert body == {"job": "web", "namespace": "shop", "workload": "web", "revision": 3,
                    "images": {"app": "registry.local/web:3"}, "phase": "progressing", "step": 2,
                    "type": "rollout", "name": "load", "metadata": {"suite": "smoke"},
                    "outcome": None, "reason": None}


def test_a_202_is_a_yes_too(receiver: tuple[str, Received]) -> None:
    assert call(_request(f"{receiver[0]}/status/202")).ok


@pytest.mark.parametrize("status", [500, 403, 404])
def test_an_error_status_is_a_no_with_the_answer_in_the_message(receiver: tuple[str, Received], status: int) -> None:
    result = call(_request(f"{receiver[0]}/status/{status}"))
    assert not result.ok and result.status == status
    assert result.message == f"rollout webhook load answered HTTP {status}: migrations not finished"


def test_a_hook_slower_than_its_timeout_is_a_no(receiver: tuple[str, Received]) -> None:
    started = time.monotonic()
    result = call(_request(f"{receiver[0]}/slow/3", timeout=0.5))
    assert time.monotonic() - started < 2.5, "the timeout bounds the call"
    assert not result.ok and result.status is None
    assert result.message == "rollout webhook load did not answer within 0.5s"


def test_nobody_listening_is_a_no_that_says_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/gate"
    result = call(_request(url))
    assert not result.ok and result.status is None
    assert result.message.startswith(f"rollout webhook load is unreachable at {url}: ")
    assert "refused" in result.message.lower()
