"""How analysis results read, for ``canaryctl get`` and the web page alike.

One place decides the words (a run's title, a metric's counts, how a measurement without data
or with an error reads), so the terminal and the browser never tell a user two different
stories about the same verdict. Values go through :func:`workflows.verdict.format_value`, the
function the verdicts' own reasons use, so ``last 0.93`` here matches ``value 0.93`` there.
"""

from __future__ import annotations

from collections.abc import Sequence

from workflows.analysis_run import AnalysisKind, AnalysisView, MetricView
from workflows.verdict import Measurement, MeasurementPhase, MetricPhase, MetricStatus, format_value

# Measurements listed per metric in text; the query already keeps only the newest few.
RECENT_SHOWN = 5


def printable(text: str) -> str:
    r"""``text`` with every character outside printable ASCII escaped (``\x1b``, ``\n``, ``\xe9``).

    Reasons and messages come from users' specs and from metric providers: in a terminal an
    escape sequence in them could rewrite the screen, and a newline could forge a line of output.
    """
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in text)


def run_title(run: AnalysisView) -> str:
    """``step 2`` or ``background (from step 1)``: which analysis this is, steps counted from 1 as shown."""
    if run.kind is AnalysisKind.STEP:
        return f"step {run.step + 1}" if run.step is not None else "step"
    if run.kind in (AnalysisKind.PRE_PROMOTION, AnalysisKind.POST_PROMOTION):
        return "pre-promotion" if run.kind is AnalysisKind.PRE_PROMOTION else "post-promotion"
    return "background" + (f" (from step {run.step + 1})" if run.step is not None else "")


def measurement_text(measurement: Measurement) -> str:
    """One measurement in a few characters: ``0.99``, ``0.93 (failed)``, ``no data``, ``error``.

    The phase is said only when it is not a success, so a healthy list reads as plain numbers and
    the odd one stands out (no data is always inconclusive: it goes without saying); an error is
    a failed query, not a value, so it says ``error``.
    """
    if measurement.phase is MeasurementPhase.ERROR:
        return "error"
    value = format_value(measurement.value)
    if measurement.phase is MeasurementPhase.SUCCESSFUL or (
            measurement.value is None and measurement.phase is MeasurementPhase.INCONCLUSIVE):
        return value
    return f"{value} ({measurement.phase.value})"


def counts(status: MetricStatus) -> str:
    """``2 successful, 1 failed / 3 measured``: what the verdict was built from (zeros left out)."""
    parts = [f"{count} {label}" for count, label in (
        (status.successful, "successful"), (status.failed, "failed"),
        (status.inconclusive, "inconclusive"), (status.errors, "errors" if status.errors > 1 else "error"))
        if count]
    measured = f"{status.measured} measured"
    return f"{', '.join(parts)} / {measured}" if parts else measured


def last_error(metric: MetricView) -> str | None:
    """Why the newest measurement failed to answer (provider unreachable...), while that is the news."""
    if metric.measurements and metric.measurements[-1].phase is MeasurementPhase.ERROR:
        return metric.measurements[-1].message or "no message"
    return None


def metric_reason(run: AnalysisView, metric: MetricView) -> str | None:
    """The metric's own reason when it adds something to the run's (which repeats the deciding metric's)."""
    reason = metric.status.reason
    return reason if reason and reason != run.reason else None


def render_analyses(runs: Sequence[AnalysisView]) -> list[str]:
    """The ``Analysis:`` lines of ``canaryctl get``: each run, then each metric with its recent values."""
    lines: list[str] = []
    for run in runs:
        lines.append(f"  {run_title(run)}  {run.phase.value}  {printable(run.reason)}".rstrip())
        width = max((len(printable(metric.status.metric)) for metric in run.metrics), default=0)
        for metric in run.metrics:
            status = metric.status
            lines.append(f"    {printable(status.metric).ljust(width)}  {status.phase.value:<12}  "
                         f"last {format_value(status.last_value)}  {counts(status)}")
            recent = [measurement_text(m) for m in metric.measurements[-RECENT_SHOWN:]]
            if recent:
                lines.append(f"    {''.ljust(width)}  recent: {', '.join(recent)}")
            if (why := metric_reason(run, metric)) is not None:
                lines.append(f"    {''.ljust(width)}  {printable(why)}")
            if (error := last_error(metric)) is not None and status.phase is MetricPhase.RUNNING:
                lines.append(f"    {''.ljust(width)}  last error: {printable(error)}")
    return lines
