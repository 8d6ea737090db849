"""Verdicts: Argo's limits and counts over measurement sequences, and when the next one is due."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from workflows.analysis_spec import Metric
from workflows.verdict import (
    Measurement,
    MeasurementPhase,
    MetricPhase,
    MetricStatus,
    combine,
    metric_status,
    next_due,
)

S, F, INC, E = (MeasurementPhase.SUCCESSFUL, MeasurementPhase.FAILED, MeasurementPhase.INCONCLUSIVE,
              MeasurementPhase.ERROR)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def metric(**fields: Any) -> Metric:
    spec: dict[str, Any] = {"name": "success-rate", "interval": "30s", "successCondition": "result >= 0.99",
                            "failureCondition": "result < 0.95", "provider": {"prometheus": {"query": "up"}}}
    spec.update(fields)
    return Metric.model_validate(spec)


def run(phases: Sequence[MeasurementPhase], value: float = 0.97) -> list[Measurement]:
    return [Measurement(phase=phase, value=None if phase in (E,) else value, message=f"m{i}")
            for i, phase in enumerate(phases)]


def test_failure_limit_tolerates_that_many_failures() -> None:
    m = metric(failureLimit=1, count=5)
    assert metric_status(m, run([F])).phase is MetricPhase.RUNNING
    status = metric_status(m, run([F, S, F]))
    assert status.phase is MetricPhase.FAILED
    assert status.reason == ("metric success-rate failed: value 0.97 (failureCondition result < 0.95); "
                             "2 failed, failureLimit 1")
    assert metric_status(metric(), run([F])).phase is MetricPhase.FAILED


def test_a_false_success_condition_alone_names_it_in_the_reason() -> None:
    status = metric_status(metric(failureCondition=None), run([F], value=0.5))
    assert status.phase is MetricPhase.FAILED
    assert "value 0.5 (successCondition result >= 0.99 was false)" in status.reason


def test_inconclusive_limit_then_inconclusive() -> None:
    m = metric(inconclusiveLimit=1)
    assert metric_status(m, run([INC])).phase is MetricPhase.RUNNING
    assert metric_status(m, run([INC, INC])).phase is MetricPhase.INCONCLUSIVE


def test_consecutive_errors_beyond_the_limit_are_error_but_interrupted_runs_are_not() -> None:
    m = metric()  # consecutiveErrorLimit 4
    assert metric_status(m, run([E] * 4)).phase is MetricPhase.RUNNING
    status = metric_status(m, run([E] * 5))
    assert status.phase is MetricPhase.ERROR and "5 errors in a row" in status.reason
    assert metric_status(m, run([E, E, E, E, S, E, E, E, E])).phase is MetricPhase.RUNNING


def test_count_of_answers_ends_the_metric_and_errors_do_not_use_it_up() -> None:
    m = metric(count=3, failureLimit=1, inconclusiveLimit=1)
    assert metric_status(m, run([S, E, S])).phase is MetricPhase.RUNNING
    done = metric_status(m, run([S, E, F, INC]))
    assert done.phase is MetricPhase.SUCCESSFUL and done.measured == 4


def test_a_metric_that_never_succeeded_is_inconclusive_not_a_silent_pass() -> None:
    m = metric(count=2, failureLimit=5, inconclusiveLimit=5)
    assert metric_status(m, run([INC, F])).phase is MetricPhase.INCONCLUSIVE
    assert metric_status(metric(), [], stopped=True).phase is MetricPhase.INCONCLUSIVE
    assert metric_status(metric(), run([S, S]), stopped=True).phase is MetricPhase.SUCCESSFUL


def test_no_count_runs_until_stopped() -> None:
    assert metric_status(metric(), run([S] * 50)).phase is MetricPhase.RUNNING


def test_a_late_measurement_after_a_terminal_status_changes_nothing() -> None:
    m = metric(count=1)
    assert metric_status(m, run([S, F, F])).phase is MetricPhase.SUCCESSFUL
    assert metric_status(metric(), run([F, S])).failed == 1


phases = st.lists(st.sampled_from(list(MeasurementPhase)), max_size=30)
limits = st.integers(min_value=0, max_value=5)


@given(phases, limits, limits, limits, st.none() | st.integers(min_value=1, max_value=10))
def test_for_any_sequence_the_verdict_respects_the_limits(
        sequence: list[MeasurementPhase], failure: int, inconclusive: int, errors: int, count: int | None) -> None:
    m = metric(failureLimit=failure, inconclusiveLimit=inconclusive, consecutiveErrorLimit=errors, count=count)
    status = metric_status(m, run(sequence))
    used = sequence[:status.measured]
    # The status counts only what it used, and uses all of a sequence unless it ended early.
    assert (status.failed, status.inconclusive) == (used.count(F), used.count(INC))
    if status.phase is MetricPhase.RUNNING:
        assert status.measured == len(sequence)
        assert status.failed <= failure and status.inconclusive <= inconclusive
        assert status.consecutive_errors <= errors
        assert count is None or len(sequence) - sequence.count(E) < count
    if status.phase is MetricPhase.FAILED:
        assert status.failed == failure + 1 and used[-1] is F
    if status.phase is MetricPhase.INCONCLUSIVE and used and used[-1] is INC:
        assert status.inconclusive == inconclusive + 1 or count is not None
    if status.phase is MetricPhase.ERROR:
        assert used[-(errors + 1):] == [E] * (errors + 1)
    if status.phase is MetricPhase.SUCCESSFUL:
        assert status.successful >= 1 and count is not None
        assert len(used) - used.count(E) == count
    # Terminal is final: more measurements never change a terminal status.
    if status.phase.terminal:
        assert metric_status(m, run([*sequence, F, INC, E, S])) == status


def status(name: str, phase: MetricPhase) -> MetricStatus:
    return MetricStatus(metric=name, phase=phase, reason=f"metric {name} {phase.value}")


def test_combined_verdict_failed_beats_inconclusive_beats_running() -> None:
    ok, run_, bad = MetricPhase.SUCCESSFUL, MetricPhase.RUNNING, MetricPhase.FAILED
    assert combine([status("a", ok), status("b", MetricPhase.ERROR), status("c", bad)]).reason == "metric c failed"
    errored = combine([status("a", ok), status("b", MetricPhase.ERROR), status("c", run_)])
    assert (errored.phase, errored.reason) == (MetricPhase.INCONCLUSIVE, "metric b error")
    assert combine([status("a", ok), status("b", run_)]).phase is MetricPhase.RUNNING
    assert combine([status("a", ok), status("b", ok)]).phase is MetricPhase.SUCCESSFUL


def test_next_measurement_is_due_after_the_initial_delay_then_every_interval() -> None:
    m = metric(initialDelay="1m", count=2)
    assert next_due(m, T0, []) == T0 + timedelta(minutes=1)
    first = Measurement(phase=S, value=1.0, at=T0 + timedelta(seconds=65))
    assert next_due(m, T0, [first]) == T0 + timedelta(seconds=95)
    assert next_due(m, T0, [first, first]) is None
    assert next_due(metric(), T0, run([S, S])) == T0 + timedelta(seconds=60)


def test_a_failed_baseline_comparison_gives_its_own_message_as_the_reason() -> None:
    compared = Metric.model_validate({
        "name": "errors-vs-stable", "interval": "1m",
        "provider": {"baseline": {"check": "request-error-rate", "workload": "web", "namespace": "shop"}}})
    message = "canary worse than stable: median 0.052 vs 0.001 (+5100%), p=0.0003, 30 vs 30 samples"
    failed = Measurement(value=51.0, phase=MeasurementPhase.FAILED, message=message)
    assert metric_status(compared, [failed]).reason == (
        f"metric errors-vs-stable failed: value 51 ({message}); 1 failed, failureLimit 0")
