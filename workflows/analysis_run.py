"""An analysis as it runs: the rendered metrics of one step or background analysis, and what they measured.

Kept in the job's state (so it survives continue-as-new and is answered by the details query)
and pure: the workflow appends measurements as the ``measure_metric`` activity returns them,
and every verdict is recomputed from them by :mod:`workflows.verdict`, never stored apart.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from workflows.analysis_spec import Analysis, AnalysisRef, Metric, rendered_metrics
from workflows.verdict import (
    Measurement,
    MetricPhase,
    MetricStatus,
    Tally,
    Verdict,
    combine,
    metric_status,
    next_due,
)

# Measurements a client sees per metric (the newest).
SHOWN_MEASUREMENTS = 10
# Measurements a run keeps per metric; older ones are folded into a tally, so a background
# analysis of a week-long release stays a few kilobytes in the job's state.
KEPT_MEASUREMENTS = 50


class AnalysisKind(StrEnum):
    """Where an analysis runs: in a step (the release waits for it) or beside the steps."""

    STEP = "step"
    BACKGROUND = "background"
    # mode: blueGreen: before the switch (green in preview), and after it (blue still up).
    PRE_PROMOTION = "prePromotion"
    POST_PROMOTION = "postPromotion"


class MetricRun(BaseModel):
    """One metric of a running analysis: its rendered spec and its measurements so far."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    template: str
    metric: Metric
    measurements: list[Measurement] = Field(default_factory=list)
    earlier: Tally = Field(default_factory=Tally)  # measurements folded away, oldest first

    def record(self, measurement: Measurement) -> None:
        """Add a measurement, folding the oldest into the tally beyond ``KEPT_MEASUREMENTS``."""
        self.measurements.append(measurement)
        extra = len(self.measurements) - KEPT_MEASUREMENTS
        if extra > 0:
            self.earlier = self.earlier.add(self.measurements[:extra])
            del self.measurements[:extra]

    def status(self, *, stopped: bool = False) -> MetricStatus:
        """Where the metric stands (see :func:`workflows.verdict.metric_status`)."""
        return metric_status(self.metric, self.measurements, stopped=stopped, earlier=self.earlier)

    def due(self, started_at: datetime) -> datetime | None:
        """When its next measurement is due; None once it has its verdict."""
        return next_due(self.metric, started_at, self.measurements, earlier=self.earlier)


class AnalysisRun(BaseModel):
    """One analysis run; ``stopped`` once the step or release it belongs to ended."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    kind: AnalysisKind
    step: int | None = None  # the step it belongs to (0-based), or where a background one started
    started_at: datetime
    metrics: list[MetricRun]
    stopped: bool = False

    @classmethod
    def start(cls, analysis: Analysis | None, ref: AnalysisRef, kind: AnalysisKind, step: int | None,
              now: datetime) -> AnalysisRun:
        """A run of the templates ``ref`` names, with their args rendered (validated with the spec)."""
        assert analysis is not None, "an analysis reference was validated against the job's templates"
        metrics = [MetricRun(template=item.template_name, metric=metric)
                   for item in ref.templates
                   for metric in rendered_metrics(analysis.template(item.template_name), ref.args)]
        return cls(kind=kind, step=step, started_at=now, metrics=metrics)

    def statuses(self) -> list[MetricStatus]:
        """Every metric's status; a stopped run's running metrics are judged as ended."""
        return [metric.status(stopped=self.stopped) for metric in self.metrics]

    def verdict(self) -> Verdict:
        """The run's verdict: failed as soon as one metric fails, else inconclusive as soon as one is."""
        return combine(self.statuses())

    @property
    def decided(self) -> bool:
        """True once the verdict can no longer change."""
        return self.verdict().phase is not MetricPhase.RUNNING


class MetricView(BaseModel):
    """A metric as clients show it: its status and its latest measurements, newest last."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    template: str
    status: MetricStatus
    measurements: list[Measurement]


class AnalysisView(BaseModel):
    """An analysis run as the details query answers it."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    kind: AnalysisKind
    step: int | None
    started_at: datetime = Field(alias="startedAt")
    phase: MetricPhase
    reason: str
    metrics: list[MetricView]

    @classmethod
    def of(cls, run: AnalysisRun) -> AnalysisView:
        """What clients see of ``run``."""
        verdict = run.verdict()
        return cls(kind=run.kind, step=run.step, started_at=run.started_at, phase=verdict.phase,
                   reason=verdict.reason,
                   metrics=[MetricView(template=metric.template, status=metric.status(stopped=run.stopped),
                                       measurements=metric.measurements[-SHOWN_MEASUREMENTS:])
                            for metric in run.metrics])
