"""The blueGreen part of a job: Argo Rollouts' fields, and every misfit refused naming its field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from workflows import names
from workflows.admission import InvalidOperationInput, OperationRejected, check
from workflows.models import JobState, Phase, Trigger, UpdateRulesRequest, Version
from workflows.spec import DeliveryMode, JobSpec, validation_message

ROOT = Path(__file__).resolve().parents[2]
METRIC: dict[str, Any] = {"name": "errors", "interval": "1m", "count": 3, "successCondition": "result < 0.01",
                          "provider": {"prometheus": {"address": "http://prometheus:9090", "query": "errors"}}}


def spec(**changes: Any) -> dict[str, Any]:
    return {"name": "web", "namespace": "shop", "workload": {"name": "web"}, "mode": "blueGreen",
            "blueGreen": {"activeService": "web"}, **changes}


def refusal(document: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(document)
    return validation_message(error.value)


def test_the_readme_example_is_a_valid_blue_green_job() -> None:
    job = JobSpec.model_validate(yaml.safe_load((ROOT / "examples" / "blue-green.yaml").read_text()))
    assert job.mode is DeliveryMode.BLUE_GREEN and job.blue_green is not None and job.steps == []
    assert job.blue_green.pre_promotion_analysis is not None and job.blue_green.post_promotion_analysis is not None
    assert "examples/blue-green.yaml" in (ROOT / "README.md").read_text()


def test_argo_rollouts_defaults_and_field_names() -> None:
    job = JobSpec.model_validate(spec())
    assert job.blue_green is not None
    assert (job.blue_green.auto_promotion_enabled, job.blue_green.auto_promotion_seconds,
            job.blue_green.scale_down_delay_seconds, job.blue_green.preview_service) == (True, None, 30, None)
    dumped = job.model_dump(mode="json")
    assert dumped["mode"] == "blueGreen" and dumped["blueGreen"]["activeService"] == "web"
    assert JobSpec.model_validate(dumped) == job


@pytest.mark.parametrize("changes, message", [
    ({"blueGreen": None}, "blueGreen: required with mode: blueGreen"),
    ({"blueGreen": {}}, "blueGreen.activeService: Field required"),
    ({"blueGreen": {"activeService": "Web_1"}}, "blueGreen.activeService: String should match pattern"),
    ({"blueGreen": {"activeService": "web", "previewService": "web"}},
     "blueGreen.previewService: must differ from activeService"),
    ({"blueGreen": {"activeService": "web", "autoPromotionEnabled": False, "autoPromotionSeconds": 30}},
     "blueGreen.autoPromotionSeconds: has no effect with autoPromotionEnabled: false"),
    ({"blueGreen": {"activeService": "web", "scaleDownDelaySeconds": -1}},
     "blueGreen.scaleDownDelaySeconds: Input should be greater than or equal to 0"),
    ({"steps": [{"setWeight": 50}]}, "steps: not used with blueGreen"),
    ({"traffic": {"routing": "istio", "stableService": "a", "canaryService": "b",
                  "istio": {"virtualService": {"name": "web"}}}}, "traffic.routing: istio is not supported"),
    ({"mode": "canary"}, "blueGreen: only used with mode: blueGreen"),
    ({"blueGreen": {"activeService": "web", "prePromotionAnalysis": {"templates": [{"templateName": "nope"}]}}},
     "blueGreen.prePromotionAnalysis.templates.0.templateName: no template named 'nope'"),
    ({"analysis": {"templates": [{"name": "t", "metrics": [{**METRIC, "count": None}]}]},
      "blueGreen": {"activeService": "web", "postPromotionAnalysis": {"templates": [{"templateName": "t"}]}}},
     "blueGreen.postPromotionAnalysis: metric 'errors' of template 't' has no count"),
    ({"analysis": {"templates": [{"name": "t", "metrics": [METRIC]}],
                   "background": {"templates": [{"templateName": "t"}]}}}, "analysis.background: not used"),
    ({"webhooks": [{"name": "ok", "type": "confirm-promotion", "url": "http://hooks/ok"}]},
     "webhooks: a confirm-promotion webhook is not used with blueGreen"),
])
def test_what_does_not_fit_is_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    assert message in refusal(spec(**changes))


def test_a_canary_job_still_needs_steps() -> None:
    assert "steps: List should have at least 1 item" in refusal(spec(mode="canary", blueGreen=None))


def test_new_rules_keep_to_the_job_mode() -> None:
    state = JobState(phase=Phase.HEALTHY)
    bg = UpdateRulesRequest(rules={"blueGreen": {"activeService": "web", "autoPromotionEnabled": False}})
    steps = UpdateRulesRequest(rules={"steps": [{"setWeight": 50}]})
    check(names.UPDATE_RULES, bg, state, "shop/web", blue_green=True)
    check(names.UPDATE_RULES, steps, state, "shop/web", blue_green=False)
    for request, mode in ((steps, True), (bg, False)):
        with pytest.raises(InvalidOperationInput) as refused:
            check(names.UPDATE_RULES, request, state, "shop/web", blue_green=mode)
        assert refused.value.field == "rules.blueGreen"


def test_the_services_cannot_change_while_a_release_runs() -> None:
    running = JobState(phase=Phase.PAUSED, canary=None)
    moved = UpdateRulesRequest(rules={"blueGreen": {"activeService": "web-live"}})
    check(names.UPDATE_RULES, moved, running, "shop/web", blue_green=True, services=("web", None))
    running.canary = Version(revision=2, template_hash="abc", images={"app": "web:2"}, trigger=Trigger.EDIT,
                             started=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(OperationRejected, match="cannot change while revision 2"):
        check(names.UPDATE_RULES, moved, running, "shop/web", blue_green=True, services=("web", None))
    gate = UpdateRulesRequest(rules={"blueGreen": {"activeService": "web", "autoPromotionEnabled": False}})
    check(names.UPDATE_RULES, gate, running, "shop/web", blue_green=True, services=("web", None))
