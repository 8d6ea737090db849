"""Webhooks in a job spec: what a user writes, and every mistake refused naming its field."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from workflows import names
from workflows.admission import InvalidOperationInput, check
from workflows.models import JobState, Phase, UpdateRulesRequest
from workflows.spec import JobSpec, validation_message
from workflows.webhook_spec import WebhookType

GOOD = """
name: web
namespace: shop
workload: {name: web}
steps: [{setWeight: 20}, {pause: {}}]
webhooks:
  - name: smoke-tests
    type: pre-rollout
    url: http://tester.shop/run
    timeout: 30s
    metadata: {suite: smoke, cmd: "curl -s http://web-canary"}
  - name: load
    type: rollout
    url: https://loadtester.shop:8443/gate
  - name: approval
    type: confirm-promotion
    url: http://gate.shop/approve
  - name: notify
    type: post-rollout
    url: http://chat.shop/hook
"""


def _spec(**changes: Any) -> dict[str, Any]:
    return {**yaml.safe_load(GOOD), **changes}


def _refusal(webhooks: list[dict[str, Any]]) -> str:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(_spec(webhooks=webhooks))
    return validation_message(error.value)


def _hook(**fields: Any) -> dict[str, Any]:
    return {"name": "gate", "type": "rollout", "url": "http://gate.shop/", **fields}


def test_a_job_with_every_hook_type_reads_and_writes_back_the_same() -> None:
    spec = JobSpec.model_validate(yaml.safe_load(GOOD))
    assert [h.type for h in spec.webhooks] == list(WebhookType)
    smoke = spec.webhooks[0]
    assert smoke.timeout == timedelta(seconds=30) and smoke.metadata["suite"] == "smoke"
    assert spec.webhooks[1].timeout == timedelta(seconds=10), "Flagger's default"
    dumped = spec.model_dump(mode="json")
    assert dumped["webhooks"][0]["timeout"] == "30s"
    assert JobSpec.model_validate(dumped) == spec
    assert spec.rules.webhooks == spec.webhooks, "update-rules carries them"


def test_a_job_without_webhooks_has_none() -> None:
    assert JobSpec.model_validate(_spec(webhooks=[])).webhooks == []
    assert JobSpec.model_validate({k: v for k, v in yaml.safe_load(GOOD).items() if k != "webhooks"}).webhooks == []


@pytest.mark.parametrize("url", ["tester.shop/run", "ftp://tester.shop/", "http://", "http://a b/",
                                 "http://host:port/", ""])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    message = _refusal([_hook(url=url)])
    assert message.startswith("webhooks.0.url: "), message


def test_an_unknown_type_lists_the_known_ones() -> None:
    message = _refusal([_hook(type="pre-promotion")])
    assert message == ("webhooks.0.type: unknown webhook type 'pre-promotion'; "
                       "known types: pre-rollout, rollout, confirm-promotion, post-rollout")


def test_two_hooks_of_one_name_are_refused() -> None:
    message = _refusal([_hook(), _hook(type="post-rollout"), _hook(name="other")])
    assert message == "webhooks: webhooks 1 and 2 are both named 'gate'; names must be unique"


@pytest.mark.parametrize("timeout", ["0s", "6m", "-1s"])
def test_a_timeout_out_of_bounds_is_refused(timeout: str) -> None:
    message = _refusal([_hook(timeout=timeout)])
    assert message.startswith("webhooks.0.timeout: "), message


def test_the_bounds_themselves_are_allowed() -> None:
    spec = JobSpec.model_validate(_spec(webhooks=[_hook(timeout="1s"), _hook(name="slow", timeout="5m")]))
    assert [h.timeout for h in spec.webhooks] == [timedelta(seconds=1), timedelta(minutes=5)]


@pytest.mark.parametrize(("hook", "field"), [
    (_hook(name="Gate_1"), "webhooks.0.name"),
    (_hook(metadata={"k": "v" * 1001}), "webhooks.0.metadata"),
    (_hook(metadata={"k": 1}), "webhooks.0.metadata.k"),
    (_hook(method="GET"), "webhooks.0.method"),
])
def test_other_mistakes_name_their_field(hook: dict[str, Any], field: str) -> None:
    assert _refusal([hook]).startswith(f"{field}: ")


def test_update_rules_with_a_bad_hook_is_refused_naming_the_field() -> None:
    state = JobState(phase=Phase.HEALTHY)
    request = UpdateRulesRequest(rules={"steps": [{"setWeight": 50}], "webhooks": [_hook(url="nope")]})
    with pytest.raises(InvalidOperationInput) as error:
        check(names.UPDATE_RULES, request, state, "shop/web")
    assert error.value.field == "rules.webhooks.0.url"
