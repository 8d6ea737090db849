"""Analysis runs as the details query answers them, built with the workflow's own verdict code.

Shared by the text, API and page tests: each run is an :class:`AnalysisRun` with real metric
specs and measurements, turned into its view by :meth:`AnalysisView.of`, so the phases, counts
and reasons the tests read are the ones a running job would report, not hand-written copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from workflows.analysis_run import AnalysisKind, AnalysisRun, AnalysisView, MetricRun
from workflows.analysis_spec import Metric
from workflows.verdict import Measurement, MeasurementPhase

NOW = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
S, F, INC, E = (MeasurementPhase.SUCCESSFUL, MeasurementPhase.FAILED, MeasurementPhase.INCONCLUSIVE,
              MeasurementPhase.ERROR)
# What an inconclusive success-rate analysis at step 2 makes the workflow say at its gate.
SUCCESS_RATE_INCONCLUSIVE = ("step 2: analysis inconclusive: metric success-rate inconclusive: value no data "
                             "(no requests in 1m); 1 inconclusive, inconclusiveLimit 0")


def metric(name: str, **fields: Any) -> Metric:
    spec: dict[str, Any] = {"name": name, "interval": "30s", "successCondition": "result >= 0.99",
                            "failureCondition": "result < 0.95", "provider": {"prometheus": {"query": "up"}}}
    spec.update(fields)
    return Metric.model_validate(spec)


def measured(*points: tuple[MeasurementPhase, float | None] | tuple[MeasurementPhase, float | None, str]
             ) -> list[Measurement]:
    """Measurements 30 s apart ending a minute before NOW: ``(phase, value[, message])``."""
    start = NOW - timedelta(seconds=60 + 30 * len(points))
    return [Measurement(phase=point[0], value=point[1], message=point[2] if len(point) > 2 else "",
                        at=start + timedelta(seconds=30 * i)) for i, point in enumerate(points)]


def view(kind: AnalysisKind, step: int | None, metrics: Sequence[tuple[Metric, list[Measurement]]],
         template: str = "health", stopped: bool = False) -> AnalysisView:
    run = AnalysisRun(kind=kind, step=step, started_at=NOW - timedelta(minutes=10), stopped=stopped,
                      metrics=[MetricRun(template=template, metric=spec, measurements=points)
                               for spec, points in metrics])
    return AnalysisView.of(run)


def inconclusive_step() -> AnalysisView:
    """Step 2 (index 1) waits for a human: success-rate had no data; latency was fine so far."""
    return view(AnalysisKind.STEP, 1, [
        (metric("success-rate", count=3), measured((S, 0.995), (INC, None, "no requests in 1m"))),
        (metric("latency-p99", successCondition="result <= 300", failureCondition=None, count=3),
         measured((S, 120.0), (S, 135.5))),
    ])


def failed_step() -> AnalysisView:
    """Step 2 (index 1) rolled the release back: one success rate under the failure condition."""
    return view(AnalysisKind.STEP, 1, [(metric("success-rate"), measured((F, 0.93)))])


def background_with_error() -> AnalysisView:
    """A background analysis from step 1, still running, whose provider has just stopped answering."""
    return view(AnalysisKind.BACKGROUND, 0, [
        (metric("error-rate", successCondition="result <= 0.05", failureCondition=None),
         measured((S, 0.01), (S, 0.02), (E, None, "connection refused by prometheus:9090"))),
    ], template="errors")
