"""Analysis specs: a good one round-trips as written; every bad one is refused naming its field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from workflows.analysis_spec import (
    Analysis,
    AnalysisStep,
    ArgValue,
    MeasureRequest,
    check_step_refs,
    render,
    rendered_metrics,
)
from workflows.spec import PauseStep, SetWeightStep, validation_message

GOOD = yaml.safe_load("""
templates:
  - name: success-rate
    args: [{name: service}, {name: window, value: 1m}]
    metrics:
      - name: success-rate
        interval: 30s
        count: 5
        initialDelay: 30s
        failureLimit: 1
        inconclusiveLimit: 1
        consecutiveErrorLimit: 3
        successCondition: result >= 0.99
        failureCondition: result < 0.95
        provider:
          prometheus:
            address: http://prometheus:9090
            query: >-
              sum(rate(ok{w="{{args.service}}-canary"}[{{args.window}}]))
              / sum(rate(all{w="{{args.service}}"}[1m]))
      - name: smoke
        interval: 1m
        successCondition: result == 1.0
        provider:
          web:
            url: http://checks.local/{{args.service}}/health
            method: POST
            headers: [{key: X-Service, value: "{{args.service}}"}]
            body: '{"service": "{{args.service}}"}'
            jsonPath: "{$.data.ok}"
            timeoutSeconds: 5
background:
  templates: [{templateName: success-rate}]
  args: [{name: service, value: web}]
  startingStep: 1
""")


def refusal(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Analysis.model_validate(spec)
    return validation_message(caught.value)


def edited(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the field at a dotted ``path`` set (or deleted when value is ...)."""
    spec = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: Any = spec
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return spec


def test_a_good_spec_round_trips_as_written() -> None:
    analysis = Analysis.model_validate(GOOD)
    dumped = analysis.model_dump(mode="json", exclude_defaults=True)
    assert dumped == GOOD
    assert Analysis.model_validate(dumped) == analysis
    assert Analysis.model_validate_json(analysis.model_dump_json()) == analysis
    metric = analysis.templates[0].metrics[0]
    assert (metric.failure_limit, metric.consecutive_error_limit, metric.count) == (1, 3, 5)
    assert analysis.templates[0].metrics[1].inconclusive_limit == 0


@pytest.mark.parametrize(("path", "value", "field", "reason"), [
    ("templates.0.metrics.0.provider", {"datadog": {"query": "x"}}, "templates.0.metrics.0.provider",
     "unknown provider 'datadog'"),
    ("templates.0.metrics.0.provider", {}, "templates.0.metrics.0.provider", "exactly one provider"),
    ("templates.0.metrics.0.provider", {"prometheus": {"query": "up"}, "web": {"url": "http://a", "jsonPath": "$"}},
     "templates.0.metrics.0.provider", "exactly one provider"),
    ("templates.0.metrics.0.successCondition", "result >=", "templates.0.metrics.0.successCondition",
     "does not compile"),
    ("templates.0.metrics.0.failureCondition", "result < threshold", "templates.0.metrics.0.failureCondition",
     "a name other than result: threshold"),
    ("templates.0.metrics.0.successCondition", "result * 2", "templates.0.metrics.0.successCondition",
     "true or false"),
    ("templates.0.metrics.0.failureLimit", -1, "templates.0.metrics.0.failureLimit", "greater than or equal to 0"),
    ("templates.0.metrics.0.inconclusiveLimit", -1, "templates.0.metrics.0.inconclusiveLimit", "greater than"),
    ("templates.0.metrics.0.consecutiveErrorLimit", -2, "templates.0.metrics.0.consecutiveErrorLimit",
     "greater than"),
    ("templates.0.metrics.0.count", 0, "templates.0.metrics.0.count", "greater than or equal to 1"),
    ("templates.0.metrics.0.interval", "0s", "templates.0.metrics.0.interval", "at least 1s"),
    ("templates.0.metrics.0.interval", "400d", "templates.0.metrics.0.interval", "at most 365d"),
    ("templates.0.metrics.0.initialDelay", "366d", "templates.0.metrics.0.initialDelay", "at most 365d"),
    ("templates.0.metrics.0.interval", ..., "templates.0.metrics.0.interval", "Field required"),
    ("templates.0.metrics.0.provider.prometheus.address", "prometheus:9090",
     "templates.0.metrics.0.provider.prometheus.address", "not an http"),
    ("templates.0.metrics.1.provider.web.method", "DELETE", "templates.0.metrics.1.provider.web.method", "GET"),
    ("templates.0.metrics.1.provider.web.jsonPath", "$.a[?(@.x)]", "templates.0.metrics.1.provider.web.jsonPath",
     "pattern"),
    ("templates.0.metrics.1.name", "success-rate", "metrics.1.name", "given twice"),
    ("background.templates.0.templateName", "latency", "background.templates.0.templateName",
     "no template named 'latency'; templates: success-rate"),
    ("background.args", [], "background.args", "needs a value for arg 'service'"),
    ("background.args.0.name", "svc", "background.args", "needs a value for arg 'service'"),
    ("background.startingStep", -1, "background.startingStep", "greater than"),
])
def test_every_refusal_names_its_field(path: str, value: Any, field: str, reason: str) -> None:
    message = refusal(edited(path, value))
    assert field in message and reason in message, message


def test_an_undefined_arg_in_a_query_or_url_names_the_field() -> None:
    query = "sum(rate(x{w='{{args.workload}}'}[1m]))"
    message = refusal(edited("templates.0.metrics.0.provider.prometheus.query", query))
    assert "metrics.0.provider.prometheus.query: {{args.workload}} is not an arg of template 'success-rate'" in message
    message = refusal(edited("templates.0.metrics.1.provider.web.url", "http://x/{{args.nope}}"))
    assert "metrics.1.provider.web.url: {{args.nope}}" in message


def test_an_arg_given_that_no_template_takes_is_a_typo_and_refused() -> None:
    spec = edited("background.args", [{"name": "service", "value": "web"}, {"name": "servce", "value": "x"}])
    assert "background.args.1.name: no referenced template takes an arg 'servce'" in refusal(spec)


def test_bounds_on_templates_and_metrics() -> None:
    many = [{"name": f"t{i}", "metrics": GOOD["templates"][0]["metrics"][:1],
             "args": GOOD["templates"][0]["args"]} for i in range(21)]
    assert "templates: List should have at most 20 items" in refusal({"templates": many})
    metric = GOOD["templates"][0]["metrics"][0]
    metrics = [{**metric, "name": f"m{i}"} for i in range(21)]
    spec = edited("templates.0.metrics", metrics)
    assert "templates.0.metrics: List should have at most 20 items" in refusal(spec)


def test_analysis_steps_are_checked_against_the_templates() -> None:
    analysis = Analysis.model_validate(edited("templates.0.metrics.1.count", 2))
    good = AnalysisStep.model_validate(
        {"analysis": {"templates": [{"templateName": "success-rate"}], "args": [{"name": "service", "value": "web"}]}})
    bad = AnalysisStep.model_validate({"analysis": {"templates": [{"templateName": "latency"}]}})
    steps: list[object] = [SetWeightStep(set_weight=20), good, PauseStep.model_validate({"pause": {}})]
    check_step_refs(analysis, steps)
    with pytest.raises(ValueError, match=r"steps\.1\.analysis\.templates\.0\.templateName: no template named"):
        check_step_refs(analysis, [steps[0], bad])
    with pytest.raises(ValueError, match=r"analysis.background.startingStep: 1 is past the last step"):
        check_step_refs(analysis, [good])
    with pytest.raises(ValueError, match=r"steps\.0\.analysis\.templates\.0\.templateName.*define them"):
        check_step_refs(None, [good])


def test_a_step_analysis_needs_a_count_for_every_metric() -> None:
    # The step waits for a verdict: a metric measured "until the step ends" would never give one.
    step = AnalysisStep.model_validate(
        {"analysis": {"templates": [{"templateName": "success-rate"}], "args": [{"name": "service", "value": "web"}]}})
    with pytest.raises(ValueError, match=r"steps\.1\.analysis: metric 'smoke' of template 'success-rate' has no "
                                         r"count.*belong in analysis\.background"):
        check_step_refs(Analysis.model_validate(GOOD), [SetWeightStep(set_weight=20), step])


def test_render_substitutes_given_args_over_defaults() -> None:
    template = Analysis.model_validate(GOOD).templates[0]
    rendered = render(template, [ArgValue(name="service", value="web")])
    assert rendered == {
        "success-rate": 'sum(rate(ok{w="web-canary"}[1m])) / sum(rate(all{w="web"}[1m]))',
        "smoke": "http://checks.local/web/health",
    }
    assert render(template, {"service": "api", "window": "5m"})["success-rate"].startswith(
        'sum(rate(ok{w="api-canary"}[5m]))')
    with pytest.raises(ValueError, match=r"no value for \{\{args.service\}\}"):
        render(template, {})
    smoke = rendered_metrics(template, {"service": "web"})[1]
    assert smoke.provider.web is not None
    assert smoke.provider.web.body == '{"service": "web"}'
    assert smoke.provider.web.headers[0].value == "web"
    request = MeasureRequest.of(smoke, "http://prometheus:9090")
    assert MeasureRequest.model_validate_json(request.model_dump_json()) == request
    assert request.success_condition == "result == 1.0"
