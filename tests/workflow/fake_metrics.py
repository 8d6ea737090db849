"""A scripted metric source for time-skipping tests: values by metric name, judged for real.

The ``measure_metric`` activity here skips only the provider's HTTP call: the value comes from
a script the test writes, and the judgement is the real :func:`activities.metrics.judge` (the
job's own CEL conditions), so a test of the verdict logic cannot pass on a condition the real
activity would judge differently. Providers themselves are tested against a real Prometheus.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from temporalio import activity

from activities.metrics import judge
from workflows.analysis_spec import MEASURE_METRIC_ACTIVITY, MeasureRequest
from workflows.verdict import Measurement, MeasurementPhase


class ProviderDown:
    """A scripted value meaning "the provider could not answer" (a measurement in phase error)."""

    def __repr__(self) -> str:
        return "ProviderDown()"


DOWN = ProviderDown()
Value = float | None | ProviderDown


class FakeMetrics:
    """Per metric, the values its next measurements read; the last one repeats."""

    def __init__(self) -> None:
        self.script: dict[str, list[Value]] = {}
        self.requests: list[MeasureRequest] = []

    def set(self, metric: str, *values: Value) -> None:
        """From now on, ``metric`` reads ``values`` in order, then the last one forever."""
        self.script[metric] = list(values)

    def taken(self, metric: str) -> int:
        """How many measurements of ``metric`` the workflow asked for."""
        return sum(1 for request in self.requests if request.metric == metric)

    def _next(self, metric: str) -> Value:
        values: Sequence[Value] = self.script.get(metric, [None])
        value = values[0]
        if len(values) > 1:
            self.script[metric] = list(values[1:])
        return value

    @activity.defn(name=MEASURE_METRIC_ACTIVITY)
    async def measure_metric(self, request: MeasureRequest) -> Measurement:
        self.requests.append(request)
        value = self._next(request.metric)
        now = datetime.now(UTC)
        if isinstance(value, ProviderDown):
            return Measurement(phase=MeasurementPhase.ERROR, message=f"{request.metric}: provider unreachable",
                               at=now)
        return judge(value, request.success_condition, request.failure_condition, at=now)
