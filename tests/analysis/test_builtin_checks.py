"""Built-in checks and baseline comparisons in a spec: the PromQL they stand for, and every refusal."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from activities.metrics import MeasurementPhase, MeasureRequest, measure
from workflows import builtin_checks
from workflows.analysis_spec import Analysis, render, rendered_metrics
from workflows.spec import validation_message

SPEC = yaml.safe_load("""
templates:
  - name: checks
    args: [{name: service}, {name: namespace, value: shop}]
    metrics:
      - name: success-rate
        interval: 30s
        successCondition: result >= 0.99
        failureCondition: result < 0.95
        provider:
          builtin: {check: request-success-rate, workload: "{{args.service}}", namespace: "{{args.namespace}}",
                    window: 2m}
      - name: latency
        interval: 30s
        successCondition: result <= 500
        provider:
          builtin: {check: request-duration, workload: "{{args.service}}", namespace: shop}
      - name: errors-vs-stable
        interval: 1m
        provider:
          baseline: {check: request-error-rate, workload: "{{args.service}}", namespace: shop, window: 5m,
                     step: 15s, maxDifference: 0.5, alpha: 0.01, minSamples: 12}
      - name: queue-vs-stable
        interval: 1m
        provider:
          baseline:
            address: http://prometheus:9090
            query: avg(queue_depth{namespace="{{namespace}}", deployment="{{workload}}"})
            workload: "{{args.service}}"
            namespace: shop
            higherIsWorse: false
""")


def refusal(path: str, value: Any) -> str:
    spec = copy.deepcopy(SPEC)
    *parents, last = path.split(".")
    node: Any = spec
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    with pytest.raises(ValidationError) as caught:
        Analysis.model_validate(spec)
    return validation_message(caught.value)


def test_the_spec_round_trips_and_renders_to_istio_queries_for_the_canary() -> None:
    analysis = Analysis.model_validate(SPEC)
    assert Analysis.model_validate(analysis.model_dump(mode="json", exclude_defaults=True)) == analysis
    assert Analysis.model_validate_json(analysis.model_dump_json()) == analysis
    queries = render(analysis.templates[0], {"service": "web"})
    canary = ('reporter="destination", destination_workload_namespace="shop", '
              'destination_workload="web-canary"')
    assert queries["success-rate"] == (
        f'1 - ((sum(rate(istio_requests_total{{{canary}, response_code=~"5.."}}[2m])) or vector(0)) '
        f'/ sum(rate(istio_requests_total{{{canary}}}[2m])))')
    assert queries["latency"] == (
        f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{canary}}}[1m])))")
    metrics = {metric.name: metric for metric in rendered_metrics(analysis.templates[0], {"service": "web"})}
    baseline = metrics["errors-vs-stable"].provider.baseline
    assert baseline is not None and baseline.worse_when_higher
    canary_query, stable_query = baseline.queries()
    # Each sample is the rate over one step, so neighbouring samples do not share requests.
    assert canary_query == builtin_checks.error_rate_query("web-canary", "shop", timedelta(seconds=15))
    assert stable_query == builtin_checks.error_rate_query("web", "shop", timedelta(seconds=15))
    custom = metrics["queue-vs-stable"].provider.baseline
    assert custom is not None and not custom.worse_when_higher
    assert custom.queries() == ('avg(queue_depth{namespace="shop", deployment="web-canary"})',
                                'avg(queue_depth{namespace="shop", deployment="web"})')
    assert (custom.window, custom.step, custom.alpha, custom.min_samples, custom.max_difference) == (
        timedelta(minutes=10), timedelta(seconds=30), 0.05, 10, 0.1)


@pytest.mark.parametrize(("path", "value", "field", "reason"), [
    ("templates.0.metrics.0.provider.builtin.check", "request-succes-rate",
     "templates.0.metrics.0.provider.builtin.check",
     "unknown check 'request-succes-rate'; known checks: request-success-rate, request-error-rate, request-duration"),
    ("templates.0.metrics.0.provider.builtin.workload", "web-canary", "provider.builtin.workload",
     "name the stable Deployment"),
    ("templates.0.metrics.1.provider.builtin.workload", 'web"} or up{a="', "provider.builtin.workload",
     "is not a Kubernetes name"),
    ("templates.0.metrics.1.provider.builtin.namespace", ..., "provider.builtin.namespace", "Field required"),
    ("templates.0.metrics.1.provider.builtin.window", "0s", "provider.builtin.window", "at least 1s"),
    ("templates.0.metrics.1.provider.builtin.address", "prometheus:9090", "provider.builtin.address",
     "not an http"),
    ("templates.0.metrics.1.provider.builtin.workload", "{{args.svc}}", "metrics.1.provider.builtin.workload",
     "{{args.svc}} is not an arg of template"),
    ("templates.0.metrics.2.provider.baseline.check", "request-success-rate", "provider.baseline.check",
     "compare request-error-rate instead"),
    ("templates.0.metrics.2.provider.baseline.check", "p50", "provider.baseline.check",
     "unknown check 'p50'; known checks: request-error-rate, request-duration"),
    ("templates.0.metrics.2.provider.baseline.higherIsWorse", False, "provider.baseline",
     "higherIsWorse: a higher request-error-rate is worse"),
    ("templates.0.metrics.2.provider.baseline.namespace", ..., "provider.baseline",
     "namespace: a built-in check needs the namespace"),
    ("templates.0.metrics.2.provider.baseline.step", "10m", "provider.baseline",
     "step: 10m is longer than the window 5m"),
    ("templates.0.metrics.2.provider.baseline.alpha", 0, "provider.baseline.alpha", "greater than 0"),
    ("templates.0.metrics.2.provider.baseline.minSamples", 2, "provider.baseline.minSamples", "greater than"),
    ("templates.0.metrics.2.provider.baseline.maxDifference", -0.1, "provider.baseline.maxDifference",
     "greater than or equal to 0"),
    ("templates.0.metrics.2.successCondition", "result < 0.1", "templates.0.metrics.2",
     "successCondition: a baseline comparison judges the canary itself"),
    ("templates.0.metrics.3.failureCondition", "result > 0.1", "templates.0.metrics.3",
     "failureCondition: a baseline comparison judges the canary itself"),
    ("templates.0.metrics.3.provider.baseline.query", "avg(queue_depth)", "provider.baseline",
     "query: must use {{workload}}"),
    ("templates.0.metrics.3.provider.baseline.check", "request-duration", "provider.baseline",
     "give exactly one of check or query"),
    ("templates.0.metrics.3.provider.baseline.namespace", ..., "provider.baseline",
     "query: uses {{namespace}}; give namespace"),
    ("templates.0.metrics.3.provider", {"baseline": {"query": "x{w=\"{{workload}}\"}", "workload": "web"},
                                        "builtin": {"check": "request-duration", "workload": "web",
                                                    "namespace": "shop"}},
     "templates.0.metrics.3.provider", "exactly one provider, one of prometheus, web, builtin, baseline"),
])
def test_every_refusal_names_its_field(path: str, value: Any, field: str, reason: str) -> None:
    message = refusal(path, value)
    assert field in message and reason in message, message


def test_a_rendered_arg_that_is_no_name_is_a_measurement_error_not_a_query() -> None:
    analysis = Analysis.model_validate(SPEC)
    metrics = {m.name: m for m in rendered_metrics(analysis.templates[0], {"service": 'web"} or vector(1) #'})}
    for name in ("success-rate", "errors-vs-stable"):
        answer = measure(MeasureRequest.of(metrics[name], "http://127.0.0.1:1"))
        assert answer.phase is MeasurementPhase.ERROR and "is not a Kubernetes name" in answer.message, answer


def test_a_baseline_needs_a_prometheus_address() -> None:
    analysis = Analysis.model_validate(SPEC)
    metric = rendered_metrics(analysis.templates[0], {"service": "web"})[2]
    answer = measure(MeasureRequest.of(metric))
    assert answer.phase is MeasurementPhase.ERROR
    assert "no Prometheus address: give provider.baseline.address" in answer.message
