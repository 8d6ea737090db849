"""Metric providers and the ``measure_metric`` activity: one measurement, judged by CEL.

The interface is small on purpose: a provider is a function from its (rendered) settings to a
float, None when there is no data, raising :class:`ProviderError` when it cannot answer.
:func:`judge` turns that value into a :class:`~workflows.verdict.Measurement` with Argo's
condition semantics; the workflow counts measurements against limits in
:mod:`workflows.verdict`. Provider trouble is a measurement with phase ``error``, not a failed
activity: the workflow, not Temporal's retry policy, decides how many errors are too many
(``consecutiveErrorLimit``), and every error is visible among the measurements.

The request and measurement types live in ``workflows/`` (the workflow cannot import
``activities/``) and are re-exported here.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime

import celpy
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError
from temporalio import activity

from workflows.analysis_spec import MEASURE_METRIC_ACTIVITY, MeasureRequest, Provider
from workflows.verdict import Measurement, MeasurementPhase

__all__ = [
    "MEASURE_METRIC_ACTIVITY",
    "MeasureRequest",
    "Measurement",
    "MeasurementPhase",
    "MetricActivities",
    "ProviderError",
    "judge",
    "measure",
]

_CEL = celpy.Environment()


class ProviderError(Exception):
    """The provider could not answer: unreachable, refused the query, or answered nonsense."""


def _evaluate(condition: str, value: float) -> bool:
    """``condition`` with ``result`` bound to ``value``; a non-boolean or failing one is a ProviderError."""
    try:
        answer = _CEL.program(_CEL.compile(condition)).evaluate({"result": celtypes.DoubleType(value)})
    except (CELParseError, CELEvalError) as err:
        raise ProviderError(f"condition {condition!r} could not be evaluated: {str(err).splitlines()[0]}") from None
    if not isinstance(answer, celtypes.BoolType):
        raise ProviderError(f"condition {condition!r} gave {answer!r}, not true or false")
    return bool(answer)


def judge(value: float | None, success_condition: str | None, failure_condition: str | None,
          at: datetime | None = None) -> Measurement:
    """Judge one value by Argo's rules.

    A true ``failureCondition`` fails; else a true ``successCondition`` succeeds; else a false
    ``successCondition`` fails when it is the only condition, and is inconclusive when a
    ``failureCondition`` (false here) also exists; with no condition deciding, inconclusive.
    No data (None or NaN) is inconclusive, never failed: an idle service is no reason to roll back.
    """
    if value is None or math.isnan(value):
        return Measurement(value=None, phase=MeasurementPhase.INCONCLUSIVE, message="no data", at=at)
    try:
        if failure_condition is not None and _evaluate(failure_condition, value):
            return Measurement(value=value, phase=MeasurementPhase.FAILED,
                               message=f"failureCondition {failure_condition} is true", at=at)
        if success_condition is not None:
            if _evaluate(success_condition, value):
                return Measurement(value=value, phase=MeasurementPhase.SUCCESSFUL,
                                   message=f"successCondition {success_condition} is true", at=at)
            phase = MeasurementPhase.INCONCLUSIVE if failure_condition is not None else MeasurementPhase.FAILED
            return Measurement(value=value, phase=phase,
                               message=f"successCondition {success_condition} is false", at=at)
    except ProviderError as err:
        return Measurement(value=value, phase=MeasurementPhase.ERROR, message=str(err)[:1000], at=at)
    return Measurement(value=value, phase=MeasurementPhase.INCONCLUSIVE, message="no condition decided", at=at)


def _prometheus_address(explicit: str | None, default: str | None, kind: str) -> str:
    address = explicit or default
    if not address:
        raise ProviderError(f"no Prometheus address: give provider.{kind}.address or configure the worker's")
    return address


def query_provider(provider: Provider, default_prometheus_address: str | None) -> float | None:
    """The provider's value now (blocking I/O; run it in a thread).

    Not for ``baseline``, which judges itself: :func:`measure` routes it before this.
    """
    # Imported here so each provider module stays importable (and testable) on its own.
    from activities.metrics import builtin, prometheus, web

    if provider.prometheus is not None:
        address = _prometheus_address(provider.prometheus.address, default_prometheus_address, "prometheus")
        return prometheus.query(address, provider.prometheus.query)
    if provider.builtin is not None:
        address = _prometheus_address(provider.builtin.address, default_prometheus_address, "builtin")
        return builtin.query(provider.builtin, address)
    if provider.baseline is not None:
        raise ProviderError("a baseline comparison is a whole measurement, not a value: use measure()")
    assert provider.web is not None
    return web.query(provider.web)


def measure(request: MeasureRequest, default_prometheus_address: str | None = None,
            clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Measurement:
    """One measurement: ask the provider, then judge its value; provider trouble is phase ``error``.

    A ``baseline`` comparison decides its own phase (its metric has no conditions), so it goes
    straight to :mod:`activities.metrics.baseline` instead of through :func:`judge`.
    """
    default = request.default_prometheus_address or default_prometheus_address
    try:
        if request.provider.baseline is not None:
            from activities.metrics import baseline

            address = _prometheus_address(request.provider.baseline.address, default, "baseline")
            return baseline.measure(request.provider.baseline, address, at=clock())
        value = query_provider(request.provider, default)
    except ProviderError as err:
        return Measurement(phase=MeasurementPhase.ERROR, message=f"{request.metric}: {err}"[:1000], at=clock())
    return judge(value, request.success_condition, request.failure_condition, at=clock())


class MetricActivities:
    """The ``measure_metric`` activity, bound to the worker's default Prometheus address."""

    def __init__(self, default_prometheus_address: str | None = None) -> None:
        self.default_prometheus_address = default_prometheus_address

    @activity.defn(name=MEASURE_METRIC_ACTIVITY)
    async def measure_metric(self, request: MeasureRequest) -> Measurement:
        """Measure in a thread, so a slow provider never blocks the worker's event loop."""
        return await asyncio.to_thread(measure, request, self.default_prometheus_address)
