"""Built-in checks: the PromQL of the common canary metrics, over Istio's standard telemetry.

A job that only wants "the canary answers without errors and fast enough" should not have to
write PromQL. Like Flagger's built-in metrics, a check name plus the workload stands for a
query over the series every Istio sidecar reports as the destination
(``istio_requests_total`` and ``istio_request_duration_milliseconds_bucket`` with
``reporter="destination"``, ``destination_workload`` and ``destination_workload_namespace``).
The canary Deployment of workload ``web`` is ``web-canary`` (so that is the
``destination_workload`` of its pods); the stable pods belong to ``web``.

Checks and what their value means:

- ``request-success-rate``: share of requests not answered 5xx, 0..1 (higher is better).
- ``request-error-rate``: share of requests answered 5xx, 0..1 (higher is worse); the series
  to compare against a baseline, where a relative difference of success rates near 1 would
  hide a fifty-fold rise in errors.
- ``request-duration``: 99th percentile latency in milliseconds (higher is worse).

No traffic is no data, never 0 or 1: a rate over no requests is ``0/0`` (NaN) or an empty
vector, and the provider reads both as None. The error count is ``or vector(0)`` so that a
canary whose every request succeeded (no 5xx series at all) is 1.0 and one whose every request
failed is 0.0, rather than "no data" because one side of the ratio had no series.

Pure: the query text is built here and tested without Prometheus; the
``activities.metrics.builtin`` provider sends it.
"""

from __future__ import annotations

import re
from datetime import timedelta

from workflows.fields import format_duration

REQUEST_SUCCESS_RATE = "request-success-rate"
REQUEST_ERROR_RATE = "request-error-rate"
REQUEST_DURATION = "request-duration"
CHECKS = (REQUEST_SUCCESS_RATE, REQUEST_ERROR_RATE, REQUEST_DURATION)
# The checks a baseline comparison accepts, and whether a higher value is worse for each.
BASELINE_CHECKS = {REQUEST_ERROR_RATE: True, REQUEST_DURATION: True}
CANARY_SUFFIX = "-canary"
DURATION_QUANTILE = 0.99

REQUESTS = "istio_requests_total"
DURATION_BUCKETS = "istio_request_duration_milliseconds_bucket"
# A Kubernetes object name (DNS-1123 subdomain): also what keeps a rendered arg from
# breaking out of the PromQL label matcher it is put in.
_SERVER_ERRORS = 'response_code=~"5.."'
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def canary_workload(workload: str) -> str:
    """The canary Deployment's name for the job's ``workload`` (its pods' ``destination_workload``)."""
    return f"{workload}{CANARY_SUFFIX}"


def check_name(value: str, what: str) -> str:
    """``value`` if it is a Kubernetes name, else a ValueError naming ``what`` (a label value must not inject)."""
    if len(value) > 253 or not _K8S_NAME.match(value):
        raise ValueError(f"{what} {value!r} is not a Kubernetes name (lowercase letters, digits, '-' and '.')")
    return value


def _matchers(workload: str, namespace: str, *extra: str) -> str:
    check_name(workload, "workload")
    check_name(namespace, "namespace")
    items = ['reporter="destination"', f'destination_workload_namespace="{namespace}"',
             f'destination_workload="{workload}"', *extra]
    return "{" + ", ".join(items) + "}"


def error_rate_query(workload: str, namespace: str, window: timedelta) -> str:
    """Share of ``workload``'s requests answered 5xx over ``window`` (the Deployment named, not its canary)."""
    w = format_duration(window)
    errors = f"sum(rate({REQUESTS}{_matchers(workload, namespace, _SERVER_ERRORS)}[{w}]))"
    total = f"sum(rate({REQUESTS}{_matchers(workload, namespace)}[{w}]))"
    return f"({errors} or vector(0)) / {total}"


def success_rate_query(workload: str, namespace: str, window: timedelta) -> str:
    """Share of ``workload``'s requests not answered 5xx over ``window``."""
    return f"1 - ({error_rate_query(workload, namespace, window)})"


def duration_query(workload: str, namespace: str, window: timedelta, quantile: float = DURATION_QUANTILE) -> str:
    """The ``quantile`` of ``workload``'s request latency in milliseconds over ``window``."""
    w = format_duration(window)
    buckets = f"sum by (le) (rate({DURATION_BUCKETS}{_matchers(workload, namespace)}[{w}]))"
    return f"histogram_quantile({quantile:g}, {buckets})"


def series_query(check: str, workload: str, namespace: str, window: timedelta) -> str:
    """The query of ``check`` for the Deployment ``workload`` itself (a baseline compares two of these)."""
    if check == REQUEST_SUCCESS_RATE:
        return success_rate_query(workload, namespace, window)
    if check == REQUEST_ERROR_RATE:
        return error_rate_query(workload, namespace, window)
    if check == REQUEST_DURATION:
        return duration_query(workload, namespace, window)
    raise ValueError(f"unknown check {check!r}; known checks: {', '.join(CHECKS)}")


def check_query(check: str, workload: str, namespace: str, window: timedelta) -> str:
    """The query of ``check`` for the canary of ``workload`` (``<workload>-canary``)."""
    check_name(workload, "workload")
    return series_query(check, canary_workload(workload), namespace, window)
