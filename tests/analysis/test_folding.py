"""Folding old measurements away never changes a verdict (property-based).

A background analysis without ``count`` measures for as long as the release runs; the run keeps
its newest measurements and folds the older ones into a tally. Whatever the sequence and the
limits, the status read from the folded run is the one read from every measurement.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from workflows import analysis_run
from workflows.analysis_run import MetricRun
from workflows.analysis_spec import Metric
from workflows.verdict import Measurement, MeasurementPhase, metric_status, next_due

START = datetime(2026, 1, 1, tzinfo=UTC)

measurements = st.lists(
    st.builds(Measurement, value=st.one_of(st.none(), st.floats(0, 1)), phase=st.sampled_from(MeasurementPhase)),
    max_size=40)


def _metric(failure_limit: int, inconclusive_limit: int, error_limit: int, count: int | None) -> Metric:
    return Metric.model_validate({
        "name": "m", "interval": "1m", "count": count, "failureLimit": failure_limit,
        "inconclusiveLimit": inconclusive_limit, "consecutiveErrorLimit": error_limit,
        "successCondition": "result >= 0.5", "provider": {"prometheus": {"query": "q"}}})


@settings(max_examples=150)
@given(sequence=measurements, failure_limit=st.integers(0, 6), inconclusive_limit=st.integers(0, 6),
       error_limit=st.integers(0, 6), count=st.one_of(st.none(), st.integers(1, 30)), kept=st.integers(1, 5),
       stopped=st.booleans())
def test_a_folded_run_reads_the_same_status_as_all_its_measurements(
        sequence: list[Measurement], failure_limit: int, inconclusive_limit: int,
        error_limit: int, count: int | None, kept: int, stopped: bool) -> None:
    saved, analysis_run.KEPT_MEASUREMENTS = analysis_run.KEPT_MEASUREMENTS, kept
    try:
        _check(sequence, _metric(failure_limit, inconclusive_limit, error_limit, count), kept, stopped)
    finally:
        analysis_run.KEPT_MEASUREMENTS = saved


def _check(sequence: list[Measurement], metric: Metric, kept: int, stopped: bool) -> None:
    run = MetricRun(template="t", metric=metric)
    taken: list[Measurement] = []
    for index, measurement in enumerate(sequence):
        if run.status().phase.terminal:
            break  # the workflow measures no more once the metric has its verdict
        stamped = measurement.model_copy(update={"at": START + timedelta(minutes=index)})
        run.record(stamped)
        taken.append(stamped)
        assert len(run.measurements) <= kept
        assert run.status(stopped=stopped) == metric_status(metric, taken, stopped=stopped)
        assert run.due(START) == next_due(metric, START, taken)
