"""Canary against baseline: is the canary's series worse than the stable pods' over the same window?

A fixed threshold ("p99 below 500 ms") fails a canary that is as slow as the stable version
under today's load, and passes one that doubled the latency of a fast service. Comparing the
canary with the stable pods at the same time removes what both share (load, time of day,
a slow dependency) and leaves what the new version changed.

The test is the one-sided Mann-Whitney U test: it asks whether a canary sample tends to be
worse than a stable one, without assuming a distribution (error rates and latencies are
skewed, bounded and often tied at 0). The p-value uses the normal approximation with the
tie correction and a continuity correction, fine from about ten samples a side, which is
why ``min_samples`` exists. Significance alone would fail a canary 0.1 % slower once there
are enough samples, so the effect must also exceed ``max_difference``: the relative
difference of the medians, in the worse direction. The canary fails only when both hold.

Verdicts: fewer than ``min_samples`` on either side is inconclusive (no traffic is never a
failure); significant and beyond ``max_difference`` is failed; anything else successful.

Pure: no I/O, standard library only; ``activities.metrics.baseline`` feeds it Prometheus'
range queries.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from workflows.verdict import MeasurementPhase

# A relative difference over a stable median of 0 is infinite; the measured value (which
# travels as JSON, where infinity does not exist) is capped here, the message says why.
MAX_RELATIVE_DIFFERENCE = 1e6


@dataclass(frozen=True)
class UTest:
    """The one-sided Mann-Whitney U test of "the first sample tends to be greater"."""

    u: float
    z: float
    p_value: float
    # P(first > second) + P(first == second) / 2: the common-language effect size.
    probability_greater: float


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``, ties sharing the average of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        average = (start + end) / 2 + 1
        for position in range(start, end + 1):
            result[order[position]] = average
        start = end + 1
    return result


def u_test_greater(first: Sequence[float], second: Sequence[float]) -> UTest:
    """Test whether ``first`` tends to be greater than ``second`` (both non-empty).

    All values equal (no spread at all) gives p = 1: nothing to tell the samples apart.
    """
    n1, n2 = len(first), len(second)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    combined = [*first, *second]
    ranked = ranks(combined)
    u = sum(ranked[:n1]) - n1 * (n1 + 1) / 2
    n = n1 + n2
    ties = _tie_term(combined)
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    mean = n1 * n2 / 2
    if variance <= 0:
        return UTest(u=u, z=0.0, p_value=1.0, probability_greater=u / (n1 * n2))
    # Continuity correction toward the mean, as for any discrete statistic read off a normal curve.
    z = (u - mean - 0.5) / math.sqrt(variance)
    return UTest(u=u, z=z, p_value=0.5 * math.erfc(z / math.sqrt(2)), probability_greater=u / (n1 * n2))


def _tie_term(values: Sequence[float]) -> float:
    counts: dict[float, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return float(sum(t ** 3 - t for t in counts.values() if t > 1))


def relative_difference(canary: float, stable: float) -> float:
    """``(canary - stable) / |stable|``, 0 when both are 0, capped at ``MAX_RELATIVE_DIFFERENCE``."""
    if stable == 0:
        if canary == 0:
            return 0.0
        return math.copysign(MAX_RELATIVE_DIFFERENCE, canary)
    return max(-MAX_RELATIVE_DIFFERENCE, min(MAX_RELATIVE_DIFFERENCE, (canary - stable) / abs(stable)))


@dataclass(frozen=True)
class Comparison:
    """The verdict of one canary-against-baseline comparison, with the numbers behind it."""

    phase: MeasurementPhase
    message: str
    canary_samples: int
    stable_samples: int
    canary_median: float | None = None
    stable_median: float | None = None
    # (canary - stable) / |stable| of the medians: positive when the canary's is higher.
    relative_difference: float | None = None
    p_value: float | None = None
    # How often a canary sample is worse than a stable one (0.5: no tendency either way).
    probability_worse: float | None = None


def compare(canary: Sequence[float], stable: Sequence[float], *, higher_is_worse: bool = True,
            max_difference: float = 0.1, alpha: float = 0.05, min_samples: int = 10) -> Comparison:
    """Judge ``canary`` against ``stable`` samples of the same series (NaNs must be dropped before)."""
    counts = f"{len(canary)} vs {len(stable)} samples"
    if len(canary) < min_samples or len(stable) < min_samples:
        return Comparison(
            phase=MeasurementPhase.INCONCLUSIVE, canary_samples=len(canary), stable_samples=len(stable),
            message=f"too few samples to compare: canary {len(canary)}, stable {len(stable)} "
                    f"(minSamples {min_samples})")
    worse_side, better_side = (canary, stable) if higher_is_worse else (stable, canary)
    test = u_test_greater(worse_side, better_side)
    canary_median, stable_median = statistics.median(canary), statistics.median(stable)
    difference = relative_difference(canary_median, stable_median)
    worse_by = difference if higher_is_worse else -difference
    numbers = (f"median {_number(canary_median)} vs {_number(stable_median)} "
               f"({_percent(difference, stable_median)}), p={test.p_value:.2g}, {counts}")
    if test.p_value < alpha and worse_by > max_difference:
        phase, verdict = MeasurementPhase.FAILED, "canary worse than stable"
    else:
        phase = MeasurementPhase.SUCCESSFUL
        if worse_by <= 0:
            verdict = "canary no worse than stable"
        elif worse_by <= max_difference:
            verdict = f"canary within maxDifference {_number(max_difference * 100)}% of stable"
        else:
            verdict = f"canary not significantly worse than stable (alpha {alpha:g})"
    return Comparison(
        phase=phase, message=f"{verdict}: {numbers}", canary_samples=len(canary), stable_samples=len(stable),
        canary_median=canary_median, stable_median=stable_median, relative_difference=difference,
        p_value=test.p_value, probability_worse=test.probability_greater)


def _number(value: float) -> str:
    return f"{value:.3g}"


def _percent(difference: float, stable_median: float) -> str:
    if stable_median == 0 and difference != 0:
        return "stable median 0"
    percent = difference * 100
    return f"{percent:+.0f}%" if abs(percent) >= 10 else f"{percent:+.1f}%"
