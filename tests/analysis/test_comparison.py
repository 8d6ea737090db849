"""Canary against baseline statistics: the U test is right, and the verdict fails only a worse canary."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workflows.comparison import MAX_RELATIVE_DIFFERENCE, compare, ranks, relative_difference, u_test_greater
from workflows.verdict import MeasurementPhase


def exact_p_greater(first: list[float], second: list[float]) -> float:
    """P(U >= u observed) over every split of the pooled values: the exact one-sided p-value."""
    pooled = [*first, *second]
    pooled_ranks = ranks(pooled)
    n1 = len(first)
    observed = sum(pooled_ranks[:n1])
    splits = list(itertools.combinations(range(len(pooled)), n1))
    at_least = sum(1 for split in splits if sum(pooled_ranks[i] for i in split) >= observed - 1e-9)
    return at_least / len(splits)


def test_ties_share_the_average_rank() -> None:
    assert ranks([3.0, 1.0, 3.0, 2.0, 3.0]) == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert ranks([]) == []


@pytest.mark.parametrize(("first", "second"), [
    ([5.1, 6.2, 7.3, 5.9, 6.8, 7.7, 6.1, 5.5], [4.9, 5.0, 6.0, 4.1, 5.2, 4.4, 5.8, 4.7]),
    ([1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0], [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0]),  # many ties
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5]),
])
def test_the_normal_approximation_is_close_to_the_exact_p_value(first: list[float], second: list[float]) -> None:
    # Samples mostly tied at one value (error rates of 0) are where any normal approximation is
    # coarse; there the maxDifference guard, not the p-value alone, keeps a canary from failing.
    approximate = u_test_greater(first, second).p_value
    assert approximate == pytest.approx(exact_p_greater(first, second), abs=0.02)


def test_u_counts_pairs_where_the_first_is_greater() -> None:
    test = u_test_greater([3.0, 4.0], [1.0, 2.0, 3.0])
    assert test.u == 5.5  # 3 > 1, 2 (2); 3 == 3 (0.5); 4 > all three (3)
    assert test.probability_greater == pytest.approx(5.5 / 6)
    assert u_test_greater([1.0] * 5, [1.0] * 7).p_value == 1.0  # no spread: nothing to tell apart


def test_relative_difference_of_a_zero_baseline_is_capped_not_infinite() -> None:
    assert relative_difference(0.052, 0.001) == pytest.approx(51.0)
    assert relative_difference(0.0, 0.0) == 0.0
    assert relative_difference(0.05, 0.0) == MAX_RELATIVE_DIFFERENCE
    assert relative_difference(-1.0, 0.0) == -MAX_RELATIVE_DIFFERENCE
    assert relative_difference(90.0, 100.0) == pytest.approx(-0.1)


def test_a_canary_with_fifty_times_the_errors_fails_with_a_message_saying_by_how_much() -> None:
    stable = [0.001, 0.0, 0.002, 0.001, 0.001, 0.0, 0.001, 0.002, 0.001, 0.001] * 3
    canary = [0.052, 0.049, 0.055, 0.05, 0.052, 0.06, 0.045, 0.052, 0.053, 0.051] * 3
    verdict = compare(canary, stable)
    assert verdict.phase is MeasurementPhase.FAILED
    assert verdict.relative_difference == pytest.approx(51.0)
    assert verdict.message.startswith("canary worse than stable: median 0.052 vs 0.001 (+5100%), p=")
    assert verdict.message.endswith(", 30 vs 30 samples")
    assert verdict.p_value is not None and verdict.p_value < 1e-6
    assert verdict.probability_worse == 1.0


def test_too_few_samples_is_inconclusive_never_failed() -> None:
    verdict = compare([0.5] * 9, [0.0] * 30, min_samples=10)
    assert verdict.phase is MeasurementPhase.INCONCLUSIVE
    assert verdict.message == "too few samples to compare: canary 9, stable 30 (minSamples 10)"
    assert verdict.relative_difference is None
    assert compare([], [], min_samples=3).phase is MeasurementPhase.INCONCLUSIVE


def test_a_significant_but_small_difference_passes_within_max_difference() -> None:
    stable = [100.0 + i % 5 for i in range(40)]
    canary = [105.0 + i % 5 for i in range(40)]  # about 5 % slower, clearly significant
    verdict = compare(canary, stable, max_difference=0.1)
    assert verdict.p_value is not None and verdict.p_value < 0.001
    assert verdict.phase is MeasurementPhase.SUCCESSFUL
    assert verdict.message.startswith("canary within maxDifference 10% of stable: median 107 vs 102 (+4.9%)")
    assert compare(canary, stable, max_difference=0.01).phase is MeasurementPhase.FAILED


def test_a_large_but_insignificant_difference_passes() -> None:
    # Two clusters on each side; the canary has one more slow sample, which moves its median a lot.
    stable = [10.0, 11.0, 12.0, 13.0, 14.0, 200.0, 201.0, 202.0, 203.0, 204.0]
    canary = [10.5, 11.5, 12.5, 13.5, 200.5, 201.5, 202.5, 203.5, 204.5, 205.5]
    verdict = compare(canary, stable)
    assert verdict.relative_difference is not None and verdict.relative_difference > 0.8
    assert verdict.phase is MeasurementPhase.SUCCESSFUL
    assert verdict.message.startswith("canary not significantly worse than stable (alpha 0.05)")


def test_when_lower_is_worse_a_lower_canary_fails_and_a_higher_one_passes() -> None:
    stable = [0.99 + (i % 3) * 0.001 for i in range(20)]
    lower = [x - 0.2 for x in stable]
    assert compare(lower, stable, higher_is_worse=False).phase is MeasurementPhase.FAILED
    assert compare(lower, stable, higher_is_worse=True).phase is MeasurementPhase.SUCCESSFUL
    higher = compare([x + 0.2 for x in stable], stable, higher_is_worse=False)
    assert higher.phase is MeasurementPhase.SUCCESSFUL and higher.message.startswith("canary no worse")


samples = st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=10, max_size=60)


@given(samples, st.randoms(use_true_random=False))
def test_the_same_values_on_both_sides_never_fail(values: list[float], rng: random.Random) -> None:
    shuffled = list(values)
    rng.shuffle(shuffled)
    verdict = compare(shuffled, values, max_difference=0.0)
    assert verdict.phase is MeasurementPhase.SUCCESSFUL
    assert verdict.p_value is not None and verdict.p_value >= 0.5


@given(samples, samples)
def test_p_is_a_probability_and_the_two_one_sided_tests_never_both_reject(
        first: list[float], second: list[float]) -> None:
    greater, less = u_test_greater(first, second), u_test_greater(second, first)
    assert 0.0 <= greater.p_value <= 1.0 and 0.0 <= less.p_value <= 1.0
    # Both sides cannot be significant at once.
    assert not (greater.p_value < 0.05 and less.p_value < 0.05)
    assert greater.probability_greater + less.probability_greater == pytest.approx(1.0)


@given(st.lists(st.floats(min_value=1, max_value=100, allow_nan=False), min_size=10, max_size=40),
       st.booleans())
def test_a_canary_far_in_the_worse_direction_fails_and_in_the_better_one_passes(
        stable: list[float], higher_is_worse: bool) -> None:
    far = [x + 1_000 for x in stable] if higher_is_worse else [x / 1_000 for x in stable]
    assert compare(far, stable, higher_is_worse=higher_is_worse).phase is MeasurementPhase.FAILED
    better = [x / 1_000 for x in stable] if higher_is_worse else [x + 1_000 for x in stable]
    assert compare(better, stable, higher_is_worse=higher_is_worse).phase is MeasurementPhase.SUCCESSFUL


@given(samples, samples)
def test_no_verdict_without_min_samples_is_ever_failed(canary: list[float], stable: list[float]) -> None:
    verdict = compare(canary[:9], stable, min_samples=10)
    assert verdict.phase is MeasurementPhase.INCONCLUSIVE
    difference = compare(canary, stable).relative_difference
    assert difference is not None and math.isfinite(difference)
