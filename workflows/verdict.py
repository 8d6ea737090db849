"""Verdicts from measurements: Argo Rollouts' limits, applied by the workflow without I/O.

A metric's measurements arrive from the ``measure_metric`` activity one at a time; after each,
the workflow asks :func:`metric_status` where the metric stands and :func:`combine` where the
analysis stands. Both are pure functions of the spec and the measurements so far, so a replayed
workflow reaches the same verdict, and the same one is shown by every client.

The rules (Argo's, plus one guard):

- ``failureLimit``: that many failed measurements are tolerated; one more fails the metric.
- ``inconclusiveLimit``: likewise for inconclusive ones (no data is inconclusive, never failed).
- ``consecutiveErrorLimit``: that many errors in a row (provider unreachable, bad answer) are
  retried; one more makes the metric ``error``, which the job treats as inconclusive. Errors do
  not use up ``count``: a retried measurement is not an answer.
- ``count``: answers needed; None measures until the step or release ends (``stopped``).
- Guard: a metric that ends without one successful measurement is inconclusive, never
  successful, so an analysis that never saw data cannot promote a release in silence.

The first terminal status is final: measurements after it (a late activity result) change nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import Field

from workflows.analysis_spec import Metric
from workflows.fields import StrictModel as _Strict


class MeasurementPhase(StrEnum):
    """What one measurement said."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


class Measurement(_Strict):
    """One measurement: the value (None when there was no data) and its judgement."""

    value: float | None = None
    phase: MeasurementPhase
    message: str = Field(default="", max_length=1_000)
    at: datetime | None = None


class MetricPhase(StrEnum):
    """Where a metric (or a whole analysis) stands."""

    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        """True once no further measurement can change the phase."""
        return self is not MetricPhase.RUNNING


class MetricStatus(_Strict):
    """A metric's phase, why, and the counts behind it."""

    metric: str
    phase: MetricPhase
    reason: str = ""
    last_value: float | None = Field(default=None, alias="lastValue")
    measured: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = Field(default=0, alias="consecutiveErrors")


class Verdict(_Strict):
    """The combined phase of several metrics, with a one-line reason naming the deciding metric."""

    phase: MetricPhase
    reason: str = ""


def format_value(value: float | None) -> str:
    """A measured value as people read it: ``0.93``, ``250``, ``no data``."""
    if value is None or math.isnan(value):
        return "no data"
    return f"{value:.6g}"


def _condition(metric: Metric, phase: MeasurementPhase) -> str:
    if phase is MeasurementPhase.FAILED:
        if metric.failure_condition is not None:
            return f"failureCondition {metric.failure_condition}"
        return f"successCondition {metric.success_condition} was false"
    if phase is MeasurementPhase.SUCCESSFUL and metric.success_condition is not None:
        return f"successCondition {metric.success_condition}"
    if phase is MeasurementPhase.INCONCLUSIVE:
        return "no condition decided"
    return ""


class Tally(_Strict):
    """Measurements folded away: their counts, the errors in a row at their end, the last value answered.

    A metric measured across a long release (a background analysis without ``count``) keeps
    only its newest measurements; the verdict goes on from this summary of the older ones,
    which never decided anything (a metric stops being measured once it has its verdict).
    """

    total: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = Field(default=0, alias="consecutiveErrors")
    last_value: float | None = Field(default=None, alias="lastValue")

    def add(self, measurements: Sequence[Measurement]) -> Tally:
        """This tally with ``measurements`` (oldest first) folded in."""
        counts = {MeasurementPhase.SUCCESSFUL: self.successful, MeasurementPhase.FAILED: self.failed,
                  MeasurementPhase.INCONCLUSIVE: self.inconclusive, MeasurementPhase.ERROR: self.errors}
        consecutive, last_value = self.consecutive_errors, self.last_value
        for measurement in measurements:
            counts[measurement.phase] += 1
            if measurement.phase is MeasurementPhase.ERROR:
                consecutive += 1
            else:
                consecutive, last_value = 0, measurement.value
        return Tally(total=self.total + len(measurements), successful=counts[MeasurementPhase.SUCCESSFUL],
                     failed=counts[MeasurementPhase.FAILED], inconclusive=counts[MeasurementPhase.INCONCLUSIVE],
                     errors=counts[MeasurementPhase.ERROR], consecutive_errors=consecutive, last_value=last_value)


def metric_status(metric: Metric, measurements: Sequence[Measurement], *, stopped: bool = False,
                  earlier: Tally | None = None) -> MetricStatus:
    """Where ``metric`` stands after ``measurements`` (oldest first); ``stopped``: no more will come.

    ``earlier``: the folded measurements that came before ``measurements``.
    """
    earlier = earlier or Tally()
    counts = {MeasurementPhase.SUCCESSFUL: earlier.successful, MeasurementPhase.FAILED: earlier.failed,
              MeasurementPhase.INCONCLUSIVE: earlier.inconclusive, MeasurementPhase.ERROR: earlier.errors}
    consecutive = earlier.consecutive_errors
    last_value = earlier.last_value

    def status(phase: MetricPhase, reason: str = "") -> MetricStatus:
        return MetricStatus(
            metric=metric.name, phase=phase, reason=reason, last_value=last_value,
            measured=earlier.total + len(measurements) if phase is MetricPhase.RUNNING else seen,
            successful=counts[MeasurementPhase.SUCCESSFUL], failed=counts[MeasurementPhase.FAILED],
            inconclusive=counts[MeasurementPhase.INCONCLUSIVE], errors=counts[MeasurementPhase.ERROR],
            consecutive_errors=consecutive)

    seen = earlier.total
    for measurement in measurements:
        seen += 1
        counts[measurement.phase] += 1
        if measurement.phase is MeasurementPhase.ERROR:
            consecutive += 1
        else:
            consecutive = 0
            last_value = measurement.value
        value = format_value(measurement.value)
        if counts[MeasurementPhase.FAILED] > metric.failure_limit:
            # A baseline comparison has no condition: its measurement says who was worse and by how much.
            why = (measurement.message if metric.provider.baseline is not None
                   else _condition(metric, measurement.phase))
            return status(MetricPhase.FAILED,
                          f"metric {metric.name} failed: value {value} ({why}); "
                          f"{counts[MeasurementPhase.FAILED]} failed, failureLimit {metric.failure_limit}")
        if counts[MeasurementPhase.INCONCLUSIVE] > metric.inconclusive_limit:
            detail = measurement.message or _condition(metric, measurement.phase)
            return status(MetricPhase.INCONCLUSIVE,
                          f"metric {metric.name} inconclusive: value {value} ({detail}); "
                          f"{counts[MeasurementPhase.INCONCLUSIVE]} inconclusive, "
                          f"inconclusiveLimit {metric.inconclusive_limit}")
        if consecutive > metric.consecutive_error_limit:
            return status(MetricPhase.ERROR,
                          f"metric {metric.name} error: {consecutive} errors in a row, consecutiveErrorLimit "
                          f"{metric.consecutive_error_limit}; last: {measurement.message or 'no message'}")
        answers = seen - counts[MeasurementPhase.ERROR]
        if metric.count is not None and answers >= metric.count:
            return _ended(metric, counts, status, f"{answers} of count {metric.count} measured")
    if stopped:
        return _ended(metric, counts, status, "stopped")
    return status(MetricPhase.RUNNING, "")


def _ended(metric: Metric, counts: Mapping[MeasurementPhase, int],
           status: Callable[[MetricPhase, str], MetricStatus], how: str) -> MetricStatus:
    if counts[MeasurementPhase.SUCCESSFUL] == 0:
        return status(MetricPhase.INCONCLUSIVE,
                      f"metric {metric.name} inconclusive: no successful measurement ({how})")
    return status(MetricPhase.SUCCESSFUL,
                  f"metric {metric.name} successful: {counts[MeasurementPhase.SUCCESSFUL]} successful ({how})")


_ORDER = (MetricPhase.FAILED, MetricPhase.ERROR, MetricPhase.INCONCLUSIVE)


def combine(statuses: Sequence[MetricStatus]) -> Verdict:
    """One verdict over several metrics: any failed fails; else any inconclusive or error is inconclusive.

    All successful is successful; anything else is still running. The reason is the deciding
    metric's own (the first failed, else the first error or inconclusive one).
    """
    if not statuses:
        return Verdict(phase=MetricPhase.RUNNING, reason="no metrics")
    for phase in _ORDER:
        for item in statuses:
            if item.phase is phase:
                verdict = MetricPhase.FAILED if phase is MetricPhase.FAILED else MetricPhase.INCONCLUSIVE
                return Verdict(phase=verdict, reason=item.reason)
    if all(item.phase is MetricPhase.SUCCESSFUL for item in statuses):
        names = ", ".join(item.metric for item in statuses)
        return Verdict(phase=MetricPhase.SUCCESSFUL, reason=f"all metrics successful: {names}")
    running = ", ".join(item.metric for item in statuses if item.phase is MetricPhase.RUNNING)
    return Verdict(phase=MetricPhase.RUNNING, reason=f"measuring {running}")


def next_due(metric: Metric, started_at: datetime, measurements: Sequence[Measurement],
             earlier: Tally | None = None) -> datetime | None:
    """When the next measurement is due: ``initialDelay`` after the start, then every ``interval``.

    None once the metric is terminal (a count reached, a limit passed): nothing is due. A
    measurement without a time is taken to have happened when it was due.
    """
    if metric_status(metric, measurements, earlier=earlier).phase.terminal:
        return None
    due = started_at + (metric.initial_delay or timedelta(0))
    for measurement in measurements:
        taken = measurement.at if measurement.at is not None else due
        due = taken + metric.interval
    return due
